"""Feedback alignment: backpropagation with fixed random feedback weights.

Lillicrap, Cownden, Tweed & Akerman, "Random synaptic feedback weights support error
backpropagation for deep learning", Nature Communications 7 (2016). The backward pass of
every linear and convolutional layer sends the error through a fixed random matrix ``B`` of
the weight's shape instead of ``W^T``; weight gradients are the usual ones. It is still one
end-to-end block (the error travels through every layer), so it saves exactly what
backpropagation saves: each layer's input.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from locallearn.errors import UsageError
from locallearn.recipe import Recipe
from locallearn.rules.base import RULES, Rule, Stage, TaskLoss


class _FALinearFn(torch.autograd.Function):
    """y = x W^T + b; backward: grad_x = grad_y B (not grad_y W), grad_W = grad_y^T x."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        feedback: torch.Tensor,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, feedback)
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor) -> Any:
        x, feedback = ctx.saved_tensors
        grad_x = grad_y @ feedback if ctx.needs_input_grad[0] else None
        grad_w = grad_y.flatten(0, -2).t() @ x.flatten(0, -2)
        grad_b = grad_y.flatten(0, -2).sum(dim=0) if ctx.has_bias else None
        return grad_x, grad_w, grad_b, None


_CONV = {1: (F.conv1d, torch.nn.grad.conv1d_input, torch.nn.grad.conv1d_weight),
         2: (F.conv2d, torch.nn.grad.conv2d_input, torch.nn.grad.conv2d_weight)}  # fmt: skip


class _FAConvFn(torch.autograd.Function):
    """Convolution whose input gradient is the transposed convolution with ``B``."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        feedback: torch.Tensor,
        conv: tuple[Any, ...],
    ) -> torch.Tensor:
        dims, stride, padding, dilation, groups = conv
        ctx.save_for_backward(x, feedback)
        ctx.conv, ctx.has_bias, ctx.weight_shape = conv, bias is not None, weight.shape
        return _CONV[dims][0](x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor) -> Any:
        x, feedback = ctx.saved_tensors
        dims, stride, padding, dilation, groups = ctx.conv
        _, conv_input, conv_weight = _CONV[dims]
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = conv_input(x.shape, feedback, grad_y, stride, padding, dilation, groups)
        grad_w = conv_weight(x, ctx.weight_shape, grad_y, stride, padding, dilation, groups)
        grad_b = grad_y.sum(dim=[0, *range(2, grad_y.dim())]) if ctx.has_bias else None
        return grad_x, grad_w, grad_b, None, None


class FALayer(nn.Module):
    """A Linear, Conv1d or Conv2d layer (kept as ``.layer``, same weights) whose backward
    pass uses the fixed random buffer ``feedback`` in place of its weight."""

    def __init__(self, layer: nn.Linear | nn.Conv1d | nn.Conv2d) -> None:
        super().__init__()
        self.layer = layer
        feedback = torch.empty_like(layer.weight, requires_grad=False)
        # Same distribution as the forward weights' default initialisation (Kaiming
        # uniform): the feedback is random but of the scale the forward pass has.
        nn.init.kaiming_uniform_(feedback, a=math.sqrt(5))
        self.register_buffer("feedback", feedback)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        if isinstance(layer, nn.Linear):
            return _FALinearFn.apply(x, layer.weight, layer.bias, self.feedback)
        dims = 1 if isinstance(layer, nn.Conv1d) else 2
        conv = (dims, layer.stride, layer.padding, layer.dilation, layer.groups)
        return _FAConvFn.apply(x, layer.weight, layer.bias, self.feedback, conv)


def with_feedback_alignment(module: nn.Module) -> int:
    """Replace, in place, every Linear/Conv1d/Conv2d inside ``module`` by an ``FALayer``;
    returns how many were replaced."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, nn.Linear | nn.Conv1d | nn.Conv2d):
            if isinstance(child, nn.Conv1d | nn.Conv2d) and (
                child.padding_mode != "zeros" or isinstance(child.padding, str)
            ):
                raise UsageError(
                    f"rule 'fa' supports zero padding given as numbers; layer {name} has "
                    f"padding={child.padding!r}, padding_mode={child.padding_mode!r}"
                )
            setattr(module, name, FALayer(child))
            count += 1
        else:
            count += with_feedback_alignment(child)
    return count


class FeedbackAlignment(Rule):
    r"""One block trained on the task loss, but every layer's backward sends
    :math:`\delta_{in} = B\,\delta_{out}` with a fixed random :math:`B` instead of
    :math:`W^T\delta_{out}`; :math:`\Delta W = -\eta\,\delta_{out} x^T` as in backprop.
    Other layers (BatchNorm, pooling, activations) backpropagate exactly."""


@RULES.register(
    "fa",
    description="feedback alignment: backward pass through fixed random matrices (one block)",
    options=(),
    paper="Lillicrap et al., Nature Communications 2016",
    recipe=Recipe(
        optimizer="adam",
        lr=3e-4,
        batch_size=100,
        source="Adam lr 3e-4, batch 100, chosen on validation (BENCHMARKS.md, recipes): the "
        "global lr 1e-2 overshoots through the fixed feedback matrices",
    ),
    families=("dense", "conv"),
)
def build_fa(
    network: nn.Sequential, *, input_shape: tuple[int, ...], classes: int
) -> FeedbackAlignment:
    if with_feedback_alignment(network) == 0:
        raise UsageError("rule 'fa' found no Linear or Conv layer in this model")
    return FeedbackAlignment(network, [Stage(network, TaskLoss())], cuts=[])
