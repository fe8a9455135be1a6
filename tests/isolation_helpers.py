"""What the gradient-isolation tests of every rule share: an optimizer that records the
gradients it is handed, and the weights a loss's autograd graph reaches."""

from __future__ import annotations

import torch
from torch import nn


class RecordingOptimizer(torch.optim.Optimizer):
    """Records each parameter's gradient when step() runs; never changes a weight."""

    def __init__(self, params):
        super().__init__(params, {})
        self.seen: dict[int, torch.Tensor | None] = {}

    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                self.seen[id(p)] = None if p.grad is None else p.grad.clone()


def graph_leaves(loss: torch.Tensor) -> set[int]:
    """ids of the tensors (weights) a loss's autograd graph can reach."""
    seen, leaves, todo = set(), set(), [loss.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if hasattr(fn, "variable"):
            leaves.add(id(fn.variable))
        todo.extend(f for f, _ in fn.next_functions)
    return leaves


class RecordingSignal(nn.Module):
    """Wraps a stage's signal during a real train_step; logs (stage index, the weights its
    loss reaches, the block output it saw)."""

    def __init__(self, inner, log, index):
        super().__init__()
        self.inner, self.log, self.index = inner, log, index

    def forward(self, h, y):
        loss = self.inner(h, y)
        self.log.append((self.index, graph_leaves(loss), h))
        return loss
