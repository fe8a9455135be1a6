"""Locally connected networks (LCNs): convolutions without weight sharing.

A locally connected layer has the receptive fields of a convolution (kernel, stride, padding)
but a separate filter at every output position, so it keeps *locality* and drops *weight
sharing* (the distinction studied by Lahoti et al., ICLR 2024, "Role of Locality and Weight
Sharing in Image-Based Tasks", and by the MNIST-1D shuffled-order experiment of Greydanus
2020). ``lcn1d`` and ``lcn2d`` mirror the conv nets of ``models/cnn.py`` layer for layer, so a
comparison with them changes one thing only: the sharing.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from locallearn.models.base import MODELS, output_shape


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class _LocallyConnected(nn.Module):
    """Shared parameter handling: ``weight`` is (positions, out, in * kernel volume)."""

    weight: nn.Parameter
    bias: nn.Parameter | None

    def _init_parameters(self, positions: int, out_channels: int, fan_in: int, bias: bool) -> None:
        if positions < 1:
            raise ValueError("the kernel does not fit the (padded) input: no output positions")
        self.weight = nn.Parameter(torch.empty(positions, out_channels, fan_in))
        self.bias = nn.Parameter(torch.empty(out_channels, positions)) if bias else None
        # The default init of nn.Conv (kaiming_uniform with a=sqrt(5)) is U(-1/sqrt(fan_in),
        # 1/sqrt(fan_in)) for weight and bias alike: each position gets the conv's init.
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def _apply_filters(self, patches: torch.Tensor) -> torch.Tensor:
        # patches: (B, P, F) -> (B, out, P); one matmul per position, batched over positions.
        out = torch.einsum("bpf,pof->bop", patches, self.weight)
        if self.bias is not None:
            out = out + self.bias
        return out


class LocallyConnected1d(_LocallyConnected):
    """Like ``nn.Conv1d`` (zero padding, no dilation/groups), one filter per output position.

    Input (B, in_channels, length) with ``length`` fixed at construction; output
    (B, out_channels, L_out), L_out = (length + 2 padding - kernel) // stride + 1.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        length: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.length = in_channels, out_channels, length
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.out_length = _out_size(length, kernel_size, stride, padding)
        self._init_parameters(self.out_length, out_channels, in_channels * kernel_size, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding:
            x = F.pad(x, (self.padding, self.padding))
        # (B, C, L_out, K) -> (B, L_out, C*K): the feature order (channel, tap) of conv weights.
        patches = x.unfold(2, self.kernel_size, self.stride).permute(0, 2, 1, 3)
        return self._apply_filters(patches.reshape(x.shape[0], self.out_length, -1))

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, length={self.length}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
        )


class LocallyConnected2d(_LocallyConnected):
    """Like ``nn.Conv2d`` (zero padding, no dilation/groups), one filter per output position.

    Input (B, in_channels, H, W) with (H, W) fixed at construction; output
    (B, out_channels, H_out, W_out).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        size: int | tuple[int, int],
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.size, self.kernel_size = _pair(size), _pair(kernel_size)
        self.stride, self.padding = _pair(stride), _pair(padding)
        self.out_size = tuple(
            _out_size(n, k, s, p)
            for n, k, s, p in zip(self.size, self.kernel_size, self.stride, self.padding)
        )
        positions = self.out_size[0] * self.out_size[1]
        fan_in = in_channels * self.kernel_size[0] * self.kernel_size[1]
        self._init_parameters(positions, out_channels, fan_in, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # F.unfold: (B, C*kh*kw, P) with positions in row-major order, features in the order
        # of a conv weight's (C, kh, kw) flattening.
        cols = F.unfold(x, self.kernel_size, padding=self.padding, stride=self.stride)
        out = self._apply_filters(cols.transpose(1, 2))
        return out.reshape(x.shape[0], self.out_channels, *self.out_size)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, size={self.size}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
        )


@MODELS.register(
    "lcn1d",
    description="locally connected twin of cnn1d: same kernels/strides/widths, no weight sharing",
    options=("width",),
    family="local",
    ranks=(2,),
)
def lcn1d(input_shape: tuple[int, ...], classes: int, width: int = 25) -> nn.Sequential:
    # cnn1d's recipe (Greydanus 2020: k5 s2 p1, then k3 s2 p1 twice, ReLU, linear) with every
    # Conv1d replaced by a LocallyConnected1d of the same geometry.
    channels, length = input_shape
    units: list[nn.Module] = []
    for kernel in (5, 3, 3):
        layer = LocallyConnected1d(channels, width, length, kernel, stride=2, padding=1)
        units.append(nn.Sequential(layer, nn.ReLU()))
        channels, length = width, layer.out_length
    return nn.Sequential(*units, nn.Sequential(nn.Flatten(), nn.Linear(channels * length, classes)))


@MODELS.register(
    "lcn2d",
    description="small 2-D locally connected net: --depth LC3x3(stride 2)-ReLU units, linear",
    options=("width", "depth"),
    family="local",
    ranks=(3,),
)
def lcn2d(
    input_shape: tuple[int, ...], classes: int, width: int = 16, depth: int = 3
) -> nn.Sequential:
    # The 2-D counterpart of cnn1d (strided 3x3 layers instead of pooling, since pooling over
    # unshared filters mixes unrelated features). Each unit halves the map until it is 1x1.
    channels, height, width_px = input_shape
    units: list[nn.Module] = []
    size = (height, width_px)
    for _ in range(depth):
        stride = 2 if min(size) > 1 else 1
        layer = LocallyConnected2d(channels, width, size, 3, stride=stride, padding=1)
        units.append(nn.Sequential(layer, nn.ReLU()))
        channels, size = width, layer.out_size
    features = math.prod(output_shape(nn.Sequential(*units), tuple(input_shape)))
    return nn.Sequential(*units, nn.Sequential(nn.Flatten(), nn.Linear(features, classes)))
