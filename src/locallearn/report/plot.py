"""The comparison figure: learning curves beside activation memory."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from locallearn.engine.io import atomic_write_bytes


def plot_comparison(summaries: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Left: test accuracy per epoch for each rule. Right: act_bytes_peak per rule, with the
    ratio to BP written on each bar. Written atomically as PNG (or any matplotlib format)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (curves, bars) = plt.subplots(1, 2, figsize=(11, 4.2))
    regression = summaries[0].get("test_acc") is None and "test_r2_curve" in summaries[0]
    key, final = ("test_r2_curve", "test_r2") if regression else ("test_acc_curve", "test_acc")
    for s in summaries:
        epochs = range(1, len(s[key]) + 1)
        label = f"{s['rule']} (K={s['blocks']}): {s[final]:.3f}"
        curves.plot(epochs, s[key], label=label)
    first = summaries[0]
    curves.set(
        xlabel="epoch",
        ylabel="test R^2" if regression else "test accuracy",
        title=f"{first['model']} on {first['data']}, seed {first['seed']}",
    )
    curves.grid(alpha=0.3)
    curves.legend(fontsize=8)

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
