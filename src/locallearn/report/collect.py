"""What a report shows, read from run directories: runs, groups across seeds, machines.

Each run is read from its own files (config.toml, summary.json, metrics.jsonl, command.json,
probe.json), so a report needs no training code and works on runs still in progress. Runs
that differ only in their seed form one group: the comparison table gives the group's mean
and standard deviation across seeds.
"""

from __future__ import annotations

import json
import math
import shlex
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from locallearn.engine.index import describe_run, find_run_dirs, read_metrics, read_summary
from locallearn.engine.provenance import read_command
from locallearn.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# Fields that do not change what is trained: runs differing only in these are one group.
_NOT_RECIPE = {"seed", "data_dir", "threads", "log", "device"}
# Optimisation fields shown as "recipe used", in this order.
_RECIPE_FIELDS = ("optimizer", "lr", "lr_schedule", "batch_size", "epochs", "weight_decay")
# Fields the recipe text names on their own (or that have their own table column).
_SHOWN_APART = {
    *_RECIPE_FIELDS,
    *_NOT_RECIPE,
    "rule",
    "model",
    "data",
    "blocks",
    "momentum",
    "recipe_from",
    "train_limit",
}


@dataclass
class RunRecord:
    """One run directory, as a report reads it."""

    run_dir: Path
    name: str  # unique, short: the path below the common parent of all runs
    config: dict[str, Any]
    config_text: str
    summary: dict[str, Any] | None
    metrics: list[dict[str, Any]]
    command: dict[str, Any] | None
    probe: dict[str, Any] | None
    index: dict[str, Any]

    @property
    def status(self) -> str:
        return str(self.index["status"])

    def get(self, key: str, default: Any = None) -> Any:
        """A summary value, else a config value."""
        if self.summary is not None and key in self.summary:
            return self.summary[key]
        return self.config.get(key, default)

    def curve(self, key: str) -> list[tuple[int, float]]:
        """(epoch, value) of one metric over the run's ok epochs."""
        return [
            (int(r["epoch"]), float(r[key]))
            for r in self.metrics
            if "epoch" in r
            and isinstance(r.get(key), int | float)
            and r.get("status", "ok") == "ok"
            and math.isfinite(float(r[key]))
        ]

    @property
    def accuracy_key(self) -> str:
        """val_acc where the run measured it (issue 11's validation split), else test_acc."""
        return "val_acc" if any("val_acc" in r for r in self.metrics) else "test_acc"

    def command_line(self) -> str | None:
        if not self.command or not self.command.get("argv"):
            return None
        return shlex.join(str(a) for a in self.command["argv"])

    def resumed_lines(self) -> list[str]:
        out = []
        for entry in (self.command or {}).get("resumed", []):
            if entry.get("argv"):
                out.append(f"{entry.get('at', '?')}: {shlex.join(map(str, entry['argv']))}")
        return out

    def recipe(self) -> str:
        """The optimisation settings and rule options the run used, in words."""
        c = self.config
        parts = []
        parts.append(f"{c.get('optimizer', 'adam')} lr {c.get('lr', 1e-2):g}")
        if c.get("lr_schedule", "constant") != "constant":
            parts.append(str(c["lr_schedule"]))
        if c.get("optimizer") == "sgd":
            parts.append(f"momentum {c.get('momentum', 0.9):g}")
        if c.get("weight_decay"):
            parts.append(f"wd {c['weight_decay']:g}")
        parts.append(f"batch {c.get('batch_size', 100)}")
        parts.append(f"{c.get('epochs', '?')} epochs")
        extras = {k: v for k, v in c.items() if k not in _SHOWN_APART and v not in (None, False)}
        if c.get("train_limit"):
            parts.append(f"train limit {c['train_limit']}")
        if extras.get("eval_every") == 1:
            del extras["eval_every"]  # the default: every epoch
        parts += [f"{k.replace('_', '-')} {_short(v)}" for k, v in sorted(extras.items())]
        # the recipe that filled the settings the user left unset (issue 11's recipe_from)
        source = f"{c['recipe_from']}: " if c.get("recipe_from") else ""
        return source + ", ".join(parts)

    def group_key(self) -> tuple[Any, ...]:
        items = sorted((k, json.dumps(v)) for k, v in self.config.items() if k not in _NOT_RECIPE)
        return (self.get("blocks"), *items)


