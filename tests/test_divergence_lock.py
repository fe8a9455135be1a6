"""Divergence stops a run (exit 3); one writer per run directory (RUN_DIR/.lock)."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import locallearn.engine.run as engine_run
from locallearn.cli import main
from locallearn.engine.lock import LOCK_NAME, RunDirLock, is_running

TINY = ["--model", "mlp", "--data", "digits", "--train-limit", "50", "--quiet"]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# --- divergence -------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_huge_lr_exits_3_and_records_divergence(
    optimizer: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The command (sgd, momentum 0) and Adam, whose loss stays finite at 1e21.
    extra = ["--momentum", "0"] if optimizer == "sgd" else []
    argv = ["train", "--model", "mlp", "--data", "digits", "--epochs", "3", "--lr", "1e6"]
    code, err = run([*argv, "--optimizer", optimizer, *extra, "--out", str(tmp_path)], capsys)
    assert code == 3
    line = err.strip()
    assert len(line.splitlines()) == 1
    assert "training diverged in epoch 1 at block 1 of 1 (lr 1e+06)" in line
    last = records(tmp_path)[-1]
    assert last["status"] == "diverged" and last["epoch"] == 1 and last["block"] == 1
    assert last["lr"] == 1e6 and last["message"] in line
    assert not (tmp_path / "summary.json").exists()


def _poison_in_epoch(epoch: int, stage: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the real epoch ``epoch`` (1-based), one weight of ``stage`` becomes NaN."""
    real = engine_run.train_epoch
    seen = [0]

    def poisoned(rule, *args, **kwargs):  # type: ignore[no-untyped-def]
        out = real(rule, *args, **kwargs)
        seen[0] += 1
        if seen[0] == epoch:
            with torch.no_grad():
                next(iter(rule.stages[stage].block.parameters())).view(-1)[0] = float("nan")
        return out

    monkeypatch.setattr(engine_run, "train_epoch", poisoned)


def test_nan_weights_keep_the_last_good_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _poison_in_epoch(2, stage=1, monkeypatch=monkeypatch)
    argv = ["train", "--rule", "greedy", "--blocks", "3", *TINY, "--epochs", "3"]
    code, err = run([*argv, "--out", str(tmp_path)], capsys)
    assert code == 3
    assert "diverged in epoch 2 at block 2 of 3 (lr 0.01)" in err
    assert "weights are no longer finite" in err and "checkpoint of epoch 1 is kept" in err
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["state"]["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in ckpt["network"].values() if t.is_floating_point())
    statuses = [(r["epoch"], r.get("status", "ok")) for r in records(tmp_path)]
    assert statuses == [(1, "ok"), (2, "diverged")]
    assert not (tmp_path / "summary.json").exists()
    assert not is_running(tmp_path)  # the lock went with the run


def test_resting_blocks_are_not_divergence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Forward-Forward's greedy schedule rests all layers but one each epoch (loss None).
    argv = ["train", "--rule", "ff", "--ff-schedule", "greedy", *TINY, "--epochs", "2"]
    code, err = run([*argv, "--out", str(tmp_path)], capsys)
    assert code == 0, err
    first = records(tmp_path)[0]["block_losses"]
    assert None in first and any(x is not None for x in first)


def test_divergence_in_the_api_raises() -> None:
    import locallearn
    from locallearn.errors import Diverged

    with pytest.raises(Diverged) as caught:
        locallearn.train(model="mlp", data="digits", epochs=2, lr=1e6)
    assert (caught.value.epoch, caught.value.block, caught.value.lr) == (1, 1, 1e6)


# --- the run-directory lock --------------------------------------------------------------

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.write(fd, str(os.getpid()).encode())
print("held", flush=True)
time.sleep(60)
"""


@pytest.fixture
def held(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A run directory whose .lock another process holds (as a running train would)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir / LOCK_NAME)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield run_dir, proc.pid
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_a_second_writer_is_refused_naming_the_holder(
    held: tuple[Path, int], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, pid = held
    assert is_running(run_dir)
    code, err = run(["train", *TINY, "--epochs", "1", "--out", str(run_dir)], capsys)
    assert code == 2 and f"pid {pid}" in err and "in use by another locallearn run" in err
    assert not (run_dir / "config.toml").exists()
    # Past the CLI's early check, the lock itself refuses (the API path).
    with pytest.raises(Exception, match=f"pid {pid}"):
        RunDirLock(run_dir).acquire()


def test_resume_of_a_running_directory_is_refused(
    held: tuple[Path, int], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, pid = held
    (run_dir / "config.toml").write_text('rule = "bp"\nmodel = "mlp"\ndata = "digits"\n')
    code, err = run(["resume", str(run_dir), "--quiet"], capsys)
    assert code == 2 and f"pid {pid}" in err


def test_lock_is_released_and_stale_temporaries_removed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    real = engine_run.train_epoch
    monkeypatch.setattr(engine_run, "train_epoch", interrupted)
    assert main(["train", *TINY, "--epochs", "2", "--out", str(tmp_path)]) == 130
    capsys.readouterr()
    monkeypatch.setattr(engine_run, "train_epoch", real)
    assert not is_running(tmp_path)
    stale = tmp_path / ".checkpoint.pt.x1y2.tmp"  # what a kill inside atomic_write leaves
    stale.write_bytes(b"half a checkpoint")
    code, err = run(["resume", str(tmp_path), "--quiet"], capsys)
    assert code == 0, err
    assert not stale.exists() and (tmp_path / "summary.json").exists()
    # the pid of the last writer stays in the file; the lock itself is free
    assert (tmp_path / LOCK_NAME).read_text().strip() == str(os.getpid())
    fd = os.open(tmp_path / LOCK_NAME, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.close(fd)


def test_two_concurrent_trains_leave_one_consistent_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        [sys.executable, "-m", "locallearn", "train", *TINY, "--epochs", "100000", "--seed", "1"]
        + ["--threads", "1", "--out", str(run_dir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "checkpoint.pt").exists():  # the first run is under way
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        code, err = run(
            ["train", *TINY, "--epochs", "1", "--seed", "2", "--out", str(run_dir)], capsys
        )
        assert code == 2 and f"pid {first.pid}" in err
    finally:
        first.terminate()
        first.wait(timeout=30)
    assert "seed = 1" in (run_dir / "config.toml").read_text()
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert ckpt["identity"]["seed"] == 1
