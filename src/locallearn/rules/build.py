"""The one entry point that turns a rule name and options into a Rule."""

from __future__ import annotations

from typing import Any

from torch import nn

from locallearn.models.base import MODELS
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


def rule_applies(rule: str, model: str) -> bool:
    """Whether rule ``rule`` can train registered model ``model``.

    A rule's ``families`` meta lists the model families it suits (None: every family); a
    model's ``family`` meta is one of dense, conv, recurrent, local, ...
    """
    families = RULES.get(rule).meta.get("families")
    return families is None or MODELS.get(model).meta.get("family") in families


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
