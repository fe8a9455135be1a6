"""Plain-text tables for the terminal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def format_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell; numbers right-aligned, text left-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    numeric = [all(_is_number(r[i]) for r in cells) and bool(cells) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in cells)])


def _is_number(text: str) -> bool:
    head = text.split(" ")[0].rstrip("x%s")
    try:
        float(head)
    except ValueError:
        return text == "-"
    return True


def summary_table(summaries: Sequence[dict[str, Any]]) -> str:
    """One row per run: the comparison table that ``compare`` prints.

    "vs BP" is act_bytes_peak divided by the BP run's, when a BP run is in the list.
    """
    bp = next((s for s in summaries if s["rule"] == "bp"), None)
    # Regression runs (test_acc None) show R^2 in the accuracy columns' place, plus RMSE.
    regression = any(s.get("test_acc") is None and "test_r2" in s for s in summaries)
    scores = ["test R2", "train R2", "test RMSE"] if regression else ["test acc", "train acc"]
    headers = [
        "rule",
        "K",
        *scores,
        "act memory",
        "vs BP",
        "time/epoch",
        "params",
        "aux params",
    ]
    rows = []
    for s in summaries:
        ratio = (
            f"{s['act_bytes_peak'] / bp['act_bytes_peak']:.2f}x"
            if bp and bp["act_bytes_peak"]
            else "-"
        )
        rows.append(
            [
                s["rule"],
                s["blocks"],
                *_score_cells(s, regression),
                format_bytes(s["act_bytes_peak"]),
                ratio,
                f"{s['epoch_seconds']:.3f}s",
                f"{s['params']:,}",
                f"{s['aux_params']:,}",
            ]
        )
    return format_table(headers, rows)


def _score_cells(s: dict[str, Any], regression: bool) -> list[str]:
    def num(value: float | None, spec: str = ".4f") -> str:
        return "-" if value is None else format(value, spec)

    if regression:
        return [num(s.get("test_r2")), num(s.get("train_r2")), num(s.get("test_rmse"), ".4g")]
    return [num(s["test_acc"]), num(s["train_acc"])]
