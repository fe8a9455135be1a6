"""Greedy local learning (DGL): each block learns from its own auxiliary classifier.

Belilovsky, Eickenberg & Oyallon, "Decoupled Greedy Learning of CNNs" (ICML 2020) and
"Greedy Layerwise Learning Can Scale to ImageNet" (ICML 2019).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from locallearn.models.base import output_shape
from locallearn.recipe import Recipe
from locallearn.rules.base import RULES, HeadLoss, Rule, Stage, TaskLoss
from locallearn.rules.cutting import resolve_cuts, slice_blocks
from locallearn.rules.heads import make_head


class Greedy(Rule):
    r"""Block :math:`k < K` minimises :math:`\mathrm{CE}(g_k(f_k(\bar h_{k-1})), y)` over the
    block :math:`f_k` and its head :math:`g_k`, where :math:`\bar h_{k-1}` is the previous
    block's output with gradients stopped; block :math:`K` minimises the task loss
    :math:`\mathrm{CE}(f_K(\bar h_{K-1}), y)`. Each block has its own optimizer, so no gradient
    crosses a block boundary. Prediction uses the last block only (heads are discarded).
    """


@RULES.register(
    "greedy",
    aliases=("dgl",),
    description="greedy local learning (DGL): auxiliary classifier head per block",
    options=("blocks", "head", "cuts"),
    paper="Belilovsky et al., ICML 2019 / 2020",
    tasks=("classification", "regression"),  # a head regresses with MSE like the last block
    recipe=Recipe(
        source="shared with BP, as in the paper (local and end-to-end networks trained with one "
        "recipe): the global default"
    ),
)
def build_greedy(
    network: nn.Sequential,
    *,
    input_shape: tuple[int, ...],
    classes: int,
    blocks: int = 3,
    head: str = "auto",
    cuts: Sequence[int] | None = None,
    task: str = "classification",
) -> Greedy:
    cut_points = resolve_cuts(network, input_shape, blocks, cuts)
    parts = slice_blocks(network, cut_points)
    stages, shape = [], tuple(input_shape)
    for k, block in enumerate(parts):
        shape = output_shape(block, shape)
        last = k == len(parts) - 1
        signal = TaskLoss() if last else HeadLoss(make_head(head, shape, classes))
        stages.append(Stage(block, signal))
    return Greedy(network, stages, cut_points)
