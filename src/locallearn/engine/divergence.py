"""Divergence: a non-finite loss or parameter ends the run instead of being logged as rest.

The check runs once per epoch, on the per-stage mean losses the loop already reads back
once per epoch and on one reduction over each stage's parameters (one device sync), so it
costs nothing per step. A stage that trains and yet has no finite loss, a mean loss beyond
``LOSS_LIMIT``, or a non-finite parameter or buffer is diverged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from locallearn.rules.base import Rule, Stage

# No local objective here (cross-entropy, MSE to a target, BCE reconstruction, FF's softplus
# of a goodness margin) comes near this while learning; a loss of 1e12 means the weights have
# already blown up (Adam at lr 1e6 reaches 1e21 without overflowing float32).
LOSS_LIMIT = 1e12


def diverged_stage(rule: Rule, losses: Sequence[float | None]) -> tuple[int, str] | None:
    """(0-based stage, what went wrong) for the first diverged stage, else None."""
    trains = [rule.trains(i) for i in range(rule.blocks)]
    for i, (loss, active) in enumerate(zip(losses, trains)):
        if not active:
            continue
        if loss is None or not math.isfinite(loss):
            return i, "its loss is not finite"
        if abs(loss) > LOSS_LIMIT:
            return i, f"its loss reached {loss:.3g}"
    per_stage = [_stage_tensors(stage) for stage in rule.stages]
    if _all_finite([t for tensors in per_stage for t in tensors]):
        return None
    finite = []
    for tensors in per_stage:
        if tensors:
            finite.append(torch.stack([t.detach().isfinite().all() for t in tensors]).all())
        else:
            finite.append(torch.ones((), dtype=torch.bool))
    for i, ok in enumerate(torch.stack([f.cpu() for f in finite]).tolist()):
        if not ok:
            return i, "its weights are no longer finite"
    return None


def _stage_tensors(stage: Stage) -> list[torch.Tensor]:
    """A stage's parameters and floating-point buffers, detached."""
    tensors = [*stage.block.parameters(), *stage.signal.parameters()]
    tensors += [
        b for b in (*stage.block.buffers(), *stage.signal.buffers()) if b.is_floating_point()
    ]
    return [t.detach() for t in tensors]


def _all_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether every element is finite, by one fused max-abs per device (a NaN or inf
    anywhere makes its tensor's max-abs non-finite): the stage-by-stage search runs only
    when something is not. GBNN has hundreds of stages of four tiny tensors each."""
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for t in tensors:
        if t.numel():
            by_device.setdefault(t.device, []).append(t)
    return all(
        bool(torch.stack(torch._foreach_norm(group, ord=math.inf)).isfinite().all())
        for group in by_device.values()
    )
