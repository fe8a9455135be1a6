"""The three one-hidden-layer networks compared on the DSD task (Lahoti et al., ICLR 2024).

Inputs are (k, d): k patches of dimension d (``data/dsd.py``). Following the paper's setting
(sec. 4): the CNN applies the same filters to every patch and sums over patches; the LCN has a
separate set of filters per patch and sums over patches; the FCN is dense over the whole
input. Each has ``width`` filters per patch (the FCN ``width * k`` hidden units, so the three
have the same number of hidden activations), ReLU, and a linear read-out to the class scores.

Departure from the paper: its networks output one real number whose sign is the label and are
analysed under equivariant gradient methods; ours end in ``classes`` logits (2 for DSD) so that
they train with the library's cross-entropy and every local rule. The CNN's hidden layer is
one Linear(d, width) applied to every patch; the LCN's a LocallyConnected1d over the
flattened input with kernel = stride = d: one filter bank per patch.
"""

from __future__ import annotations

import torch
from torch import nn

from locallearn.models.base import MODELS
from locallearn.models.lcn import LocallyConnected1d


class SumPositions(nn.Module):
    """Sum over the patch dimension ``dim``: the paper's sum over patches."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=self.dim)


def _patches(input_shape: tuple[int, ...]) -> tuple[int, int]:
    k, d = input_shape
    return k, d


def _as_signal(k: int, d: int) -> list[nn.Module]:
    # (B, k, d) -> (B, 1, k*d): patches laid end to end, so kernel = stride = d sees one patch.
    return [nn.Flatten(), nn.Unflatten(1, (1, k * d))]


@MODELS.register(
    "dsd-cnn",
    description="DSD one-hidden-layer CNN: --width filters shared by all k patches, ReLU, "
    "sum over patches, linear",
    options=("width",),
    family="conv",
    ranks=(2,),
)
def dsd_cnn(input_shape: tuple[int, ...], classes: int, width: int = 4) -> nn.Sequential:
    _patches(input_shape)
    # One nn.Linear(d, width) on the last dim of (B, k, d) is the same filter bank on every
    # patch (a conv with kernel = stride = d, without Conv1d's per-shape setup cost).
    hidden = nn.Sequential(nn.Linear(input_shape[1], width), nn.ReLU())  # (B, k, width)
    return nn.Sequential(hidden, nn.Sequential(SumPositions(1), nn.Linear(width, classes)))


@MODELS.register(
    "dsd-lcn",
    description="DSD one-hidden-layer LCN: --width filters per patch (not shared), ReLU, "
    "sum over patches, linear",
    options=("width",),
    family="local",
    ranks=(2,),
)
def dsd_lcn(input_shape: tuple[int, ...], classes: int, width: int = 4) -> nn.Sequential:
    k, d = _patches(input_shape)
    layer = LocallyConnected1d(1, width, k * d, d, stride=d)
    hidden = nn.Sequential(*_as_signal(k, d), layer, nn.ReLU())
    return nn.Sequential(hidden, nn.Sequential(SumPositions(2), nn.Linear(width, classes)))


@MODELS.register(
    "dsd-fcn",
    description="DSD one-hidden-layer FCN: dense layer of --width * k ReLU units, linear",
    options=("width",),
    family="dense",
    ranks=(2,),
)
def dsd_fcn(input_shape: tuple[int, ...], classes: int, width: int = 4) -> nn.Sequential:
    k, d = _patches(input_shape)
    hidden = nn.Sequential(nn.Flatten(), nn.Linear(k * d, width * k), nn.ReLU())
    return nn.Sequential(hidden, nn.Sequential(nn.Linear(width * k, classes)))
