"""Fully connected networks."""

from __future__ import annotations

import math

from torch import nn

from locallearn.errors import unknown_choice
from locallearn.models.base import MODELS

# Hidden activations of ``mlp``. tanh is the setting of the DRTP paper (Frenkel et al. 2021)
# and the bounded range that tpSGD's targets P_i y* (zero-mean) can be reached in.
MLP_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


@MODELS.register(
    "mlp",
    description="fully connected net: --depth hidden layers of --width units (ReLU or tanh)",
    options=("width", "depth", "activation"),
    family="dense",
)
def mlp(
    input_shape: tuple[int, ...],
    classes: int,
    width: int = 100,
    depth: int = 2,
    activation: str = "relu",
) -> nn.Sequential:
    # Defaults follow the MNIST-1D reference MLP (two hidden layers of 100 ReLU units).
    if activation not in MLP_ACTIVATIONS:
        raise unknown_choice("--activation", activation, MLP_ACTIVATIONS)
    act = MLP_ACTIVATIONS[activation]
    units: list[nn.Module] = []
    fan_in = math.prod(input_shape)
    for i in range(depth):
        layers: list[nn.Module] = [nn.Flatten()] if i == 0 else []
        units.append(nn.Sequential(*layers, nn.Linear(fan_in, width), act()))
        fan_in = width
    head: list[nn.Module] = [nn.Flatten()] if depth == 0 else []
    units.append(nn.Sequential(*head, nn.Linear(fan_in, classes)))
    return nn.Sequential(*units)
