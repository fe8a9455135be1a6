"""resume --epochs N: extending a finished or interrupted run to N epochs in total."""

import json

import pytest

import locallearn
from locallearn.cli import main
from locallearn.engine.run import resume_run

OPTIONS = dict(rule="greedy", model="mlp", data="mnist1d", blocks=2, train_limit=200, seed=1)


class Crash(Exception):
    pass


def test_extending_a_finished_run_equals_training_longer_from_the_start(tmp_path, capsys):
    longer = locallearn.train(out=tmp_path / "long", epochs=4, **OPTIONS)
    short = locallearn.train(out=tmp_path / "short", epochs=2, **OPTIONS)
    assert short["weights_sha256"] != longer["weights_sha256"]
    assert main(["resume", str(tmp_path / "short"), "--epochs", "4", "--quiet"]) == 0
    capsys.readouterr()
    extended = json.loads((tmp_path / "short" / "summary.json").read_text())
    assert extended["weights_sha256"] == longer["weights_sha256"]
    assert extended["val_acc_curve"] == longer["val_acc_curve"]
    assert extended["test_acc"] == longer["test_acc"]
    assert extended["epochs"] == 4
    assert "epochs = 4" in (tmp_path / "short" / "config.toml").read_text()
    records = (tmp_path / "short" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in records] == [1, 2, 3, 4]
    command = json.loads((tmp_path / "short" / "command.json").read_text())
    assert command["resumed"][-1]["argv"][-3:] == ["--epochs", "4", "--quiet"]


def test_extending_an_interrupted_run(tmp_path):
    longer = locallearn.train(out=tmp_path / "long", epochs=3, **OPTIONS)

    def crash(record, cfg):
        if record["epoch"] == 1:
            raise Crash

    with pytest.raises(Crash):
        locallearn.train(out=tmp_path / "cut", epochs=2, on_epoch=crash, **OPTIONS)
    assert resume_run(tmp_path / "cut", epochs=3)["weights_sha256"] == longer["weights_sha256"]


def test_fewer_epochs_than_trained_is_an_error(tmp_path, capsys):
    locallearn.train(out=tmp_path / "run", epochs=2, **OPTIONS)
    assert main(["resume", str(tmp_path / "run"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "--epochs 1 is fewer than the 2 epochs" in err and "give a larger total" in err
    assert main(["resume", str(tmp_path / "run"), "--epochs", "0"]) == 2
    assert "--epochs must be at least 1, got 0" in capsys.readouterr().err


def test_extending_a_schedule_planned_for_the_total_warns(tmp_path):
    locallearn.train(out=tmp_path / "run", epochs=2, lr_schedule="cosine", **OPTIONS)
    with pytest.warns(UserWarning, match="--lr-schedule cosine depend on the total epochs"):
        summary = resume_run(tmp_path / "run", epochs=3)
    assert summary["epochs"] == 3
    lrs = [
        json.loads(x)["lr"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    # epochs 1-2 keep the 2-epoch plan (1, 0.5 of lr); epoch 3 follows the 3-epoch plan.
    assert lrs == pytest.approx([1e-2, 0.5e-2, 1e-2 * 0.25])


def test_the_cli_says_what_extending_a_cosine_run_does(tmp_path, capsys):
    locallearn.train(out=tmp_path / "run", epochs=1, lr_schedule="cosine", **OPTIONS)
    assert main(["resume", str(tmp_path / "run"), "--epochs", "2", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "locallearn resume: warning: " in err and "re-plans them for 2" in err
    assert "UserWarning" not in err
