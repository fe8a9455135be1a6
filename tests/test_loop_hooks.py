"""The loop's hooks for rules (begin_step, trains, begin_epoch) and the run options shared by
every rule (sequence inputs, augmentation, CUDA-only flags)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import locallearn
from locallearn.config import RunConfig, config_from_mapping
from locallearn.data import as_sequences
from locallearn.engine.loop import train_step
from locallearn.engine.run import Run
from locallearn.errors import UsageError
from locallearn.rules.base import Rule, Stage, TaskLoss


class _Recorder(Rule):
    """Doubles the input in begin_step and lets only stage 1 train."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        a, b = nn.Linear(4, 4), nn.Linear(4, 3)
        super().__init__(nn.Sequential(a, b), [Stage(a, TaskLoss()), Stage(b, TaskLoss())], [1])
        self.seen: list[torch.Tensor] = []

    def begin_step(self, x, y):
        self.seen.append(x)
        return 2 * x, y

    def trains(self, stage_index):
        return stage_index == 1


def test_resting_stage_runs_without_graph_and_keeps_weights():
    rule = _Recorder()
    opts = [torch.optim.SGD(rule.stage_parameters(i), lr=0.1) for i in range(2)]
    first = rule.stages[0].block.weight.detach().clone()
    second = rule.stages[1].block.weight.detach().clone()
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        expected = nn.functional.cross_entropy(rule.network(2 * x), y)
    losses = train_step(rule, opts, x, y)
    assert torch.equal(rule.stages[0].block.weight, first), "a resting stage must not learn"
    assert not torch.equal(rule.stages[1].block.weight, second)
    assert math.isnan(float(losses[0])) and math.isfinite(float(losses[1]))
    # stage 1 saw the doubled input: its loss (before its step) is the network's on 2x
    assert float(losses[1]) == pytest.approx(float(expected), rel=1e-6)
    assert rule.seen[0] is x


def test_bool_options_parse_and_reject_non_bools():
    assert config_from_mapping({"as_sequence": True}).as_sequence is True
    with pytest.raises(UsageError, match="as_sequence must be true or false"):
        config_from_mapping({"as_sequence": "yes"})


@pytest.mark.parametrize("flag", ["amp", "channels_last"])
def test_cuda_only_flags_are_refused_on_cpu(flag, mnist1d_small):
    with pytest.raises(UsageError, match="applies to --device cuda only"):
        Run(RunConfig(**{flag: True}), dataset=mnist1d_small)


def test_augment_without_a_dataset_augmentation_is_an_error(mnist1d_small):
    with pytest.raises(UsageError, match="defines no augmentation"):
        Run(RunConfig(augment=True), dataset=mnist1d_small)


def test_augmentation_is_applied_to_training_batches_only(mnist1d_small):
    calls: list[int] = []

    def flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        calls.append(x.shape[0])
        return x.flip(-1)

    data = locallearn.data.Dataset(**{**mnist1d_small.__dict__, "augment": flip})
    s = locallearn.train("bp", "mlp", data, epochs=1, augment=True, batch_size=100)
    # Every training sample once; none of the held-out validation or test samples.
    assert sum(calls) == s["train_size"] == data.x_train.shape[0] - s["val_size"]


def test_as_sequence_turns_signals_and_images_into_steps(mnist1d_small, digits_small):
    seq = as_sequences(mnist1d_small)
    assert seq.input_shape == (40, 1)
    assert torch.equal(seq.x_train[:, :, 0], mnist1d_small.x_train[:, 0, :])
    rows = as_sequences(digits_small)
    assert rows.input_shape == (8, 8)
    assert torch.equal(rows.x_train[:, 3, :], digits_small.x_train[:, 0, 3, :])


def test_dataset_options_are_checked_against_the_entry():
    with pytest.raises(UsageError, match="does not apply to dataset 'digits'"):
        locallearn.data.load_dataset("digits", k=3)


class _Halves(Rule):
    """One linear block on cross-entropy; with ``split`` it learns from each half of the
    batch in turn, each half's mean loss weighted 1/2."""

    def __init__(self, split: bool) -> None:
        torch.manual_seed(0)
        layer = nn.Linear(6, 3)
        super().__init__(nn.Sequential(layer), [Stage(layer, _WeightedCE())], [])
        self.split = split

    def chunks(self, stage_index, h, target):
        if not self.split:
            return ((h, (target, 1.0)),)
        half = h.shape[0] // 2  # copies: a saved view would be counted as the whole batch
        return tuple(
            (h[rows].clone(), (target[rows], 0.5)) for rows in (slice(0, half), slice(half, None))
        )


class _WeightedCE(TaskLoss):
    def forward(self, h, target):
        y, weight = target
        return weight * nn.functional.cross_entropy(h, y)


