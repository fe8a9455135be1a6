"""Run directories in every state, for the runs index and the report tests.

Real runs (finished, interrupted) come from tiny trainings; the states another process
creates (running: RUN_DIR/.lock held; diverged: issue 12's metrics record) are made by
hand to the shared contract, so these tests do not depend on that code.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
from pathlib import Path

import locallearn

TINY = dict(model="mlp", data="mnist1d", train_limit=200, epochs=2, width=32, depth=2)


class Crash(Exception):
    pass


def make_runs(root: Path) -> dict[str, Path]:
    """root/compare-s{0,1}/{bp,greedy} finished, root/cut interrupted, root/diverged and
    root/validated made by hand. Returns name -> run directory."""
    runs: dict[str, Path] = {}
    for seed in (0, 1):
        out = root / f"compare-s{seed}"
        locallearn.compare(rules=["bp", "greedy"], out=out, seed=seed, blocks=None, **TINY)
        runs[f"bp-s{seed}"], runs[f"greedy-s{seed}"] = out / "bp", out / "greedy"

    def crash(record, cfg):
        if record["epoch"] == 1:
            raise Crash

    with contextlib.suppress(Crash):
        locallearn.train(rule="greedy", out=root / "cut", on_epoch=crash, **TINY)
    runs["cut"] = root / "cut"

    # diverged: issue 12 appends a record with "status": "diverged" and stops the run.
    diverged = root / "diverged"
    diverged.mkdir()
    shutil.copy(runs["bp-s0"] / "config.toml", diverged / "config.toml")
    first = json.loads((runs["bp-s0"] / "metrics.jsonl").read_text().splitlines()[0])
    bad = {"epoch": 2, "status": "diverged", "block": 1, "lr": 10.0, "message": "loss is nan"}
    (diverged / "metrics.jsonl").write_text(json.dumps(first) + "\n" + json.dumps(bad) + "\n")
    runs["diverged"] = diverged

    # validated: issue 11's runs carry val_acc in epoch records and the summary.
    validated = root / "validated"
    shutil.copytree(runs["greedy-s0"], validated)
    records = [json.loads(x) for x in (validated / "metrics.jsonl").read_text().splitlines()]
    for r, v in zip(records, (0.31, 0.42)):
        r["val_acc"] = v
    (validated / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = json.loads((validated / "summary.json").read_text())
    summary["val_acc"] = 0.42
    (validated / "summary.json").write_text(json.dumps(summary))
    (validated / "config.toml").write_text(
        (validated / "config.toml").read_text().replace("seed = 0", "seed = 7")
    )
    runs["validated"] = validated
    return runs


@contextlib.contextmanager
def held_lock(run_dir: Path):
    """RUN_DIR/.lock held as train/resume hold it (an exclusive flock) while inside."""
    path = run_dir / ".lock"
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        f.write("12345\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
