"""Direct feedback alignment: the output error reaches every hidden layer directly.

Nokland, "Direct Feedback Alignment Provides Learning in Deep Neural Networks" (NeurIPS
2016), sec. 2: hidden layer k's update is :math:`\\delta a_k = (B_k e) \\odot f'(a_k)` with
the output error ``e`` and a fixed random ``B_k``. Because ``e`` is all a layer needs, each
layer is its own block here: ``begin_step`` runs one gradient-free forward pass to get
``e``, then the loop trains layer after layer, each freeing its graph before the next runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from locallearn.recipe import Recipe
from locallearn.rules.base import RULES, Rule, Signal, Stage
from locallearn.rules.ff import dense_layers


class _LinearReLUFn(torch.autograd.Function):
    """relu(x W^T + b), saving only ``x``: the ReLU mask is recomputed in backward."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight, bias)
        return F.linear(x, weight, bias).relu_()

    @staticmethod
    def backward(ctx: Any, grad_h: torch.Tensor) -> Any:
        x, weight, bias = ctx.saved_tensors
        grad_z = grad_h * (F.linear(x, weight, bias) > 0)
        grad_x = grad_z @ weight if ctx.needs_input_grad[0] else None
        grad_b = grad_z.sum(dim=0) if bias is not None else None
        return grad_x, grad_z.t() @ x, grad_b


class _InjectFn(torch.autograd.Function):
    """Scalar :math:`\\sum h \\odot (e B)` whose gradient in ``h`` is :math:`e B`: the DFA
    signal. Saves ``e`` (batch x classes); ``B`` is a fixed buffer."""

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, error: torch.Tensor, feedback: torch.Tensor) -> Any:
        ctx.save_for_backward(error, feedback)
        return (h * (error @ feedback)).sum()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        error, feedback = ctx.saved_tensors
        return grad * (error @ feedback), None, None


class DFALayer(nn.Module):
    """A hidden layer ([flatten], Linear, ReLU) that saves only its input for backward."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        if not torch.is_grad_enabled():
            return F.linear(x, self.linear.weight, self.linear.bias).relu()
        return _LinearReLUFn.apply(x, self.linear.weight, self.linear.bias)


class OutputLayer(nn.Module):
    """The output Linear (flattening its input, as the mlp's last unit may)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


@dataclass
class DFATargets:
    """Labels and the output error of this step's gradient-free forward pass."""

    labels: torch.Tensor
    error: torch.Tensor  # (B, classes): (softmax - onehot) / B, the gradient of mean CE


class DirectFeedback(Signal):
    """Hidden layer k's signal: its output is pushed along :math:`e B_k` (fixed ``B_k``)."""

    def __init__(self, classes: int, units: int) -> None:
        super().__init__()
        feedback = torch.empty(classes, units)
        # Uniform with the fan-in of the feedback path (the classes), like a Linear's init.
        bound = 1.0 / math.sqrt(classes)
        nn.init.uniform_(feedback, -bound, bound)
        self.register_buffer("feedback", feedback)

    def forward(self, h: torch.Tensor, target: DFATargets) -> torch.Tensor:
        return _InjectFn.apply(h, target.error, self.feedback)


class OutputLoss(Signal):
    """Cross-entropy of the output layer (trained as in backprop)."""

    def forward(self, h: torch.Tensor, target: DFATargets) -> torch.Tensor:
        return F.cross_entropy(h, target.labels)


class DirectFeedbackAlignment(Rule):
    r"""Per step: :math:`e = (\mathrm{softmax}(f(x)) - y^*)/B` from a gradient-free forward
    pass; hidden layer :math:`k` then minimises :math:`\sum h_k \odot (e B_k)` over its own
    weights (gradient :math:`(e B_k) \odot f'(a_k)` at its pre-activation, Nokland 2016
    eq. 3), the output layer minimises the cross-entropy. Each layer is one block, trained
    on its input from the (already updated) layer before it, so the error comes from the
    weights at the start of the step, as in the paper's simultaneous update."""

    def __init__(self, network: nn.Sequential, stages: list[Stage], classes: int) -> None:
        super().__init__(network, stages, cuts=list(range(1, len(stages))))
        self.classes = classes

    def begin_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, DFATargets]:
        with torch.no_grad():
            probs = self.network(x).float().softmax(dim=1)
            error = (probs - F.one_hot(y, self.classes).to(probs.dtype)) / x.shape[0]
        return x, DFATargets(y, error)


@RULES.register(
    "dfa",
    description="direct feedback alignment: output error to each layer via fixed random B_k",
    options=(),
    paper="Nokland, NeurIPS 2016",
    recipe=Recipe(
        optimizer="adam",
        lr=3e-4,
        batch_size=100,
        source="Adam lr 3e-4, batch 100, chosen on validation (BENCHMARKS.md, recipes): the "
        "global lr 1e-2 overshoots through the fixed feedback matrices",
    ),
    families=("dense",),
    layerwise=True,
)
def build_dfa(
    network: nn.Sequential, *, input_shape: tuple[int, ...], classes: int
) -> DirectFeedbackAlignment:
    hidden, output = dense_layers(network, "dfa")
    layers: list[nn.Module] = [DFALayer(linear) for linear in hidden]
    stages = [
        Stage(layer, DirectFeedback(classes, linear.out_features))
        for layer, linear in zip(layers, hidden)
    ]
    head = OutputLayer(output)
    stages.append(Stage(head, OutputLoss()))
    return DirectFeedbackAlignment(nn.Sequential(*layers, head), stages, classes)
