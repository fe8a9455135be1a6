"""The terminal table of ``locallearn runs``."""

from __future__ import annotations

from typing import Any

from locallearn.report.table import format_table


def _acc(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def runs_table(entries: list[dict[str, Any]]) -> str:
    """One line per run index entry (``engine.index.describe_run``)."""
    headers = [
        "started (UTC)",
        "rule",
        "K",
        "model",
        "data",
        "seed",
        "epochs",
        "status",
        "best val",
        "best test",
        "run dir",
    ]
    rows = [
        [
            e["started"].replace("T", " ").rstrip("Z"),
            e["rule"] or "?",
            e["blocks"] if e["blocks"] is not None else "-",
            e["model"] or "?",
            e["data"] or "?",
            e["seed"] if e["seed"] is not None else "-",
            f"{e['epochs_done']}/{e['epochs_planned'] if e['epochs_planned'] else '?'}",
            e["status"],
            _acc(e["best_val_acc"]),
            _acc(e["best_test_acc"]),
            e["run_dir"],
        ]
        for e in entries
    ]
    return format_table(headers, rows)
