"""Auxiliary classifier heads for local rules.

``mlp`` follows DGL's default auxiliary net (Belilovsky et al. 2020, reference code): average
pool the feature map to 2 (per spatial dim), flatten to n features, three Linear(n, n)-BN-ReLU
layers, then Linear(n, classes). ``conv`` is DGL's CNN auxiliary net: two conv3x3-BN-ReLU at
the block's width, pool to 2, linear. ``linear`` is pool + linear. ``auto`` picks ``mlp`` for
feature maps (as DGL does) and ``linear`` for flat features, where a 3-layer MLP head of the
block's width would hold more activations than the block itself and erase the memory saving.
"""

from __future__ import annotations

import math

from torch import nn

from locallearn.errors import UsageError, unknown_choice

HEADS = ("auto", "linear", "mlp", "conv")

_POOL = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d}
_CONV = {1: nn.Conv1d, 2: nn.Conv2d}
_NORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}


def make_head(kind: str, feature_shape: tuple[int, ...], classes: int) -> nn.Sequential:
    """A head mapping features of ``feature_shape`` (no batch) to ``classes`` scores."""
    if kind not in HEADS:
        raise unknown_choice("head", kind, HEADS)
    spatial = len(feature_shape) - 1
    if spatial > 2:
        raise UsageError(f"no auxiliary head for features of shape {feature_shape}")
    if kind == "auto":
        kind = "mlp" if spatial else "linear"
    if kind == "conv" and not spatial:
        raise UsageError(
            f"--head conv needs feature maps, but this block outputs flat features of shape "
            f"{feature_shape}; use --head linear or --head mlp"
        )
    layers: list[nn.Module] = []
    channels = feature_shape[0]
    if kind == "conv":
        conv, norm = _CONV[spatial], _NORM[spatial]
        for _ in range(2):
            layers += [
                conv(channels, channels, 3, padding=1, bias=False),
                norm(channels),
                nn.ReLU(),
            ]
    if spatial:
        layers += [_POOL[spatial](2), nn.Flatten()]
        features = channels * 2**spatial
    else:
        features = math.prod(feature_shape)
    if kind == "mlp":
        for _ in range(3):
            layers += [nn.Linear(features, features), nn.BatchNorm1d(features), nn.ReLU()]
    layers.append(nn.Linear(features, classes))
    return nn.Sequential(*layers)