def _short(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    if value is True:
        return "on"
    return str(value)


@dataclass
class Group:
    """Runs of one configuration that differ only in their seed."""

    runs: list[RunRecord] = field(default_factory=list)

    @property
    def first(self) -> RunRecord:
        return self.runs[0]

    def values(self, key: str) -> list[float]:
        out = []
        for r in self.runs:
            v = (r.summary or {}).get(key)
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                out.append(float(v))
        return out

    def mean_std(self, key: str) -> tuple[float, float, int] | None:
        """(mean, sample standard deviation, n) over the group's finished runs."""
        vals = self.values(key)
        if not vals:
            return None
        return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals)


def _run_name(run_dir: Path, parent: Path | None) -> str:
    if parent is not None:
        try:
            rel = run_dir.resolve().relative_to(parent)
            if str(rel) != ".":
                return str(rel)
        except ValueError:
            pass
    return run_dir.name or str(run_dir)


def read_run(run_dir: Path, name: str | None = None) -> RunRecord:
    config_path = run_dir / "config.toml"
    text = config_path.read_text()
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"{config_path} is not valid TOML: {err}")
    probe = None
    try:
        probe = json.loads((run_dir / "probe.json").read_text())
    except (OSError, ValueError):
        pass
    return RunRecord(
        run_dir=run_dir,
        name=name or run_dir.name,
        config=config,
        config_text=text,
        summary=read_summary(run_dir),
        metrics=read_metrics(run_dir),
        command=read_command(run_dir),
        probe=probe,
        index=describe_run(run_dir),
    )


def collect_runs(sources: Sequence[str | Path]) -> list[RunRecord]:
    """The runs named by ``sources``: run directories, or folders holding runs (a compare
    folder, runs/), in the order given; a run named twice is read once."""
    dirs: list[Path] = []
    for source in sources:
        path = Path(source)
        found = find_run_dirs(path)
        if not found:
            raise UsageError(
                f"{path} holds no run (no config.toml in it or below); give a run directory "
                "or a folder of runs, e.g. the --out of `locallearn compare`"
            )
        for d in found:
            if d.resolve() not in {x.resolve() for x in dirs}:
                dirs.append(d)
    resolved = [d.resolve() for d in dirs]
    parent = Path(_common_parent(resolved)) if len(resolved) > 1 else None
    if parent is None and resolved:
        parent = resolved[0].parent
    return [read_run(d, _run_name(d, parent)) for d in dirs]


def _common_parent(paths: list[Path]) -> str:
    import os

    return os.path.commonpath([str(p) for p in paths])


def group_runs(runs: Sequence[RunRecord]) -> list[Group]:
    """The finished runs, grouped by configuration; a run without a result (interrupted,
    running, diverged) has no row in the comparison (the runs table lists it)."""
    groups: dict[tuple[Any, ...], Group] = {}
    for run in runs:
        if run.status != "finished" or run.summary is None:
            continue
        groups.setdefault(run.group_key(), Group()).runs.append(run)
    return list(groups.values())


def bp_reference(group: Group, groups: Sequence[Group]) -> Group | None:
    """The BP group a group's memory is compared with: same model, data and batch size."""
    c = group.first.config
    for g in groups:
        o = g.first.config
        if (
            o.get("rule") == "bp"
            and o.get("model") == c.get("model")
            and o.get("data") == c.get("data")
            and o.get("batch_size", 100) == c.get("batch_size", 100)
            and g.values("act_bytes_peak")
        ):
            return g
    return None


def machines(runs: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """The distinct machines the runs were trained on, each with the runs that used it."""
    seen: dict[str, dict[str, Any]] = {}
    for run in runs:
        m = (run.command or {}).get("machine") or {}
        s = run.summary or {}
        info = {
            "cpu": m.get("cpu"),
            "cpu_count": m.get("cpu_count"),
            "gpu": m.get("gpu"),
            "device": s.get("device", run.config.get("device", "cpu")),
            "threads": run.config.get("threads") or m.get("threads"),
            "torch": s.get("torch_version") or m.get("torch"),
            "locallearn": s.get("locallearn_version") or m.get("locallearn"),
            "python": m.get("python"),
            "platform": m.get("platform"),
        }
        key = json.dumps(info, sort_keys=True)
        seen.setdefault(key, {**info, "runs": []})["runs"].append(run.name)
    return list(seen.values())
