"""Where to cut a network into K blocks.

The default cut balances *activation bytes*, not layer counts: a local rule's memory peak is
set by its largest block, so equalising the bytes each block saves for backward minimises
that peak. The cost of a unit is measured exactly, with the same meter that reports
act_bytes_peak, on a forward pass of one sample.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from locallearn.errors import UsageError
from locallearn.measure.memory import SavedTensorMeter


def unit_costs(network: nn.Sequential, input_shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """Per unit, on a 2-sample batch (BN needs more than one): (bytes of its input, bytes it
    saves for backward beyond its input).

    A block [a, b) then holds input[a] + sum(own[a:b]): the boundary tensor between two units
    of one block is counted once, as the earlier unit's output, exactly as the meter does.
    """
    costs = []
    h = torch.zeros(2, *input_shape)
    network = copy.deepcopy(network).train()  # a copy: BN statistics must not see the probe
    for unit in network:
        h = h.requires_grad_(True)
        meter = SavedTensorMeter(exclude=[*unit.parameters(), *unit.buffers(), h])
        with meter:
            out = unit(h)
        costs.append((h.untyped_storage().nbytes(), meter.peak))
        h = out.detach()
    return costs


def balanced_cuts(costs: Sequence[tuple[int, int]], blocks: int) -> list[int]:
    """Cut points (indices where blocks 2..K start) minimising the largest block's cost,
    with ``costs`` as returned by ``unit_costs``.

    Exact dynamic programme over contiguous partitions; ties go to the earliest cut, which
    makes the result deterministic.
    """
    n = len(costs)
    prefix = [0]
    for _, own in costs:
        prefix.append(prefix[-1] + own)

    def block_cost(a: int, b: int) -> int:
        return costs[a][0] + prefix[b] - prefix[a]

    inf = float("inf")
    # best[k][i]: smallest max-block cost splitting the first i units into k blocks.
    best = [[inf] * (n + 1) for _ in range(blocks + 1)]
    split = [[0] * (n + 1) for _ in range(blocks + 1)]
    best[0][0] = 0
    for k in range(1, blocks + 1):
        for i in range(k, n + 1):
            for j in range(k - 1, i):
                cost = max(best[k - 1][j], block_cost(j, i))
                if cost < best[k][i]:
                    best[k][i], split[k][i] = cost, j
    cuts, i = [], n
    for k in range(blocks, 0, -1):
        i = split[k][i]
        cuts.append(i)
    return sorted(cuts)[1:]  # drop the leading 0


def resolve_cuts(
    network: nn.Sequential,
    input_shape: tuple[int, ...],
    blocks: int,
    cuts: Sequence[int] | None = None,
) -> list[int]:
    """The cut points for ``blocks`` blocks: ``cuts`` if given (validated), else balanced."""
    units = len(network)
    if cuts is not None and any(c < 1 or c >= units for c in cuts):
        # Checked before K: with explicit cuts K follows from them, so blame the cuts.
        raise UsageError(
            f"--cuts {','.join(map(str, cuts))} must be strictly increasing unit indices in "
            f"1..{units - 1} (this network has {units} units; a cut at i starts a block at "
            "unit i)"
        )
    if blocks < 1 or blocks > units:
        raise UsageError(
            f"--blocks {blocks} is out of range: this network has {units} units, so K must be "
            f"between 1 and {units}"
        )
    if cuts is None:
        return balanced_cuts(unit_costs(network, input_shape), blocks)
    cuts = list(cuts)
    if len(cuts) != blocks - 1:
        raise UsageError(
            f"--cuts {','.join(map(str, cuts))} gives {len(cuts) + 1} blocks but --blocks is "
            f"{blocks}; give K-1 cut points"
        )
    if any(b <= a for a, b in zip(cuts, cuts[1:])) or (cuts and (cuts[0] < 1 or cuts[-1] >= units)):
        raise UsageError(
            f"--cuts {','.join(map(str, cuts))} must be strictly increasing unit indices in "
            f"1..{units - 1} (a cut at i starts a block at unit i)"
        )
    return cuts


def slice_blocks(network: nn.Sequential, cuts: Sequence[int]) -> list[nn.Sequential]:
    """The blocks as slices of ``network``: they share its modules, not copies."""
    bounds = [0, *cuts, len(network)]
    units = list(network)
    return [nn.Sequential(*units[a:b]) for a, b in zip(bounds, bounds[1:])]
