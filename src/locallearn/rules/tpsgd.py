"""Target projection SGD (tpSGD).

Lomnitz, Daniels, Zhang & Piacentino, "Learning with Local Gradients at the Edge",
arXiv 2208.08503 (2022).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from locallearn.errors import unknown_choice
from locallearn.models.recurrent import Recurrent
from locallearn.recipe import Recipe
from locallearn.rules.base import RULES, Stage
from locallearn.rules.projection import LOCAL_LOSSES, LayerwiseRule, build_layerwise


class TpSGD(LayerwiseRule):
    r"""Each layer is its own block and minimises a local loss between its activated output
    :math:`h_i = \sigma_i(z_i)` and a fixed random target :math:`t_i = P_i y^*`:

    .. math:: \min_{W_i} \ell(h_i, t_i), \qquad \ell \in \{\text{mse}, \text{l1}, \text{ce}\}

    by SGD on the layer alone (the paper's layer-wise SGD; for mse the update is the delta
    rule :math:`(t_i - h_i) \odot \sigma_i'(z_i)\, h_{i-1}^\top`, for l1 its sign version).
    :math:`P_i` is drawn like DRTP's B (He-uniform, shape (classes, *unit shape)), so tpSGD
    with the pseudo-loss of DRTP would be DRTP. ``ce`` is the cross-entropy between
    softmax(t_i) and softmax(h_i) over the layer's units (our reading of "any differentiable
    loss" for a probabilistic loss). The output layer's target is the one-hot label itself:
    mse/l1 on its logits (its activation is the identity), or cross-entropy.

    Recurrent layers (``rnn``, ``gru``, ``lstm``): the state is detached between steps, so
    no gradient flows through time; the same target :math:`t_i` is applied to the hidden
    state of every step and the local loss is averaged over steps. The gradient of step t
    therefore reaches the weights only through :math:`h_t = \mathrm{cell}(x_t,
    \bar h_{t-1})` (one-step credit). The paper's exact per-step handling could not be
    read here (only its abstract was available): this is our choice, stated as such.
    Since no step's gradient needs another step, a recurrent layer learns step by step
    (``chunks``): step t runs forward and backward, then step t+1, and the layer takes one
    optimizer step on the summed gradient, equal to that of the averaged loss, while
    holding one step's activations instead of the whole sequence's.

    Memory: a plain layer saves its input and the label indices; the pre-activation is
    recomputed from the input in backward (one more matmul/conv per layer and step) rather
    than kept.
    """

    def __init__(self, network: nn.Sequential, stages: list[Stage], cuts: list[int]) -> None:
        super().__init__(network, stages, cuts)
        self.streams: dict[int, Recurrent] = {}
        for index, stage in enumerate(stages):
            found = [m for m in stage.block.modules() if isinstance(m, Recurrent)]
            if found and index in self.targets:
                self.streams[index] = found[0]

    def chunks(
        self, stage_index: int, h: torch.Tensor, target: Any
    ) -> Iterator[tuple[torch.Tensor, Any]]:
        stream = self.streams.get(stage_index)
        if stream is None:
            yield h, target
            return
        local, steps = self.targets[stage_index], h.shape[1]
        stream.begin_stream()
        local.share = 1.0 / steps
        try:
            for t in range(steps):  # a copy: a saved view would hold the whole sequence
                yield h[:, t : t + 1].clone(), target
        finally:
            stream.end_stream()
            local.share = 1.0

    def join(self, stage_index: int, outputs: list[torch.Tensor]) -> torch.Tensor:
        if stage_index in self.streams:
            return torch.cat([o.detach() for o in outputs], dim=1)
        return super().join(stage_index, outputs)


@RULES.register(
    "tpsgd",
    description="target projection SGD: each layer fits a fixed random projection of the label",
    options=("local_loss",),
    layerwise=True,
    paper="Lomnitz et al., arXiv 2208.08503 (2022)",
    recipe=Recipe(
        optimizer="adam",
        lr=3e-4,
        batch_size=100,
        model={"activation": "tanh"},
        source="Lomnitz et al. 2022: bounded (tanh) units reaching the zero-mean targets; "
        "Adam lr 3e-4 chosen on validation (BENCHMARKS.md, recipes)",
    ),
    families=("dense", "conv", "recurrent"),
)
def build_tpsgd(
    network: nn.Sequential,
    *,
    input_shape: tuple[int, ...],
    classes: int,
    local_loss: str = "mse",
) -> TpSGD:
    if local_loss not in LOCAL_LOSSES:
        raise unknown_choice("--local-loss", local_loss, LOCAL_LOSSES)
    # Recurrent layers train without backpropagation through time (see the class docstring).
    for module in network.modules():
        if hasattr(module, "detach_state"):
            module.detach_state = True
    rule = build_layerwise(TpSGD, network, input_shape, classes, local_loss, local_loss)
    return rule  # type: ignore[return-value]
