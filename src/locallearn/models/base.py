"""The model registry and the one builder every caller goes through."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from locallearn.errors import UsageError, unknown_choice
from locallearn.registry import Registry

# Builders: (input_shape, classes, **options) -> nn.Sequential of units.
# Entry meta: ``ranks`` = the input ranks (len of input_shape) the model accepts;
# ``family`` = dense | conv | recurrent | local | ... (which rules apply: see rule_applies).
MODELS: Registry[nn.Sequential] = Registry("model")


# Hidden activations a model's ``--activation`` chooses from. tanh is the setting of the DRTP
# paper (Frenkel et al. 2021) and the bounded range that tpSGD's zero-mean targets P_i y* can
# be reached in; relu is every model's default.
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}


def activation(name: str) -> nn.Module:
    """A new activation module for ``--activation name`` (a UsageError for an unknown name)."""
    if name not in ACTIVATIONS:
        raise unknown_choice("--activation", name, ACTIVATIONS)
    return ACTIVATIONS[name]()


def build_model(
    name: str, input_shape: tuple[int, ...], classes: int, **options: Any
) -> nn.Sequential:
    """Build registered model ``name`` for inputs of ``input_shape`` (no batch dim).

    Options left at ``None`` keep the entry's defaults; an option the model does not take is
    a UsageError naming the ones it does.
    """
    entry = MODELS.get(name)
    given = entry.given(options, "model")
    ranks = entry.meta.get("ranks")
    if ranks is not None and len(input_shape) not in ranks:
        raise UsageError(
            f"model {entry.name!r} takes inputs of rank {' or '.join(map(str, ranks))} "
            f"(channels first, no batch), got shape {'x'.join(map(str, input_shape))}"
            + (f"; {entry.meta['input_hint']}" if entry.meta.get("input_hint") else "")
        )
    for key, value in given.items():
        if isinstance(value, int) and value < 1:
            raise UsageError(f"--{key} must be a positive integer, got {value}")
    return entry.build(tuple(input_shape), classes, **given)


def model_infos() -> list[dict[str, str]]:
    return [
        {
            "name": e.name,
            "options": e.flags,
            "description": e.description,
        }
        for e in MODELS.entries()
    ]


def output_shape(module: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape (no batch) of ``module``'s output, found by running two zero samples."""
    was_training = module.training
    module.eval()
    with torch.no_grad():
        out = module(torch.zeros(2, *input_shape))
    module.train(was_training)
    return tuple(out.shape[1:])
