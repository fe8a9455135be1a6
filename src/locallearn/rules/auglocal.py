"""AugLocal: local learning with auxiliary networks built from later layers.

Ma, Wu, Si & Tan, "Scaling Supervised Local Learning with Augmented Auxiliary Networks",
ICLR 2024, sec. 3 (augmented auxiliary networks, pyramidal depth). The exact index, depth,
rounding and stride rules below were checked against the authors' reference code
(github.com/ChenxiangMA/AugLocal: ``networks/auxiliary_nets.py`` ``unifSamp``,
``networks/resnet.py`` ``aux_depth_list``, ``train.py``); where our generalisation departs
from it, the docstring says so.

Unit layout. The network's units are numbered 0..N-1 (ResNet-32: N = 16, ResNet-110: 55).
Block k (0-based, of K) ends at unit l_k; every block but the last trains through its own
auxiliary network, the last through the network's classifier.

Default cut (the paper's configuration). Every unit is a local layer, but the reference
code trains the last d layers together with the classifier (``train.py`` subtracts d from
the number of local modules): K = N - d blocks, block k = unit k for k < K - 1, and the last
block holds the last d + 1 units. With ``--blocks K`` (or ``--cuts``) the library's usual
cut is used instead (balanced activation bytes), so K = 4 or 8 also saves memory; with
K = N every unit is its own block.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from locallearn.errors import UsageError
from locallearn.models.base import output_shape
from locallearn.models.layers import Replicable
from locallearn.recipe import Recipe
from locallearn.rules.base import RULES, HeadLoss, Rule, Stage, TaskLoss
from locallearn.rules.cutting import resolve_cuts, slice_blocks

DEFAULT_AUX_DEPTH = 3  # reference README: 2 (ResNet-32) and 3 (ResNet-110); run.sh: 1/3/5
DEFAULT_PYRAMID = 0.5  # the paper's decay coefficient (reference run.sh, --pyramid_coeff)

_CONVS = (nn.Conv1d, nn.Conv2d)
_NORM = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d}
_POOL = {nn.Conv1d: nn.AdaptiveAvgPool1d, nn.Conv2d: nn.AdaptiveAvgPool2d}


# -- the two formulas ------------------------------------------------------------------------
def sampled_indices(layer: int, layers: int, depth: int) -> list[int]:
    """Units whose fresh copies form the auxiliary network of the block ending at unit
    ``layer`` (0-based) of ``layers`` units, for an auxiliary depth ``depth``.

    Uniform sampling of the later layers: round(l + (N - l - 1) / d * i), i = 1..d, so the
    last pick is always the last layer N - 1. When no more than d later layers remain, all
    of them are taken (l+1..N-1). ``round`` is Python's (halves to even), as in the
    reference code: with N = 16, l = 2, d = 2 the first pick is round(8.5) = 8.
    """
    if not 0 <= layer < layers:
        raise ValueError(f"layer {layer} is not in 0..{layers - 1}")
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    later = layers - 1 - layer
    if depth >= later:
        return list(range(layer + 1, layers))
    return [round(layer + later / depth * i) for i in range(1, depth + 1)]


def pyramid_depths(blocks: int, depth: int, coefficient: float) -> list[int]:
    """Auxiliary depth of each local block 0..K-2 (the last block has no auxiliary net).

    d_i = max(1, round(d * (1 - i*c/(K-2)) + i*c/(K-2))): d for the first block, shrinking
    linearly to d*(1-c) + c at block K-2. ``round`` halves to even (reference code). For
    K <= 2 the only local block is i = 0, where the formula gives d whatever the (then zero)
    denominator, so d is returned; c = 0 turns the pyramid off.
    """
    if blocks < 2:
        return []
    if blocks == 2:
        return [depth]
    step = coefficient / (blocks - 2)
    return [max(1, round(depth * (1 - i * step) + i * step)) for i in range(blocks - 1)]


# -- fresh layers ----------------------------------------------------------------------------
def _first_conv(unit: nn.Module) -> nn.Conv1d | nn.Conv2d | None:
    return next((m for m in unit.modules() if isinstance(m, _CONVS)), None)


def replicable(unit: nn.Module) -> bool:
    """Whether AugLocal can build a fresh layer of ``unit``'s kind (it has a conv layer)."""
    return isinstance(unit, Replicable) or _first_conv(unit) is not None


def fresh_layer(unit: nn.Module, in_channels: int, stride: int) -> nn.Module:
    """A new, randomly initialised layer of ``unit``'s kind and width.

    Units of our image models (``models.layers``) build their own (a BasicBlock, a
    conv-BN-ReLU). Any other conv unit (``cnn``, ``cnn1d``) gives a conv-BN-ReLU with the
    width and kernel of its first conv: the auxiliary layers of the paper are conv-BN-ReLU
    layers or residual blocks, never pooling or classifier layers.
    """
    if isinstance(unit, Replicable):
        return unit.fresh(in_channels, stride)
    conv = _first_conv(unit)
    if conv is None:
        raise ValueError(f"unit {type(unit).__name__} has no conv layer to replicate")
    kind = type(conv)
    kernel = conv.kernel_size[0]
    return nn.Sequential(
        kind(
            in_channels, conv.out_channels, kernel, stride=stride, padding=kernel // 2, bias=False
        ),
        _NORM[kind](conv.out_channels),
        nn.ReLU(),
    )


def _width(unit: nn.Module) -> int:
    if isinstance(unit, Replicable):
        return unit.width
    conv = _first_conv(unit)
    assert conv is not None
    return conv.out_channels


