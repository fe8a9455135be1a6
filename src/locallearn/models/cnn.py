"""Convolutional networks: the MNIST-1D reference CNN and a small 2-D CNN."""

from __future__ import annotations

import math

from torch import nn

from locallearn.models.base import MODELS, output_shape
from locallearn.models.base import activation as act


@MODELS.register(
    "cnn1d",
    description="MNIST-1D reference CNN: 3 strided Conv1d (k5/k3/k3, stride 2) + linear",
    options=("width", "activation"),
    family="conv",
    ranks=(2,),
)
def cnn1d(
    input_shape: tuple[int, ...], classes: int, width: int = 25, activation: str = "relu"
) -> nn.Sequential:
    # Greydanus (2020), MNIST-1D: Conv1d(1,25,5,s2,p1), Conv1d(25,25,3,s2,p1) x2, ReLU after
    # each, then Linear(125, 10) for length-40 inputs. ``width`` is the channel count;
    # --activation tanh replaces the ReLUs (DRTP and tpSGD on conv nets, as in their papers).
    channels = input_shape[0]
    convs = nn.Sequential(
        nn.Sequential(nn.Conv1d(channels, width, 5, stride=2, padding=1), act(activation)),
        nn.Sequential(nn.Conv1d(width, width, 3, stride=2, padding=1), act(activation)),
        nn.Sequential(nn.Conv1d(width, width, 3, stride=2, padding=1), act(activation)),
    )
    features = math.prod(output_shape(convs, input_shape))
    return nn.Sequential(*convs, nn.Sequential(nn.Flatten(), nn.Linear(features, classes)))


@MODELS.register(
    "cnn",
    description="small 2-D CNN: --depth conv3x3-BN-ReLU (or tanh) units (width doubles and "
    "2x2 max-pool every 2nd unit), global pool, linear",
    options=("width", "depth", "activation"),
    family="conv",
    ranks=(3,),
)
def cnn(
    input_shape: tuple[int, ...],
    classes: int,
    width: int = 32,
    depth: int = 4,
    activation: str = "relu",
) -> nn.Sequential:
    channels, height, _ = input_shape
    units: list[nn.Module] = []
    size = height
    for i in range(depth):
        out = width * 2 ** (i // 2)
        layers: list[nn.Module] = [
            nn.Conv2d(channels, out, 3, padding=1, bias=False),
            nn.BatchNorm2d(out),
            act(activation),
        ]
        # Pool after every second unit while the map is still larger than 2x2 (8x8 inputs
        # and 32x32 inputs both keep a spatial map to the end).
        if i % 2 == 1 and size > 2:
            layers.append(nn.MaxPool2d(2))
            size //= 2
        units.append(nn.Sequential(*layers))
        channels = out
    units.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes)))
    return nn.Sequential(*units)