def test_chunked_stage_takes_the_whole_batch_step_holding_half_the_graph():
    from locallearn.measure.memory import SavedTensorMeter

    x, y = torch.randn(8, 6), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    rules = {split: _Halves(split) for split in (False, True)}
    peaks, losses = {}, {}
    for split, rule in rules.items():
        opt = torch.optim.SGD(rule.stage_parameters(0), lr=0.5)
        meter = SavedTensorMeter(exclude=[*rule.network.parameters()])
        with meter:
            losses[split] = float(train_step(rule, [opt], x, y, meter)[0])
        peaks[split] = meter.peak
    whole, parts = rules[False].stages[0].block, rules[True].stages[0].block
    torch.testing.assert_close(parts.weight, whole.weight)
    torch.testing.assert_close(parts.bias, whole.bias)
    assert losses[True] == pytest.approx(losses[False])
    # The saved input and log-softmax of 4 rows instead of 8; the int64 targets (a view of
    # all 8 when split) and the loss's 4-byte total weight.
    assert peaks[False] == 8 * 6 * 4 + 8 * 3 * 4 + 8 * 8 + 4
    assert peaks[True] == 4 * 6 * 4 + 4 * 3 * 4 + 8 * 8 + 4


def test_lr_schedules_by_epoch_and_as_applied_by_a_run(digits_small):
    from locallearn.engine.run import lr_factor

    assert [lr_factor("constant", e, 4) for e in range(4)] == [1.0] * 4
    assert [lr_factor("cooldown", e, 4) for e in range(4)] == [1.0, 1.0, 1.0, 0.5]
    assert [lr_factor("cooldown", e, 10) for e in (4, 5, 6, 9)] == [1.0, 1.0, 0.8, 0.2]
    assert [round(lr_factor("cosine", e, 4), 6) for e in range(4)] == [1.0, 0.853553, 0.5,
                                                                       0.146447]  # fmt: skip
    seen = []
    cfg = config_from_mapping(
        {"rule": "greedy", "model": "mlp", "data": "digits", "epochs": 4, "lr": 0.1,
         "optimizer": "sgd", "lr_schedule": "cosine"}
    )  # fmt: skip
    run = Run(cfg, dataset=digits_small, on_epoch=lambda record, _: seen.append(
        [g["lr"] for opt in run.optimizers for g in opt.param_groups]))  # fmt: skip
    run.fit()
    assert [round(lrs[0], 6) for lrs in seen] == [0.1, 0.085355, 0.05, 0.014645]
    assert all(len(set(lrs)) == 1 for lrs in seen)  # every block's optimizer alike
    with pytest.raises(UsageError, match="unknown --lr-schedule 'step'.*cooldown"):
        Run(config_from_mapping({"lr_schedule": "step"}), dataset=digits_small)


def test_loss_totals_weigh_rows_skip_resting_and_flush_in_blocks(monkeypatch) -> None:
    from locallearn.engine import loop

    monkeypatch.setattr(loop.LossTotals, "FLUSH", 2)  # 5 steps: two full blocks and a rest
    rest = loop.resting_loss(torch.device("cpu"))
    steps = [
        ([torch.tensor(1.0), rest, torch.tensor(4.0)], 10),
        ([torch.tensor(3.0), rest, torch.tensor(float("nan"))], 30),
        ([rest, rest, torch.tensor(2.0)], 20),
        ([torch.tensor(5.0), rest, torch.tensor(6.0)], 40),
        ([torch.tensor(0.5), rest, torch.tensor(1.0)], 1),
    ]
    sums = loop.LossTotals()
    for losses, rows in steps:
        sums.add(losses, rows)
    result = sums.result()
    assert result is not None
    totals, counts = result
    assert counts.tolist() == [81, 0, 71]  # a NaN loss counts no rows; resting ones neither
    want = [1 * 10 + 3 * 30 + 5 * 40 + 0.5, 0.0, 4 * 10 + 2 * 20 + 6 * 40 + 1.0]
    assert totals.tolist() == pytest.approx(want)
    assert loop.LossTotals().result() is None


def test_train_epoch_reports_the_sample_weighted_mean_of_each_stage() -> None:
    from locallearn.engine import loop

    class Fixed(Rule):
        """Stage 0 always trains with loss = its batch's first target; stage 1 rests."""

        def __init__(self) -> None:
            lin = nn.Linear(1, 1)
            super().__init__(nn.Sequential(lin), [Stage(lin, _FirstTarget())], cuts=[])
            self.stages.append(Stage(nn.Identity(), _FirstTarget()))

        def trains(self, stage_index: int) -> bool:
            return stage_index == 0

        def rest(self, stage_index: int, h: torch.Tensor) -> torch.Tensor:
            return h

    rule = Fixed()
    optimizers = [torch.optim.SGD(rule.stages[0].block.parameters(), lr=0.0), None]
    data = [(torch.zeros(n, 1), torch.full((n,), float(v))) for v, n in ((1, 2), (4, 6))]
    means, samples = loop.train_epoch(rule, optimizers, iter(data))  # type: ignore[arg-type]
    assert samples == 8 and means[1] is None
    assert means[0] == pytest.approx((1 * 2 + 4 * 6) / 8)


class _FirstTarget(nn.Module):
    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y[0] + 0.0 * h.sum()
