"""Units shared by the CIFAR-style image models (ResNet, VGG).

Every unit here can build a *fresh* layer of its own kind and width: ``unit.fresh(in_channels,
stride)`` returns a newly initialised module that maps ``in_channels`` to ``unit.width``
channels. Rules that grow auxiliary networks out of later layers (AugLocal, Ma et al. 2024,
sec. 3.2) use it; the models themselves know nothing about any rule.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from locallearn.models.base import activation as act


@runtime_checkable
class Replicable(Protocol):
    """A unit that can build a new, randomly initialised layer of its kind and width."""

    width: int

    def fresh(self, in_channels: int, stride: int = 1) -> nn.Module: ...


def he_conv(in_channels: int, width: int, stride: int = 1) -> nn.Conv2d:
    """conv3x3 without bias (BN follows), He-normal initialised as in He et al. (2016) sec. 3.4."""
    conv = nn.Conv2d(in_channels, width, 3, stride=stride, padding=1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


class ConvUnit(nn.Sequential):
    """conv3x3 - BN - ReLU (or ``activation``), optionally followed by a 2x2 max-pool (VGG)."""

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int = 1,
        pool: bool = False,
        activation: str = "relu",
    ) -> None:
        layers: list[nn.Module] = [
            he_conv(in_channels, width, stride),
            nn.BatchNorm2d(width),
            act(activation),
        ]
        if pool:
            layers.append(nn.MaxPool2d(2))
        super().__init__(*layers)
        self.width = width
        self.activation = activation

    def fresh(self, in_channels: int, stride: int = 1) -> ConvUnit:
        # The fresh layer downsamples by stride, never by pooling: AugLocal's recipe.
        return ConvUnit(in_channels, self.width, stride, activation=self.activation)


class BasicBlock(nn.Module):
    """He et al. (2016) BasicBlock: two conv3x3-BN, identity shortcut, ReLU after the sum.

    Where the block changes width or resolution the shortcut is *option A* of sec. 4.2: the
    input is subsampled by the stride and zero-padded in channels, so it adds no parameter.
    That is the variant of the paper's CIFAR table (ResNet-20/32/56/110 = 0.27/0.46/0.85/1.7M
    parameters); option B (1x1 projection) would change those counts.
    """

    def __init__(
        self, in_channels: int, width: int, stride: int = 1, activation: str = "relu"
    ) -> None:
        super().__init__()
        if width < in_channels:
            raise ValueError(
                f"an option-A shortcut cannot narrow {in_channels} to {width} channels"
            )
        self.width = width
        self.stride = stride
        self.pad = width - in_channels
        self.conv1 = he_conv(in_channels, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = he_conv(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.activation = activation
        self.act1, self.act2 = act(activation), act(activation)

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            # Zero channels split on both sides, as in the paper's option A.
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))

    def fresh(self, in_channels: int, stride: int = 1) -> BasicBlock:
        return BasicBlock(in_channels, self.width, stride, self.activation)


class Classifier(nn.Sequential):
    """Global average pool, flatten, linear: the network's output layer."""

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes))


class WithClassifier(nn.Sequential):
    """A feature unit followed by the classifier, as ONE unit.

    Merging the output layer into the last feature unit gives the unit counts of the local
    learning papers (ResNet-32: 16 = stem + 15 blocks, ResNet-110: 55), where the last block
    trains together with the real classifier. ``fresh`` replicates the feature part only.
    """

    def __init__(self, unit: nn.Module, classifier: nn.Module) -> None:
        super().__init__(unit, classifier)
        self.width = unit.width

    def fresh(self, in_channels: int, stride: int = 1) -> nn.Module:
        return self[0].fresh(in_channels, stride)
