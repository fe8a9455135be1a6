"""Target projection SGD (tpSGD).

Lomnitz, Daniels, Zhang & Piacentino, "Learning with Local Gradients at the Edge",
arXiv 2208.08503 (2022).
"""

from __future__ import annotations

from torch import nn

from locallearn.errors import unknown_choice
from locallearn.rules.base import RULES
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

    Memory: a plain layer saves its input and the label indices; the pre-activation is
    recomputed from the input in backward (one more matmul/conv per layer and step) rather
    than kept.
    """


@RULES.register(
    "tpsgd",
    description="target projection SGD: each layer fits a fixed random projection of the label",
    options=("local_loss",),
    layerwise=True,
    paper="Lomnitz et al., arXiv 2208.08503 (2022)",
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
