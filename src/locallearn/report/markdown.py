"""``locallearn report ... --format md``: the report's tables as GitHub-flavoured markdown,
for pasting into an issue or a paper draft. Charts are left out (markdown has no inline
images that every renderer shows); the HTML report has them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from locallearn.engine.io import atomic_write_text
from locallearn.report.collect import RunRecord, bp_reference, group_runs, machines
from locallearn.report.html import _acc, _mean_std, group_labels
from locallearn.report.table import format_bytes


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: set[int]) -> str:
    align = ["---:" if i in right else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(runs: Sequence[RunRecord], title: str | None = None) -> str:
    groups = group_runs(runs)
    labels = group_labels(groups)
    any_val = any(g.values("val_acc") for g in groups)
    headers = ["configuration", "seeds", *(["val acc"] if any_val else []), "test acc"]
    headers += ["act memory", "vs BP", "time/epoch", "params", "aux params", "recipe used"]
    rows = []
    for g, label in zip(groups, labels):
        r = g.first
        mem = g.mean_std("act_bytes_peak")
        bp = bp_reference(g, groups)
        ref = bp.mean_std("act_bytes_peak") if bp else None
        secs = g.mean_std("epoch_seconds")
        row = [label, ",".join(str(x.get("seed")) for x in g.runs)]
        row += [_mean_std(g, "val_acc")] if any_val else []
        row += [
            _mean_std(g, "test_acc"),
            format_bytes(mem[0]) if mem else "-",
            f"{mem[0] / ref[0]:.2f}x" if mem and ref and ref[0] else "-",
            f"{secs[0]:.3f}s" if secs else "-",
            f"{int(r.get('params')):,}" if r.get("params") is not None else "-",
            f"{int(r.get('aux_params')):,}" if r.get("aux_params") is not None else "-",
            r.recipe(),
        ]
        rows.append(row)
    right = set(range(2, len(headers) - 1))
    first = runs[0]
    parts = [
        f"## {title or 'locallearn report'}",
        f"{first.get('model')} on {first.get('data')}; {len(runs)} run(s). Accuracy: mean ± "
        "standard deviation across seeds; memory: act_bytes_peak; vs BP: ratio to the BP "
        "run on the same model, data and batch size.",
        md_table(headers, rows, right),
        "### Runs",
        md_table(
            ["run", "rule", "K", "seed", "status", "epochs", "best val", "best test", "command"],
            [
                [
                    r.name,
                    r.get("rule"),
                    r.index.get("blocks", "-"),
                    r.get("seed"),
                    r.status,
                    f"{r.index['epochs_done']}/{r.index['epochs_planned'] or '?'}",
                    _acc(r.index.get("best_val_acc")),
                    _acc(r.index.get("best_test_acc")),
                    f"`{r.command_line()}`" if r.command_line() else "-",
                ]
                for r in runs
            ],
            {2, 3, 6, 7},
        ),
    ]
    probed = [r for r in runs if r.probe]
    if probed:
        parts += [
            "### Probes",
            md_table(
                ["run", "network test acc", "probe at block ends"],
                [
                    [
                        r.name,
                        _acc((r.probe or {}).get("test_acc")),
                        "; ".join(
                            f"block {b.get('block')}: {_acc(b.get('test_acc'))}"
                            for b in (r.probe or {}).get("blocks_probe", [])
                        ),
                    ]
                    for r in probed
                ],
                {1},
            ),
        ]
    machine_rows = [
        [m.get("cpu") or "-", m.get("gpu") or "none", m.get("threads") or "-", m.get("torch")]
        + [m.get("locallearn"), ", ".join(m["runs"])]
        for m in machines(runs)
    ]
    parts += [
        "### Machine",
        md_table(["CPU", "GPU", "threads", "torch", "locallearn", "runs"], machine_rows, {2}),
    ]
    return "\n\n".join(parts) + "\n"


def write_markdown(runs: Sequence[RunRecord], path: str | Path, title: str | None = None) -> None:
    atomic_write_text(path, render_markdown(runs, title))
