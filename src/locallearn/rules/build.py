"""The one entry point that turns a rule name and options into a Rule."""

from __future__ import annotations

from typing import Any

from torch import nn

from locallearn.rules.base import RULES, Rule


def build_rule(
    name: str,
    network: nn.Sequential,
    input_shape: tuple[int, ...],
    classes: int,
    **options: Any,
) -> Rule:
    """Build rule ``name`` over ``network``. Options left at ``None`` keep the rule's
    defaults; an option the rule does not take is a UsageError."""
    entry = RULES.get(name)
    given = entry.given(options, "rule")
    return entry.build(network, input_shape=tuple(input_shape), classes=classes, **given)


def rule_infos() -> list[dict[str, str]]:
    return [
        {
            "name": e.name + (f" ({', '.join(e.aliases)})" if e.aliases else ""),
            "options": e.flags,
            "description": e.description,
            "paper": e.meta.get("paper", ""),
        }
        for e in RULES.entries()
    ]