def auxiliary_network(
    units: Sequence[nn.Module],
    indices: Sequence[int],
    feature_shape: tuple[int, ...],
    classes: int,
) -> nn.Sequential:
    """Fresh copies of ``units[j]`` for j in ``indices``, then global average pool and a
    linear classifier, for block outputs of ``feature_shape`` (C, ...) (sec. 3.1).

    Strides follow the reference code: each doubling of width from one auxiliary layer to
    the next owes one stride-2 downsampling, paid by the first layers that can (a jump of
    16 -> 64 channels gives stride 2 to this layer and the next). With one auxiliary layer
    or none, a BatchNorm1d precedes the linear layer, as in the reference code.
    """
    channels = feature_shape[0]
    spatial = len(feature_shape) - 1
    if spatial not in (1, 2):
        raise UsageError(
            f"auglocal needs feature maps (C, L) or (C, H, W); a block outputs {feature_shape}"
        )
    layers: list[nn.Module] = []
    owed = 0
    for j in indices:
        width = _width(units[j])
        if width < channels:
            raise UsageError(
                f"auglocal: unit {j} is narrower ({width} channels) than the block output "
                f"({channels}); it cannot be an auxiliary layer of this block"
            )
        owed += int(math.floor(math.log2(width / channels)))
        stride = 2 if owed >= 1 else 1
        owed -= stride - 1
        layers.append(fresh_layer(units[j], channels, stride))
        channels = width
    pool = nn.AdaptiveAvgPool2d(1) if spatial == 2 else nn.AdaptiveAvgPool1d(1)
    layers += [pool, nn.Flatten()]
    if len(indices) <= 1:
        layers.append(nn.BatchNorm1d(channels))
    layers.append(nn.Linear(channels, classes))
    return nn.Sequential(*layers)


# -- the rule --------------------------------------------------------------------------------
class AugLocal(Rule):
    r"""Block :math:`k < K` minimises :math:`\mathrm{CE}(a_k(f_k(\bar h_{k-1})), y)` where the
    auxiliary network :math:`a_k` is made of fresh, randomly initialised layers of the kinds
    and widths of :math:`d_k` uniformly sampled later layers (``sampled_indices``), with the
    pyramidal depth :math:`d_k` (``pyramid_depths``), then global pooling and a linear
    classifier. The last block trains with the network's own classifier. Gradients stop at
    every block boundary; the auxiliary networks are discarded at test time.

    ``aux_indices[k]`` and ``aux_depths[k]`` record what block k's auxiliary net was built
    from (the last block has none).
    """

    def __init__(
        self,
        network: nn.Sequential,
        stages: list[Stage],
        cuts: list[int],
        aux_indices: list[list[int]],
        aux_depths: list[int],
    ) -> None:
        super().__init__(network, stages, cuts)
        self.aux_indices = aux_indices
        self.aux_depths = aux_depths


def feature_units(network: nn.Sequential) -> int:
    """N: the number of units that can be sampled. Trailing units without a conv layer (the
    classifier unit of ``cnn``) are the output layer, not layers to replicate; a conv-less
    unit before a conv unit is a model AugLocal cannot serve."""
    flags = [replicable(u) for u in network]
    n = len(flags)
    while n and not flags[n - 1]:
        n -= 1
    if n == 0 or not all(flags[:n]):
        bad = flags.index(False) if n else 0
        raise UsageError(
            f"auglocal builds auxiliary networks from later conv layers, but unit {bad} "
            f"({type(network[bad]).__name__}) has no conv layer; use a conv model (resnet20, "
            "resnet32, resnet56, resnet110, vgg11, vgg13, cnn, cnn1d)"
        )
    return n


@RULES.register(
    "auglocal",
    description="AugLocal: auxiliary net of each block = fresh copies of uniformly sampled "
    "later layers, pyramidal depth",
    options=("blocks", "cuts", "aux_depth", "pyramid"),
    paper="Ma, Wu, Si & Tan, ICLR 2024",
    recipe=Recipe(
        source="shared with BP, as in the paper (local and end-to-end networks trained with one "
        "recipe): the global default"
    ),
    families=("conv",),
)
def build_auglocal(
    network: nn.Sequential,
    *,
    input_shape: tuple[int, ...],
    classes: int,
    blocks: int | None = None,
    cuts: Sequence[int] | None = None,
    aux_depth: int = DEFAULT_AUX_DEPTH,
    pyramid: float = DEFAULT_PYRAMID,
) -> AugLocal:
    if aux_depth < 1:
        raise UsageError(f"--aux-depth must be at least 1, got {aux_depth}")
    if not 0 <= pyramid <= 1:
        raise UsageError(
            f"--pyramid must be in [0, 1] (0: no pyramid, 1: depth 1 at the last local "
            f"block), got {pyramid}"
        )
    n_feat = feature_units(network)
    units = list(network)
    if blocks is None and cuts is None:
        # The paper's configuration: units 0..K-2 local, the last d + 1 units with the head.
        blocks = max(min(2, len(units)), len(units) - aux_depth)
        cuts = list(range(1, blocks))
    elif blocks is None:
        blocks = len(cuts) + 1
    cut_points = resolve_cuts(network, input_shape, blocks, cuts)
    parts = slice_blocks(network, cut_points)
    depths = pyramid_depths(blocks, aux_depth, pyramid)
    bounds = [*cut_points, len(units)]
    stages, indices_per_block, shape = [], [], tuple(input_shape)
    for k, block in enumerate(parts):
        shape = output_shape(block, shape)
        if k == len(parts) - 1:
            stages.append(Stage(block, TaskLoss()))
            continue
        last_unit = bounds[k] - 1
        picks = sampled_indices(last_unit, n_feat, depths[k]) if last_unit < n_feat - 1 else []
        aux = auxiliary_network(units, picks, shape, classes)
        stages.append(Stage(block, HeadLoss(aux)))
        indices_per_block.append(picks)
    return AugLocal(network, stages, cut_points, indices_per_block, depths)
