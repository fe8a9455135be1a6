"""The one training loop (see DESIGN.md), and evaluation.

Every rule trains through ``train_step``: each block runs on the previous block's output
with gradients stopped, its signal gives a local loss, and its own optimizer steps. The
block's graph is freed by its backward before the next block runs, so only one block's
activations are ever alive: that is what ``act_bytes_peak`` shows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from locallearn.measure.memory import SavedTensorMeter
from locallearn.rules.base import Rule

AutocastFactory = Callable[[], AbstractContextManager[Any]]


def batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches in a seeded random order (or in order without a generator).

    Each batch is gathered into a fresh tensor: a view into the dataset would make the
    memory meter count the whole dataset's storage as the first layer's saved input.
    """
    n = x.shape[0]
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    order = order.to(x.device)
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        yield x.index_select(0, index), y.index_select(0, index)


def train_step(
    rule: Rule,
    optimizers: Sequence[torch.optim.Optimizer | None],
    x: torch.Tensor,
    y: torch.Tensor,
    meter: SavedTensorMeter | None = None,
    autocast: AutocastFactory | None = None,
) -> list[torch.Tensor]:
    """One step of every stage on one batch; returns each stage's loss (detached; NaN for
    a stage that rests in this step).

    With a ``meter`` (already entered), each stage's peak is marked as one segment.
    ``autocast`` (CUDA mixed precision) wraps each block's forward and loss.
    """
    h, target = rule.begin_step(x, y)
    losses, _ = train_stages(rule, optimizers, h, target, range(rule.blocks), meter, autocast)
    return losses


def train_stages(
    rule: Rule,
    optimizers: Sequence[torch.optim.Optimizer | None],
    h: torch.Tensor,
    target: Any,
    stages: range,
    meter: SavedTensorMeter | None = None,
    autocast: AutocastFactory | None = None,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The body of ``train_step`` for the contiguous stages ``stages`` only: ``h`` is the
    input of the first of them (for stage 0, what ``rule.begin_step`` returned) and
    ``target`` what every signal sees. Returns the stages' losses and the last one's output.

    Running ``range(0, a)`` then ``range(a, K)`` on the first call's output is the same
    step as ``train_step``, bit for bit: a worker of a pipeline (parallel/) runs its slice
    of the stages this way. ``optimizers`` is indexed by stage; only ``stages``' are used.
    """
    losses = []
    resting: torch.Tensor | None = None  # one NaN for every resting stage (GBNN has hundreds)
    trains, rest = rule.trains, rule.rest  # looked up once: GBNN's steps pass hundreds of stages
    for index in stages:
        if not trains(index):
            h = rest(index, h)
            if resting is None:
                resting = torch.full((), float("nan"), device=h.device)
            losses.append(resting)
            if meter is not None:
                meter.mark()
            continue
        stage, optimizer = rule.stages[index], optimizers[index]
        assert optimizer is not None, f"stage {index} has no optimizer in this process"
        optimizer.zero_grad(set_to_none=True)
        outputs: list[torch.Tensor] = []
        loss: torch.Tensor | None = None
        for part, part_target in rule.chunks(index, h, target):
            with autocast() if autocast is not None else nullcontext():
                out = stage.block(part.detach())  # nothing upstream is reachable
                part_loss = stage.signal(out, part_target)
            part_loss.backward()  # frees this part's graph before the next part runs
            outputs.append(out)
            part_loss = part_loss.detach().float()
            loss = part_loss if loss is None else loss + part_loss
        h = rule.join(index, outputs)
        optimizer.step()
        rule.after_step(index)
        if meter is not None:
            meter.mark()
        losses.append(loss if loss is not None else torch.zeros((), device=h.device))
    return losses, h


def weighted_losses(losses: list[torch.Tensor], rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One step's stage losses times its rows, and the rows of the stages that trained
    (a resting stage's loss is NaN): what an epoch's sample-weighted mean sums."""
    stacked = torch.stack(losses)  # once per step: GBNN's steps carry hundreds of losses
    return stacked.nan_to_num(nan=0.0) * rows, stacked.isfinite() * rows


def train_epoch(
    rule: Rule,
    optimizers: Sequence[torch.optim.Optimizer],
    data: Iterator[tuple[torch.Tensor, torch.Tensor]],
    meter: SavedTensorMeter | None = None,
    on_batch: Callable[[], None] | None = None,
    autocast: AutocastFactory | None = None,
) -> tuple[list[float | None], int]:
    """Train one pass over ``data``; the first step runs inside ``meter`` when given.

    Returns the sample-weighted mean loss of each stage (None for a stage that rested all
    epoch) and the number of samples. Losses are summed on the device and read once, so the
    loop never waits for the device.
    """
    rule.train(True)
    totals: torch.Tensor | None = None
    counts: torch.Tensor | None = None
    samples = 0
    for step, (x, y) in enumerate(data):
        metered = meter if step == 0 else None
        with metered if metered is not None else nullcontext():
            losses = train_step(rule, optimizers, x, y, metered, autocast)
        weighted, active = weighted_losses(losses, x.shape[0])
        totals = weighted if totals is None else totals + weighted
        counts = active if counts is None else counts + active
        samples += x.shape[0]
        if on_batch is not None:
            on_batch()
    if totals is None or counts is None:
        return [None] * rule.blocks, 0
    means = (totals / counts.clamp(min=1)).tolist()
    return [m if c > 0 else None for m, c in zip(means, counts.tolist())], samples


@torch.no_grad()
def evaluate(rule: Rule, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Accuracy of ``rule.predict`` on (x, y), in eval mode, as a fraction of the rows
    whose label is not negative."""
    rule.train(False)
    correct = 0
    for xb, yb in batches(x, y, batch_size):
        correct += int((rule.predict(xb).argmax(dim=1) == yb).sum())
    # Negative labels mark rows outside the evaluated split (graph nodes): not counted.
    return correct / max(1, int((y >= 0).sum()))


@torch.no_grad()
def evaluate_regression(
    rule: Rule, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000
) -> dict[str, float]:
    """R^2 and RMSE of ``rule.predict`` on regression targets ``y`` (N,), in eval mode.

    R^2 = 1 - SS_res / SS_tot around the mean of ``y`` itself (scikit-learn's ``r2_score``);
    for a constant ``y`` (SS_tot = 0) it is 1.0 for an exact fit and 0.0 otherwise, as there.
    """
    rule.train(False)
    preds = [rule.predict(xb).reshape(-1).double() for xb, _ in batches(x, y, batch_size)]
    pred = torch.cat(preds) if preds else torch.zeros(0, dtype=torch.float64)
    target = y.reshape(-1).double()
    ss_res = float((target - pred).pow(2).sum())
    ss_tot = float((target - target.mean()).pow(2).sum()) if target.numel() else 0.0
    mse = ss_res / max(1, target.numel())
    if ss_tot > 0:
        r2 = 1.0 - ss_res / ss_tot
    else:
        r2 = 1.0 if ss_res == 0 else 0.0
    return {"r2": r2, "rmse": mse**0.5, "mse": mse}
