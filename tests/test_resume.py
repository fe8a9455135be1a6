"""Checkpoints and resume: a killed run, resumed, ends with the same weights on CPU."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import locallearn
from locallearn.engine.run import resume_run
from locallearn.errors import UsageError


class Crash(Exception):
    pass


def crash_after(epoch):
    def on_epoch(record, cfg):
        if record["epoch"] == epoch:
            raise Crash

    return on_epoch


# ff: its peer normalisation keeps running activities in signal buffers, which must resume
# too; and the lr schedule must pick up at the resumed epoch.
@pytest.mark.parametrize(
    "rule,extra",
    [
        ("bp", {}),
        ("greedy", {"blocks": 3}),
        ("ff", {"model": "mlp", "ff_readout": "linear", "lr_schedule": "cooldown"}),
        # noprop: its per-batch noise, dropout and the shared output layer's T optimizers.
        ("noprop", {"model": "cnn", "data": "digits", "np_steps": 2}),
    ],
)
def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path, rule, extra):
    options = dict(rule=rule, model="cnn1d", data="mnist1d", train_limit=300, epochs=4)
    options.update(extra)
    clean = locallearn.train(out=tmp_path / "clean", **options)
    with pytest.raises(Crash):
        locallearn.train(out=tmp_path / "crashed", on_epoch=crash_after(2), **options)
    assert not (tmp_path / "crashed" / "summary.json").exists()
    resumed = resume_run(tmp_path / "crashed")
    assert resumed["weights_sha256"] == clean["weights_sha256"]
    assert resumed["val_acc_curve"] == clean["val_acc_curve"]
    assert resumed["test_acc"] == clean["test_acc"]
    lines = (tmp_path / "crashed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3, 4]


def test_checkpoint_is_data_only_and_no_temp_files_remain(tmp_path):
    locallearn.train(
        rule="greedy",
        model="mlp",
        data="mnist1d",
        train_limit=200,
        epochs=1,
        blocks=2,
        out=tmp_path,
    )
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["state"]["epoch"] == 1 and len(ckpt["optimizers"]) == 2
    # .lock (the run-directory lock, issue 12) stays; no temporary file does.
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and p.name != ".lock"]


def test_resuming_a_finished_run_returns_its_summary(tmp_path):
    done = locallearn.train(
        rule="bp", model="mlp", data="mnist1d", train_limit=200, epochs=1, out=tmp_path
    )
    assert resume_run(tmp_path) == json.loads(json.dumps(done))


def test_resume_errors(tmp_path):
    with pytest.raises(UsageError, match="is not a run directory"):
        resume_run(tmp_path)
    (tmp_path / "config.toml").write_text('rule = "bp"\nmodel = "mlp"\nepochs = 1\n')
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UsageError, match="is not a readable checkpoint"):
        resume_run(tmp_path)


def test_a_run_killed_before_its_first_checkpoint_starts_over(tmp_path):
    options = dict(rule="bp", model="mlp", data="mnist1d", train_limit=200, epochs=2)
    clean = locallearn.train(out=tmp_path / "clean", **options)
    with pytest.raises(Crash):
        locallearn.train(out=tmp_path / "early", on_epoch=crash_after(1), **options)
    (tmp_path / "early" / "checkpoint.pt").unlink()
    assert resume_run(tmp_path / "early")["weights_sha256"] == clean["weights_sha256"]


def cli(*argv):
    return [sys.executable, "-m", "locallearn.cli", *argv]


def test_killed_process_resumes_to_the_same_weights(tmp_path):
    """SIGKILL a real `train` after its first checkpoint, `resume` it, compare digests."""
    args = [
        "train",
        "--rule",
        "greedy",
        "--model",
        "cnn1d",
        "--data",
        "mnist1d",
        "--blocks",
        "3",
        "--epochs",
        "30",
        "--seed",
        "3",
        "--quiet",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    victim = subprocess.Popen(
        cli(*args, "--out", str(tmp_path / "killed")),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    checkpoint = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.time() + 120
    while time.time() < deadline and victim.poll() is None and not checkpoint.exists():
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    done = torch.load(checkpoint, weights_only=True)["state"]["epoch"]
    assert 1 <= done < 30, f"the run was killed after {done} epochs; the test needs it mid-run"
    assert not (tmp_path / "killed" / "summary.json").exists()

    resumed = subprocess.run(
        cli(
            "resume", str(tmp_path / "killed"), "--quiet", "--json", str(tmp_path / "resumed.json")
        ),
        env=env,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    clean = subprocess.run(
        cli(*args, "--out", str(tmp_path / "clean"), "--json", str(tmp_path / "clean.json")),
        env=env,
        capture_output=True,
        text=True,
    )
    assert clean.returncode == 0, clean.stderr
    a = json.loads((tmp_path / "resumed.json").read_text())
    b = json.loads((tmp_path / "clean.json").read_text())
    assert a["epochs"] == b["epochs"] == 30
    assert a["weights_sha256"] == b["weights_sha256"]
