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


def settings_text(summary: dict[str, Any]) -> str:
    """The training settings a run used, short: ``adam 0.001 b100 tanh``."""
    st = summary.get("settings") or {
        k: summary.get(k) for k in ("optimizer", "lr", "batch_size") if summary.get(k)
    }
    parts = [str(st.get("optimizer", "")), f"{st['lr']:g}" if st.get("lr") else ""]
    if st.get("optimizer") == "sgd" and st.get("momentum"):
        parts.append(f"m{st['momentum']:g}")
    if st.get("weight_decay"):
        parts.append(f"wd{st['weight_decay']:g}")
    if st.get("lr_schedule") not in (None, "constant"):
        parts.append(str(st["lr_schedule"]))
    if st.get("batch_size"):
        parts.append(f"b{st['batch_size']}")
    if st.get("activation"):
        parts.append(str(st["activation"]))
    return " ".join(p for p in parts if p) or "-"


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    """(mean, sample standard deviation or None for one value, n) over the values given."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return None, None, 0
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return mean, None, len(xs)
    return mean, (sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5, len(xs)


def _acc(values: Sequence[float | None]) -> str:
    mean, std, n = mean_std(values)
    if mean is None:
        return "-"
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


def group_by_rule(summaries: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Summaries grouped per rule (one group per seed set), in first-seen order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for s in summaries:
        groups.setdefault(s["rule"], []).append(s)
    return list(groups.values())


def summary_table(summaries: Sequence[dict[str, Any]]) -> str:
    """One row per rule: the comparison table that ``compare`` prints.

    Several runs of one rule (``--seeds``) make one row of mean ± standard deviation over
    the seeds. "vs BP" is act_bytes_peak divided by the BP run's, when a BP run is in the
    list. "settings" are the optimiser, lr, batch size and activation each rule trained with.
    """
    groups = group_by_rule(summaries)
    bp = next((g[0] for g in groups if g[0]["rule"] == "bp"), None)
    # Regression runs (test_acc None) show R^2 and RMSE in the accuracy columns' place.
    regression = any(s.get("test_acc") is None and "test_r2" in s for s in summaries)
    scores = (
        ["test R2", "train R2", "test RMSE"] if regression else ["test acc", "val acc", "train acc"]
    )
    headers = [
        "rule",
        "K",
        *scores,
        "act memory",
        "vs BP",
        "time/epoch",
        "eval/epoch",
        "params",
        "aux params",
        "seeds",
        "settings",
    ]
    rows = []
    for group in groups:
        s = group[0]
        ratio = (
            f"{s['act_bytes_peak'] / bp['act_bytes_peak']:.2f}x"
            if bp and bp["act_bytes_peak"]
            else "-"
        )
        epoch_s, _, _ = mean_std([g["epoch_seconds"] for g in group])
        eval_s, _, _ = mean_std([g.get("eval_seconds") for g in group])
        rows.append(
            [
                s["rule"],
                s["blocks"],
                *(
                    [_acc([g.get(k) for g in group]) for k in ("test_r2", "train_r2", "test_rmse")]
                    if regression
                    else [
                        _acc([g.get(k) for g in group])
                        for k in ("test_acc", "val_acc", "train_acc")
                    ]
                ),
                format_bytes(s["act_bytes_peak"]),
                ratio,
                f"{epoch_s:.3f}s",
                "-" if eval_s is None else f"{eval_s:.3f}s",
                f"{s['params']:,}",
                f"{s['aux_params']:,}",
                ",".join(str(g["seed"]) for g in group),
                settings_text(s),
            ]
        )
    return format_table(headers, rows)
