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
                resting = resting_loss(h.device)
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
            own = rule.set_grads(index, part.detach(), part_target)
            if own is not None:  # the rule set .grad itself (forward gradients)
                out, part_loss = own
            else:
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


_RESTING: dict[torch.device, torch.Tensor] = {}


def resting_loss(device: torch.device) -> torch.Tensor:
    """The loss ``train_stages`` reports for a resting stage: NaN, one tensor per device, so
    an epoch's sums can skip it by identity."""
    loss = _RESTING.get(device)
    if loss is None:
        loss = _RESTING[device] = torch.full((), float("nan"), device=device)
    return loss


class LossTotals:
    """An epoch's per-stage sums of loss x rows, and of rows where the stage trained with a
    finite loss, kept on the device.

    Resting stages (``resting_loss``) are skipped, and the trained stages' losses are reduced
    in blocks of ``FLUSH`` steps, one stack each: per-step reductions over every stage would
    cost a step of tiny tensors (GBNN's, with hundreds of stages) a fifth of its time, and
    holding every step's losses would grow with the epoch.
    """

    FLUSH = 256

    def __init__(self) -> None:
        self._losses: list[torch.Tensor] = []
        self._stages: list[int] = []
        self._rows: list[int] = []
        self._steps = 0
        self.blocks = 0
        self.device = torch.device("cpu")
        self.totals: torch.Tensor | None = None
        self.counts: torch.Tensor | None = None

    def add(self, losses: list[torch.Tensor], rows: int) -> None:
        self.blocks = len(losses)
        if losses:
            self.device = losses[0].device
        for index, loss in enumerate(losses):
            if loss is not _RESTING.get(loss.device):
                self._losses.append(loss)
                self._stages.append(index)
                self._rows.append(rows)
        self._steps += 1
        if self._steps % self.FLUSH == 0:
            self._flush()

    def _flush(self) -> None:
        if self.totals is None and self._steps:
            self.totals = torch.zeros(self.blocks, device=self.device)
            self.counts = torch.zeros(self.blocks, dtype=torch.long, device=self.device)
        if not self._losses or self.totals is None or self.counts is None:
            return
        device = self.totals.device
        losses = torch.stack(self._losses).float()
        stages = torch.tensor(self._stages).to(device, non_blocking=True)
        rows = torch.tensor(self._rows).to(device, non_blocking=True)
        self.totals.index_add_(0, stages, losses.nan_to_num(nan=0.0) * rows)
        self.counts.index_add_(0, stages, losses.isfinite() * rows)
        self._losses, self._stages, self._rows = [], [], []

    def result(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(totals, counts) per stage over every step added, None if there was none."""
        self._flush()
        if self.totals is None or self.counts is None:
            return None
        return self.totals, self.counts


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
    sums = LossTotals()
    samples = 0
    for step, (x, y) in enumerate(data):
        metered = meter if step == 0 else None
        with metered if metered is not None else nullcontext():
            losses = train_step(rule, optimizers, x, y, metered, autocast)
        sums.add(losses, x.shape[0])
        samples += x.shape[0]
        if on_batch is not None:
            on_batch()
    result = sums.result()
    if result is None:
        return [None] * rule.blocks, 0
    totals, counts = result
    means = (totals / counts.clamp(min=1)).tolist()
    return [m if c > 0 else None for m, c in zip(means, counts.tolist())], samples


Predict = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def evaluate(
    rule: Rule,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 1000,
    predict: Predict | None = None,
) -> float:
    """Accuracy of ``rule.predict`` (or ``predict``, the same function made cheaper: the
    evaluator's BatchNorm-folded view) on (x, y), in eval mode, as a fraction of the rows
    whose label is not negative."""
    rule.train(False)
    predict = predict or rule.predict
    correct = 0
    for xb, yb in batches(x, y, batch_size):
        correct += int((predict(xb).argmax(dim=1) == yb).sum())
    # Negative labels mark rows outside the evaluated split (graph nodes): not counted.
    return correct / max(1, int((y >= 0).sum()))


@torch.no_grad()
def evaluate_regression(
    rule: Rule,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 1000,
    predict: Predict | None = None,
) -> dict[str, float]:
    """R^2 and RMSE of ``rule.predict`` (or ``predict``, as in ``evaluate``) on regression
    targets ``y`` (N,), in eval mode.

    R^2 = 1 - SS_res / SS_tot around the mean of ``y`` itself (scikit-learn's ``r2_score``);
    for a constant ``y`` (SS_tot = 0) it is 1.0 for an exact fit and 0.0 otherwise, as there.
    """
    rule.train(False)
    predict = predict or rule.predict
    preds = [predict(xb).reshape(-1).double() for xb, _ in batches(x, y, batch_size)]
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
