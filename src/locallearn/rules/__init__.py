"""Rule registry: one file per learning rule."""

from locallearn.rules import (  # noqa: F401  (registration)
    auglocal,
    bp,
    dfa,
    drtp,
    fa,
    ff,
    forwardgnn,
    fwdgrad,
    gbnn,
    greedy,
    infopro,
    man,
    monoforward,
    noprop,
    tpsgd,
)
from locallearn.rules.base import RULES, HeadLoss, Rule, Signal, Stage, TaskLoss, supervised_loss
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
    "supervised_loss",
]
