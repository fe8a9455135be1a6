"""Rule registry: one file per learning rule."""

from locallearn.rules import bp, greedy  # noqa: F401  (registration)
from locallearn.rules.base import RULES, HeadLoss, Rule, Signal, Stage, TaskLoss
from locallearn.rules.build import build_rule, rule_applies, rule_infos

__all__ = [
    "RULES",
    "HeadLoss",
    "Rule",
    "Signal",
    "Stage",
    "TaskLoss",
    "build_rule",
    "rule_applies",
    "rule_infos",
]
