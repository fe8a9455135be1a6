"""The comparison figure: learning curves beside activation memory."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from locallearn.engine.io import atomic_write_bytes


def plot_comparison(summaries: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Left: held-out (validation, else test) accuracy per epoch for each rule, the mean over
    seeds with the min-max band when a rule ran on several. Right: act_bytes_peak per rule, with the
    ratio to BP written on each bar. Written atomically as PNG (or any matplotlib format)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from locallearn.report.table import group_by_rule, mean_std

    fig, (curves, bars) = plt.subplots(1, 2, figsize=(11, 4.2))
    # Regression runs (test_acc None) plot R^2 where classification plots accuracy.
    regression = summaries[0].get("test_acc") is None and "test_r2_curve" in summaries[0]
    final = "test_r2" if regression else "test_acc"
    groups = group_by_rule(summaries)
    ylabel = "test R^2" if regression else "test accuracy"
    for i, group in enumerate(groups):
        curve_key = held_out_curve(group[0], "r2" if regression else "acc")
        if curve_key.startswith("val_"):
            ylabel = "validation R^2" if regression else "validation accuracy"
        per_seed = [s.get(curve_key) or [] for s in group]
        length = max(len(c) for c in per_seed)
        epochs, means, lows, highs = [], [], [], []
        for e in range(length):
            values = [c[e] for c in per_seed if e < len(c) and c[e] is not None]
            if not values:  # --eval-every: epochs without an evaluation
                continue
            epochs.append(e + 1)
            means.append(sum(values) / len(values))
            lows.append(min(values))
            highs.append(max(values))
        test, std, n = mean_std([s[final] for s in group])
        label = f"{group[0]['rule']} (K={group[0]['blocks']}): test {test:.3f}"
        label += f" ± {std:.3f} (n={n})" if std is not None else ""
        curves.plot(
            epochs, means, label=label, color=f"C{i}", marker="." if len(epochs) < 3 else None
        )
        if len(group) > 1:  # the spread over seeds: min to max per epoch
            curves.fill_between(epochs, lows, highs, color=f"C{i}", alpha=0.2)
    first = summaries[0]
    seeds = sorted({s["seed"] for s in summaries})
    curves.set(
        xlabel="epoch",
        ylabel=ylabel + (" (mean, band: min-max over seeds)" if len(seeds) > 1 else ""),
        title=f"{first['model']} on {first['data']}, seed{'s' if len(seeds) > 1 else ''} "
        + ",".join(map(str, seeds)),
    )
    curves.grid(alpha=0.3)
    curves.legend(fontsize=8)
    summaries = [g[0] for g in groups]

    names = [s["rule"] for s in summaries]
    kib = [s["act_bytes_peak"] / 1024 for s in summaries]
    drawn = bars.bar(names, kib, color=[f"C{i}" for i in range(len(names))])
    bp = next((s["act_bytes_peak"] for s in summaries if s["rule"] == "bp"), None)
    if bp:
        bars.bar_label(
            drawn, labels=[f"{s['act_bytes_peak'] / bp:.2f}x BP" for s in summaries], fontsize=8
        )
    bars.set(
        ylabel="act_bytes_peak (KiB)",
        title=f"activation memory per step (batch {first['batch_size']})",
    )
    bars.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    suffix = Path(path).suffix.lstrip(".") or "png"
    buffer = io.BytesIO()
    fig.savefig(buffer, format=suffix, dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def plot_staged(summary: dict[str, Any], path: str | Path) -> None:
    """GBNN: the test score after each boosting round (``staged_test_score``), written
    atomically as PNG (or any matplotlib format)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = summary["staged_test_score"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(range(1, len(scores) + 1), scores, marker="." if len(scores) < 60 else None)
    metric = "R^2" if summary.get("staged_metric") == "r2" else "accuracy"
    ax.set(
        xlabel="round",
        ylabel=f"test {metric}",
        title=f"GBNN {summary.get('gb_rounds')} x {summary.get('gb_units')} on "
        f"{summary['data']}, seed {summary['seed']}",
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    suffix = Path(path).suffix.lstrip(".") or "png"
    buffer = io.BytesIO()
    fig.savefig(buffer, format=suffix, dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def held_out_curve(summary: dict[str, Any], metric: str = "acc") -> str:
    """The summary key of the per-epoch held-out accuracies (``metric`` "r2": R^2 of a
    regression run): validation, or (runs from before --val-split, and --val-split 0) test."""
    curve = summary.get(f"val_{metric}_curve")
    if curve and any(v is not None for v in curve):
        return f"val_{metric}_curve"
    return f"test_{metric}_curve"
