r"""Mono-Forward: every layer projects its activations to class scores and learns from a local
cross-entropy.

Gong, Li & Abdulla, "Mono-Forward: Backpropagation-Free Algorithm for Efficient Neural Network
Training Harnessing Local Errors", arXiv 2501.09238 (v1, January 2025; v2, May 2026, retitled
"Revisiting Forward-Forward through Objective-Locality Decomposition"). No code is public.

What we took from the paper (through the stored summaries of it that the ``search`` tool
reaches: its abstract, and the method summaries of sciencestack, alphaXiv and emergentmind;
the full text itself was not reachable, so section numbers are those summaries' headings):

- "Core algorithm": layer :math:`i` computes :math:`a_i = \phi(W_i a_{i-1} + b_i)` (hidden
  layers keep their bias; :math:`\phi` typically ReLU) and its *goodness*
  :math:`G_i = a_i M_i^\top` through a learned projection matrix :math:`M_i` of shape
  (classes, units of layer i), no bias. Its loss is the cross-entropy of
  :math:`\mathrm{softmax}(G_i)` against the label; :math:`W_i, b_i, M_i` learn from that
  loss only, so no error crosses a layer.
- "Prediction": one forward pass; from the last layer's goodness (default here), from the
  goodness accumulated over the layers, or ("BP-pred") from an ordinary output layer
  trained on the last hidden layer's activations.
- What the summaries do not give (optimizer, lr, batch, epochs, initialisation of M) we
  chose: Adam at batch 100, lr chosen on validation (``benchmarks/newest_rules.py``), M
  drawn like a PyTorch ``Linear`` weight, U(-1/sqrt(units), 1/sqrt(units)).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from locallearn.errors import UsageError, unknown_choice
from locallearn.models.base import output_shape
from locallearn.recipe import Recipe
from locallearn.rules.base import RULES, Rule, Signal, Stage, TaskLoss
from locallearn.rules.projection import AFFINE, _is_main, split_layers

READOUTS = ("last", "sum", "output")


class Projection(nn.Module):
    r"""The goodness :math:`G = a M^\top` of a layer's (flattened) activations ``a``;
    :math:`M` has shape (classes, units) and there is no bias (the paper's formula)."""

    def __init__(self, feature_shape: tuple[int, ...], classes: int) -> None:
        super().__init__()
        units = math.prod(feature_shape)
        bound = 1.0 / math.sqrt(units)  # PyTorch's Linear default; the paper gives none
        self.weight = nn.Parameter(torch.empty(classes, units).uniform_(-bound, bound))

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return a.flatten(1) @ self.weight.t()  # (N, classes)


class ProjectionLoss(Signal):
    r"""A hidden layer's local loss: :math:`\mathrm{CE}(\mathrm{softmax}(a M^\top), y)`."""

    def __init__(self, projection: Projection) -> None:
        super().__init__()
        self.projection = projection

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.projection(h), y)


class MonoForward(Rule):
    r"""Each layer :math:`i` is its own block and minimises
    :math:`\mathrm{CE}(\mathrm{softmax}(a_i M_i^\top), y)` over :math:`W_i, b_i, M_i`, with
    :math:`a_i` computed from the previous layer's output with gradients stopped. The
    signal sits after the layer's activation and before any pooling, which opens the next
    layer (the split of ``rules/projection.py``); a conv layer's map is flattened for
    :math:`M_i`.

    ``readout`` (``--mf-readout``), how the network predicts:

    - ``last`` (default): :math:`\arg\max G_L`, the last hidden layer's goodness. The model's
      output layer is not used: the network is its hidden layers followed by :math:`M_L`,
      and the last block is [layer L, :math:`M_L`] on the task loss, the same objective.
    - ``sum``: :math:`\arg\max \sum_i G_i`, the goodness accumulated over all layers
      (trained exactly as ``last``).
    - ``output``: the model's own output layer ("BP-pred"), a last block learning the task
      loss on the last hidden layer's detached activations; the hidden layers' projections
      then only train.
    """

    def __init__(
        self,
        network: nn.Sequential,
        stages: list[Stage],
        cuts: list[int],
        readout: str,
        projections: list[Projection],
    ) -> None:
        super().__init__(network, stages, cuts)
        self.readout = readout
        self.projections = projections  # M_1 .. M_L, in layer order

    def goodness(self, x: torch.Tensor) -> list[torch.Tensor]:
        """:math:`G_i` of every hidden layer for input ``x`` (a plain forward pass)."""
        scores, h = [], x
        for stage, projection in zip(self.stages, self.projections):
            block = stage.block
            if self.readout != "output" and stage is self.stages[-1]:
                block = block[0]  # [layer L, M_L]: the layer alone
            h = block(h)
            scores.append(projection(h))
        return scores

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        if self.readout == "sum":
            return torch.stack(self.goodness(x)).sum(dim=0)
        return self.network(x)


@RULES.register(
    "monoforward",
    aliases=("mf",),
    description="Mono-Forward: each layer's goodness a M^T (learned M) on a local cross-entropy",
    options=("mf_readout",),
    paper="Gong, Li & Abdulla, arXiv 2501.09238 (2025)",
    recipe=Recipe(
        optimizer="adam",
        lr=1e-3,
        batch_size=100,
        source="the paper gives none we could read: Adam, batch 100; lr 1e-3 chosen on "
        "validation (BENCHMARKS.md, newest rules)",
    ),
    families=("dense", "conv"),
    layerwise=True,
)
def build_monoforward(
    network: nn.Sequential,
    *,
    input_shape: tuple[int, ...],
    classes: int,
    mf_readout: str | None = None,
) -> MonoForward:
    readout = mf_readout or "last"
    if readout not in READOUTS:
        raise unknown_choice("--mf-readout", readout, READOUTS)
    layers, owners = split_layers(network)
    for layer in layers:
        main = next(m for m in layer if _is_main(m))
        if not isinstance(main, AFFINE):
            raise UsageError(
                f"rule 'monoforward' trains plain layer stacks (Linear/Conv layers: mlp, cnn, "
                f"cnn1d, vgg); this model has a unit {type(main).__name__!r} whose inner "
                "layers it cannot reach"
            )
    if len(layers) < 2:
        raise UsageError(
            "rule 'monoforward' needs at least one hidden layer; this network has a single "
            "layer with weights (use a model with --depth 1 or more)"
        )
    hidden, output = layers[:-1], layers[-1]
    projections, shape = [], tuple(input_shape)
    for layer in hidden:
        shape = output_shape(layer, shape)
        projections.append(Projection(shape, classes))
    stages = [Stage(layer, ProjectionLoss(p)) for layer, p in zip(hidden, projections)]
    if readout == "output":
        stages.append(Stage(output, TaskLoss()))
        return MonoForward(network, stages, owners[1:], readout, projections)
    # The last hidden layer and M_L form the last block, on the task loss (the same
    # cross-entropy): the network predicts through them, the model's output layer is unused.
    last = nn.Sequential(hidden[-1], projections[-1])
    stages[-1] = Stage(last, TaskLoss())
    own = nn.Sequential(*hidden, projections[-1])
    return MonoForward(own, stages, list(range(1, len(hidden))), readout, projections)
