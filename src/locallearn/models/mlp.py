"""Fully connected networks."""

from __future__ import annotations

import math

from torch import nn

from locallearn.models.base import MODELS


@MODELS.register(
    "mlp",
    description="fully connected ReLU net: --depth hidden layers of --width units",
    options=("width", "depth"),
    family="dense",
)
def mlp(
    input_shape: tuple[int, ...], classes: int, width: int = 100, depth: int = 2
) -> nn.Sequential:
    # Defaults follow the MNIST-1D reference MLP (two hidden layers of 100 units).
    units: list[nn.Module] = []
    fan_in = math.prod(input_shape)
    for i in range(depth):
        layers: list[nn.Module] = [nn.Flatten()] if i == 0 else []
        units.append(nn.Sequential(*layers, nn.Linear(fan_in, width), nn.ReLU()))
        fan_in = width
    head: list[nn.Module] = [nn.Flatten()] if depth == 0 else []
    units.append(nn.Sequential(*head, nn.Linear(fan_in, classes)))
    return nn.Sequential(*units)
