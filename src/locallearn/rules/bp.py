"""End-to-end backpropagation: the reference every local rule is measured against."""

from __future__ import annotations

from torch import nn

from locallearn.errors import UsageError
from locallearn.recipe import Recipe
from locallearn.rules.base import RULES, Rule, Stage, TaskLoss


class Backprop(Rule):
    r"""One block, the whole network, trained on the task loss:
    :math:`\min_\theta \mathrm{CE}(f_\theta(x), y)`. Every activation of the network is alive
    at the backward pass, which is the memory that local rules avoid."""


@RULES.register(
    "bp",
    description="end-to-end backpropagation (one block; the reference)",
    options=(),
    paper="Rumelhart, Hinton & Williams (1986)",
    tasks=("classification", "regression"),
    recipe=Recipe(source="the global default (the reference every other rule is compared to)"),
)
def build_bp(
    network: nn.Sequential,
    *,
    input_shape: tuple[int, ...],
    classes: int,
    blocks: int = 1,
    task: str = "classification",
) -> Backprop:
    if blocks != 1:
        raise UsageError(f"rule 'bp' trains one block; got --blocks {blocks}")
    return Backprop(network, [Stage(network, TaskLoss())], cuts=[])
