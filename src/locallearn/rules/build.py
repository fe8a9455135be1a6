"""The one entry point that turns a rule name and options into a Rule."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from torch import nn

from locallearn.errors import UsageError
from locallearn.models.base import MODELS
from locallearn.rules.base import RULES, Rule


def build_rule(
    name: str,
    network: nn.Sequential,
    input_shape: tuple[int, ...],
    classes: int,
    *,
    input_stats: tuple[Sequence[float], Sequence[float]] | None = None,
    task: str = "classification",
    **options: Any,
) -> Rule:
    """Build rule ``name`` over ``network``. Options left at ``None`` keep the rule's
    defaults; an option the rule does not take is a UsageError.

    ``input_stats`` = the dataset's per-channel (mean, std), handed to rules registered with
    ``input_stats=True`` (a reconstruction loss needs the raw input); others ignore it.
    ``task`` = the dataset's task; a rule that does not list it in its ``tasks`` meta is a
    UsageError, and rules that list more than classification are handed it.
    """
    entry = RULES.get(name)
    check_task(entry.name, task)
    given = entry.given(options, "rule")
    if given.get("cuts") is not None and given.get("blocks") is None:
        given["blocks"] = len(given["cuts"]) + 1  # --cuts 2,4 alone means K = 3
    if entry.meta.get("input_stats") and input_stats is not None:
        given["input_stats"] = input_stats
    if tuple(rule_tasks(entry.name)) != ("classification",):
        given["task"] = task
    try:
        return entry.build(network, input_shape=tuple(input_shape), classes=classes, **given)
    except UsageError as err:
        if str(err).startswith("--blocks "):  # maybe a K the user never gave: say so
            check_default_blocks(entry.name, given, len(network))
        raise


def check_default_blocks(name: str, options: dict[str, Any], units: int) -> None:
    """A rule's default K larger than the network (of ``units`` units): say so, rather than
    blame a --blocks the user never gave. ``options`` are the rule's given options."""
    if options.get("blocks") is not None or options.get("cuts") is not None:
        return
    entry = RULES.get(name)
    param = inspect.signature(entry.build).parameters.get("blocks")
    default = param.default if param is not None else None
    if isinstance(default, int) and default > units:
        raise UsageError(
            f"rule {entry.name} cuts {default} blocks by default, but this network has only "
            f"{units} units; give --blocks K with K between 1 and {units}, or a deeper model"
        )


def rule_tasks(name: str) -> tuple[str, ...]:
    """The dataset tasks rule ``name`` trains on (classification unless its meta says)."""
    return tuple(RULES.get(name).meta.get("tasks", ("classification",)))


def check_task(name: str, task: str) -> None:
    """A UsageError naming the rules that can, when rule ``name`` cannot train on ``task``."""
    if task in rule_tasks(name):
        return
    able = [r for r in RULES.names() if task in rule_tasks(r)]
    raise UsageError(
        f"rule {name!r} does not support {task} (its signal needs class labels); the rules "
        f"that train on a {task} dataset are: {', '.join(able)}"
    )


def rule_applies(rule: str, model: str) -> bool:
    """Whether rule ``rule`` can train registered model ``model``.

    A rule's ``families`` meta lists the model families it suits (None: every family); a
    model's ``family`` meta is one of dense, conv, recurrent, local, ... A rule's ``ranks``
    meta, where set, must share an input rank with the model's ``ranks``.
    """
    meta, model_meta = RULES.get(rule).meta, MODELS.get(model).meta
    # A rule's ``models`` meta, where set, names the registered models it trains (fwdgrad:
    # the plain layer stacks its estimator handles).
    if meta.get("models") is not None and MODELS.canonical(model) not in meta["models"]:
        return False
    families = meta.get("families")
    if families is not None and model_meta.get("family") not in families:
        return False
    # A rule's ``ranks`` meta: the input ranks it handles (InfoPro reconstructs images).
    ranks, model_ranks = meta.get("ranks"), model_meta.get("ranks")
    return ranks is None or model_ranks is None or bool(set(ranks) & set(model_ranks))


def rule_infos() -> list[dict[str, str]]:
    from locallearn.recipe import Recipe

    return [
        {
            "name": e.name + (f" ({', '.join(e.aliases)})" if e.aliases else ""),
            "options": e.flags,
            "description": e.description,
            "paper": e.meta.get("paper", ""),
            "recipe": (e.meta.get("recipe") or Recipe()).text(),
            "recipe_source": (e.meta.get("recipe") or Recipe()).source or "-",
        }
        for e in RULES.entries()
    ]
