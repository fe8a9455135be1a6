"""Figures of probe reports: probe accuracy along the network, and neural collapse."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from locallearn.engine.io import atomic_write_bytes


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> None:
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def _label(report: dict[str, Any]) -> str:
    return f"{report['rule']} (K={report['blocks']}, seed {report['seed']})"


def _accuracy_axes(ax: Any, reports: Sequence[dict[str, Any]]) -> None:
    for i, r in enumerate(reports):
        xs = [u["boundary"] for u in r["units"]]
        ys = [u["test_acc"] for u in r["units"]]
        color = f"C{i}"
        ax.plot(xs, ys, marker="o", color=color, label=f"{_label(r)}: net {r['test_acc']:.3f}")
        ends = [u for u in r["units"] if u["block_end"] is not None]
        ax.scatter(
            [u["boundary"] for u in ends],
            [u["test_acc"] for u in ends],
            s=140,
            facecolors="none",
            edgecolors=color,
            linewidths=1.5,
        )
    first = reports[0]
    ax.set_xticks([u["boundary"] for u in first["units"]])
    ax.set_xticklabels([u["after"] for u in first["units"]], rotation=30, fontsize=8)
    ax.set(
        ylabel="linear-probe test accuracy",
        title=f"{first['model']} on {first['data']}: probes at each unit (rings: block ends)",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_probe(report: dict[str, Any], run_dir: str | Path) -> list[Path]:
    """Write probe_accuracy.png and, when collapse was measured, probe_collapse.png."""
    plt = _pyplot()
    run_dir = Path(run_dir)
    written = []
    fig, ax = plt.subplots(figsize=(7, 4.2))
    _accuracy_axes(ax, [report])
    fig.tight_layout()
    _save(fig, run_dir / "probe_accuracy.png")
    written.append(run_dir / "probe_accuracy.png")
    if "skipped" not in report["collapse"]:
        plot_collapse([report], run_dir / "probe_collapse.png")
        written.append(run_dir / "probe_collapse.png")
    return written


NC_BARS = (
    ("nc1", "NC1  Tr(Sw Sb+)/C"),
    ("nc2_equinorm", "NC2 equinorm"),
    ("nc2_equiangle", "NC2 |cos + 1/(C-1)|"),
    ("nc3", "NC3 ||W - M||^2"),
    ("nc4", "NC4 net vs NCC"),
)


def _collapse_axes(ax: Any, reports: Sequence[dict[str, Any]]) -> None:
    # Log scale: collapse drives every metric towards 0, and NC1 spans decades.
    width = 0.8 / max(1, len(reports))
    for i, r in enumerate(reports):
        c = r["collapse"]
        if "skipped" in c:
            continue
        values = [c.get(k) if c.get(k) is not None else float("nan") for k, _ in NC_BARS]
        xs = [k + (i - (len(reports) - 1) / 2) * width for k in range(len(NC_BARS))]
        bars = ax.bar(xs, values, width=width, color=f"C{i}", label=_label(r))
        ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], fontsize=7)
    ax.set_xticks(range(len(NC_BARS)))
    ax.set_xticklabels([name for _, name in NC_BARS], fontsize=8, rotation=15)
    ax.set_yscale("log")
    first = reports[0]
    ax.set(
        ylabel="value (0 = full collapse)",
        title=f"neural collapse of the last features ({first['data']}, train)",
    )
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)


def plot_collapse(reports: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Bars of NC1-NC4, one colour per report."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    _collapse_axes(ax, reports)
    fig.tight_layout()
    _save(fig, path)


def plot_probe_comparison(reports: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Probe accuracy of several runs of one model on one axis, beside their collapse bars."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.4))
    _accuracy_axes(left, reports)
    _collapse_axes(right, reports)
    fig.tight_layout()
    _save(fig, path)
