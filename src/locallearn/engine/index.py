"""``locallearn runs [DIR]``: every run directory under a folder, with its status.

A run directory is a folder holding ``config.toml``. Its status, read from its files only:

- running: ``RUN_DIR/.lock`` is locked by the process that trains it (probed with a
  non-blocking ``flock`` that is released at once, so the probe never blocks a writer);
- diverged: metrics.jsonl holds a record with ``"status": "diverged"``;
- finished: summary.json exists;
- interrupted: anything else (a checkpoint without a summary, or nothing trained yet, and no
  lock held).

Epoch records may carry ``val_acc`` (runs with a validation split) or only ``test_acc``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from locallearn.config import RunConfig, load_config_file
from locallearn.engine.lock import is_running
from locallearn.engine.provenance import read_command
from locallearn.errors import UsageError, unknown_choice

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

STATUSES = ("finished", "running", "interrupted", "diverged")


def is_locked(run_dir: Path) -> bool:
    """Whether a process holds ``RUN_DIR/.lock`` (the lock contract of train/resume)."""
    return is_running(run_dir)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of metrics.jsonl; a torn or foreign line is skipped, not fatal."""
    path = Path(run_dir) / "metrics.jsonl"
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    try:
        summary = json.loads((Path(run_dir) / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def run_status(run_dir: Path, records: list[dict[str, Any]] | None = None) -> str:
    run_dir = Path(run_dir)
    if is_locked(run_dir):
        return "running"
    records = read_metrics(run_dir) if records is None else records
    if any(r.get("status") == "diverged" for r in records):
        return "diverged"
    if (run_dir / "summary.json").exists():
        return "finished"
    return "interrupted"


def _best(records: list[dict[str, Any]], key: str) -> float | None:
    values = [
        r[key]
        for r in records
        if isinstance(r.get(key), int | float) and r.get("status", "ok") == "ok"
    ]
    return max(values) if values else None


def _started(run_dir: Path) -> str:
    command = read_command(run_dir)
    if command and command.get("started"):
        return str(command["started"])
    # Runs made before command.json existed: config.toml is written when a run starts.
    stamp = (run_dir / "config.toml").stat().st_mtime
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def _config_values(path: Path) -> tuple[dict[str, Any], str | None]:
    """The config's values with the defaults filled in. A config this version cannot load
    (a key from a newer version, a damaged file) still gives what its TOML holds, plus the
    error: the index lists such a run instead of failing on it."""
    try:
        return asdict(load_config_file(path)), None
    except UsageError as err:
        try:
            raw = tomllib.loads(path.read_text())
        except (OSError, ValueError):
            raw = {}
        return {**asdict(RunConfig()), **raw} if raw else {}, str(err)


def describe_run(run_dir: str | Path) -> dict[str, Any]:
    """One run's index entry (see the module docstring for ``status``)."""
    run_dir = Path(run_dir)
    values, error = _config_values(run_dir / "config.toml")
    records = read_metrics(run_dir)
    epochs_done = max((int(r["epoch"]) for r in records if "epoch" in r), default=0)
    summary = read_summary(run_dir)
    entry: dict[str, Any] = {
        "run_dir": str(run_dir),
        "started": _started(run_dir),
        "rule": values.get("rule"),
        "model": values.get("model"),
        "data": values.get("data"),
        "seed": values.get("seed"),
        "blocks": (summary or {}).get("blocks", values.get("blocks")),
        "epochs_done": epochs_done,
        "epochs_planned": values.get("epochs"),
        "status": run_status(run_dir, records),
        "best_val_acc": _best(records, "val_acc"),
        # Runs with a validation split evaluate the test set once, at the end: their "best
        # test" is that one figure (the summary's test_acc).
        "best_test_acc": _best(records, "test_acc")
        if _best(records, "test_acc") is not None
        else (summary or {}).get("test_acc"),
    }
    if summary is not None:
        entry["test_acc"] = summary.get("test_acc")
        entry["val_acc"] = summary.get("val_acc")
    diverged = next((r for r in records if r.get("status") == "diverged"), None)
    if diverged is not None:
        entry["diverged"] = {k: diverged.get(k) for k in ("epoch", "block", "lr", "message")}
    if error:
        entry["error"] = error
    return entry


def find_run_dirs(root: str | Path) -> list[Path]:
    """Every folder under ``root`` (``root`` included) that holds a config.toml, sorted."""
    root = Path(root)
    if not root.exists():
        raise UsageError(
            f"{root} does not exist; give the folder that holds your runs (default: runs/)"
        )
    if not root.is_dir():
        raise UsageError(f"{root} is not a folder; give the folder that holds your runs")
    found = []
    for folder, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        if "config.toml" in files:
            found.append(Path(folder))
            subdirs[:] = []  # a run directory holds no runs of its own
    return found


def list_runs(
    root: str | Path = "runs",
    *,
    rule: str | None = None,
    data: str | None = None,
    status: str | None = None,
) -> list[dict[str, Any]]:
    """Index entries of the runs under ``root``, oldest first, filtered when asked."""
    if status is not None and status not in STATUSES:
        raise unknown_choice("--status", status, STATUSES)
    entries = [describe_run(d) for d in find_run_dirs(root)]
    entries = [
        e
        for e in entries
        if (rule is None or e["rule"] == rule)
        and (data is None or e["data"] == data)
        and (status is None or e["status"] == status)
    ]
    return sorted(entries, key=lambda e: (e["started"], e["run_dir"]))
