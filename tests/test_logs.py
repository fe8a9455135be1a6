"""--log csv|tensorboard beside metrics.jsonl."""

import csv
import json
import sys

import pytest

import locallearn
from locallearn.cli import main
from locallearn.engine.logs import parse_log_kinds
from locallearn.engine.run import resume_run
from locallearn.errors import UsageError

OPTIONS = dict(rule="greedy", model="mlp", data="mnist1d", blocks=2, train_limit=200)


class Crash(Exception):
    pass


def test_csv_log_holds_every_epoch_once_across_a_resume(tmp_path):
    def crash(record, cfg):
        if record["epoch"] == 2:
            raise Crash

    with pytest.raises(Crash):
        locallearn.train(out=tmp_path / "run", epochs=3, log="csv", on_epoch=crash, **OPTIONS)
    resume_run(tmp_path / "run")
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    records = [
        json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().split("\n") if x
    ]
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    header = list(rows[0])
    assert header[:4] == ["epoch", "train_loss", "val_acc", "lr"]
    assert {"block_loss_1", "block_loss_2", "act_bytes_peak", "epoch_seconds"} <= set(header)
    for row, record in zip(rows, records):
        assert float(row["val_acc"]) == record["val_acc"]
        assert float(row["block_loss_1"]) == record["block_losses"][0]
        assert float(row["lr"]) == record["lr"] == 1e-2


def test_tensorboard_log(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard package is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def crash(record, cfg):
        if record["epoch"] == 2:
            raise Crash

    with pytest.raises(Crash):
        locallearn.train(
            out=tmp_path / "run", epochs=3, log="tensorboard", on_epoch=crash, **OPTIONS
        )
    # the crash came after epoch 2's events were written but the checkpoint already holds
    # epoch 2, so the resumed run writes epoch 3 only: each step once
    summary = resume_run(tmp_path / "run")
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"accuracy/val_acc", "loss/block_loss_1", "loss/block_loss_2", "lr"} <= tags
    assert {"memory/act_bytes_peak", "time/epoch_seconds", "loss/train_loss"} <= tags
    scalars = events.Scalars("accuracy/val_acc")
    assert [e.step for e in scalars] == [1, 2, 3]
    assert [e.value for e in scalars] == pytest.approx(summary["val_acc_curve"])


def test_log_errors(monkeypatch, capsys):
    with pytest.raises(UsageError, match="unknown --log 'cvs' .*valid choices: csv, tensorboard"):
        parse_log_kinds("cvs")
    # Without the package: one line naming it and the fix, before any training.
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    code = main(["train", "--model", "mlp", "--epochs", "1", "--log", "tensorboard", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--log tensorboard needs the tensorboard package, which is not installed" in err
    assert "pip install tensorboard" in err and "--log csv" in err
