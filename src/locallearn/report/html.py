"""``locallearn report ... --out report.html``: one self-contained HTML file.

Everything is inline: the CSS, the charts (SVG text) and the data; the file loads nothing, runs
no script and works offline or as an e-mail attachment. Tables have a caption and header
cells with scopes; every chart has an accessible name and a description that states its
numbers; text colours keep a contrast of at least 7:1 on white. Wide tables scroll sideways
inside their own box on a phone-width window instead of widening the page.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from locallearn import __version__
from locallearn.engine.io import atomic_write_text
from locallearn.report import svg
from locallearn.report.collect import Group, RunRecord, bp_reference, group_runs, machines
from locallearn.report.table import format_bytes

CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: #1a1a1a; background: #ffffff; }
main { max-width: 1400px; margin: 0 auto; padding: 16px; }
h1 { font-size: 1.5rem; margin: 0.2em 0; }
h2 { font-size: 1.2rem; margin: 1.6em 0 0.4em; border-bottom: 2px solid #1a1a1a; }
h3 { font-size: 1rem; margin: 1em 0 0.3em; }
p.meta, .muted { color: #474747; }
.scroll { overflow-x: auto; -webkit-overflow-scrolling: touch; border: 1px solid #c8c8c8; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
caption { text-align: left; font-weight: 600; padding: 6px 8px; caption-side: top; }
th, td { padding: 5px 8px; border-bottom: 1px solid #dcdcdc; text-align: left;
  vertical-align: top; white-space: nowrap; }
thead th { background: #eef1f5; border-bottom: 2px solid #8a8a8a; }
tbody th { font-weight: 600; }
td.num { text-align: right; }
td.wrap { white-space: normal; min-width: 14em; }
tbody th, thead th:first-child { position: sticky; left: 0; z-index: 1; }
tbody th { background: #ffffff; box-shadow: 1px 0 0 #dcdcdc; }
p.note { font-size: 0.9rem; color: #474747; margin: 4px 0; }
.status-finished { color: #05642c; } .status-running { color: #0b4f8a; }
.status-interrupted { color: #7a4a00; } .status-diverged { color: #a30d0d; font-weight: 600; }
.charts { display: grid; grid-template-columns: 1fr; gap: 16px; }
@media (min-width: 900px) { .charts { grid-template-columns: 1fr 1fr; } }
figure { margin: 0; }
figure.single { max-width: 760px; }
figcaption { font-size: 0.9rem; color: #474747; }
svg.chart { width: 100%; height: auto; display: block; }
ul.legend { list-style: none; padding: 0; margin: 4px 0; display: flex; flex-wrap: wrap;
  gap: 4px 14px; font-size: 0.9rem; }
ul.legend svg { width: 28px; height: 10px; vertical-align: middle; }
pre { background: #f4f4f4; border: 1px solid #d0d0d0; padding: 8px; overflow-x: auto;
  font-size: 0.85rem; white-space: pre; }
code { font-size: 0.9em; }
details { border: 1px solid #d0d0d0; padding: 4px 10px; margin: 6px 0; }
summary { cursor: pointer; font-weight: 600; }
@media (max-width: 600px) { main { padding: 8px; } body { font-size: 14px; }
  th, td { padding: 4px 6px; }
  /* a chart drawn 520 units wide shrinks to ~370 px: larger text keeps it legible */
  svg.chart text { font-size: 18px; } }
"""


def _acc(value: Any) -> str:
    return "-" if not isinstance(value, int | float) else f"{value:.4f}"


def _mean_std(group: Group, key: str) -> str:
    ms = group.mean_std(key)
    if ms is None:
        return "-"
    mean, std, n = ms
    return f"{mean:.4f} ± {std:.4f} (n={n})" if n > 1 else f"{mean:.4f}"


def _th(text: str, scope: str = "col") -> str:
    return f'<th scope="{scope}">{escape(text)}</th>'


def _td(text: Any, cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f"<td{c}>{escape(str(text))}</td>"


def _table(
    caption: str, headers: Sequence[str], rows: Sequence[str], ident: str, note: str = ""
) -> str:
    """A table in its own sideways-scrolling box; ``note`` explains it below, outside the
    box (a long caption would scroll away with a wide table)."""
    head = "".join(_th(h) for h in headers)
    return (
        f'<div class="scroll"><table id="{ident}"><caption>{escape(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
        + (f'<p class="note">{escape(note)}</p>' if note else "")
    )


def _group_label(group: Group) -> str:
    r = group.first
    return f"{r.get('rule', '?')} K={r.get('blocks', '?')}"


def group_labels(groups: Sequence[Group]) -> list[str]:
    """Short unique labels: rule and K, with the model/data when those differ, else #n."""
    labels = [_group_label(g) for g in groups]
    if len({(g.first.get("model"), g.first.get("data")) for g in groups}) > 1:
        labels = [
            f"{lab} {g.first.get('model')}/{g.first.get('data')}" for lab, g in zip(labels, groups)
        ]
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        seen[lab] = seen.get(lab, 0) + 1
        out.append(lab if seen[lab] == 1 else f"{lab} #{seen[lab]}")
    return out


def comparison_table(groups: Sequence[Group], labels: Sequence[str], unfinished: int) -> str:
    if not groups:
        return '<p class="note">No run has finished yet: the runs table lists them.</p>'
    any_val = any(g.values("val_acc") for g in groups)
    headers = ["rule", "K", "model", "data", "seeds"]
    headers += ["val acc"] if any_val else []
    headers += ["test acc", "act memory", "vs BP", "time/epoch", "params", "aux params"]
    headers += ["recipe used"]
    rows = []
    for g, label in zip(groups, labels):
        r = g.first
        bp = bp_reference(g, groups)
        mem = g.mean_std("act_bytes_peak")
        ratio = "-"
        if bp is not None and mem is not None:
            ref = bp.mean_std("act_bytes_peak")
            if ref and ref[0]:
                ratio = f"{mem[0] / ref[0]:.2f}x"
        secs = g.mean_std("epoch_seconds")
        seeds = ",".join(str(x.get("seed")) for x in g.runs)
        cells = [
            f'<th scope="row" title="{escape(label)}">{escape(str(r.get("rule", "?")))}</th>',
            _td(r.get("blocks", "-"), "num"),
            _td(r.get("model", "?")),
            _td(r.get("data", "?")),
            _td(seeds),
        ]
        if any_val:
            cells.append(_td(_mean_std(g, "val_acc"), "num"))
        cells += [
            _td(_mean_std(g, "test_acc"), "num"),
            _td(format_bytes(mem[0]) if mem else "-", "num"),
            _td(ratio, "num"),
            _td(f"{secs[0]:.3f}s" if secs else "-", "num"),
            _td(f"{int(r.get('params')):,}" if r.get("params") is not None else "-", "num"),
            _td(f"{int(r.get('aux_params')):,}" if r.get("aux_params") is not None else "-", "num"),
            _td(r.recipe(), "wrap"),
        ]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    note = (
        "One row per configuration (runs that differ only in their seed). Accuracy: the mean "
        "± standard deviation across seeds (n finished runs). act memory: act_bytes_peak, "
        "the exact peak of bytes saved for backward in a training step; vs BP: its ratio to "
        "the BP run on the same model, data and batch size. time/epoch: training only."
    )
    if unfinished:
        note += (
            f" {unfinished} run(s) without a result (interrupted, running or diverged) are "
            "listed under Runs only."
        )
    return _table("Comparison of configurations", headers, rows, "comparison", note)


def runs_table(runs: Sequence[RunRecord]) -> str:
    headers = [
        "run",
        "rule",
        "K",
        "model",
        "data",
        "seed",
        "status",
        "epochs",
        "best val acc",
        "best test acc",
        "final test acc",
        "act memory",
        "time/epoch",
        "started (UTC)",
    ]
    rows = []
    for i, r in enumerate(runs):
        e = r.index
        s = r.summary or {}
        cells = [
            f'<th scope="row"><a href="#detail-{i}">{escape(r.name)}</a></th>',
            _td(r.get("rule", "?")),
            _td(e.get("blocks") if e.get("blocks") is not None else "-", "num"),
            _td(r.get("model", "?")),
            _td(r.get("data", "?")),
            _td(r.get("seed", "-"), "num"),
            f'<td class="status-{escape(r.status)}">{escape(r.status)}</td>',
            _td(f"{e['epochs_done']}/{e['epochs_planned'] or '?'}", "num"),
            _td(_acc(e.get("best_val_acc")), "num"),
            _td(_acc(e.get("best_test_acc")), "num"),
            _td(_acc(s.get("test_acc")), "num"),
            _td(format_bytes(s["act_bytes_peak"]) if "act_bytes_peak" in s else "-", "num"),
            _td(f"{s['epoch_seconds']:.3f}s" if "epoch_seconds" in s else "-", "num"),
            _td(str(e.get("started", "")).replace("T", " ").rstrip("Z")),
        ]
        rows.append(f'<tr class="run" data-run="{escape(r.name)}">{"".join(cells)}</tr>')
    return _table("Runs, one row per run directory", headers, rows, "runs")


def _legend(labels: Sequence[str], indices: Sequence[int]) -> str:
    items = []
    for label, i in zip(labels, indices):
        d = f' stroke-dasharray="{svg.dash(i)}"' if svg.dash(i) else ""
        items.append(
            '<li><svg viewBox="0 0 28 10" aria-hidden="true"><line x1="0" y1="5" x2="28" y2="5" '
            f'stroke="{svg.color(i)}" stroke-width="3"{d}/></svg> {escape(label)}</li>'
        )
    return f'<ul class="legend">{"".join(items)}</ul>'


def _curve_words(series: Sequence[svg.Series]) -> str:
    parts = []
    for s in series:
        if s.points:
            first, last = s.points[0], s.points[-1]
            best = max(p[1] for p in s.points)
            parts.append(
                f"{s.label}: {first[1]:.4g} at epoch {first[0]:g}, {last[1]:.4g} at epoch "
                f"{last[0]:g}, best {best:.4g}"
            )
    return "; ".join(parts) or "no epochs recorded"


def curves_section(runs: Sequence[RunRecord]) -> str:
    key = "val_acc" if any(r.accuracy_key == "val_acc" for r in runs) else "test_acc"
    acc_name = "validation accuracy" if key == "val_acc" else "test accuracy"
    acc = [svg.Series(r.name, r.curve(key), i) for i, r in enumerate(runs)]
    loss = [svg.Series(r.name, r.curve("train_loss"), i) for i, r in enumerate(runs)]
    legend = _legend([r.name for r in runs], range(len(runs)))
    figs = []
    for ident, series, name in (
        ("curve-acc", acc, acc_name),
        ("curve-loss", loss, "training loss (last block)"),
    ):
        title = f"{name} per epoch"
        chart = svg.line_chart(
            series,
            title=title,
            xlabel="epoch",
            ylabel=name,
            ident=ident,
            desc=f"Line chart of {name} per epoch, one line per run. {_curve_words(series)}.",
        )
        figs.append(f"<figure>{chart}<figcaption>{escape(title)}</figcaption></figure>")
    return (
        '<section aria-labelledby="h-curves"><h2 id="h-curves">Learning curves</h2>'
        f'{legend}<div class="charts">{"".join(figs)}</div></section>'
    )


def memory_section(groups: Sequence[Group], labels: Sequence[str]) -> str:
    bars, texts = [], []
    for gi, (g, label) in enumerate(zip(groups, labels)):
        blocks = (g.first.summary or {}).get("block_act_bytes") or []
        for k, b in enumerate(blocks, start=1):
            bars.append((f"{label} · block {k}", float(b) / 1024, gi))
            texts.append(format_bytes(b))
    if not bars:
        return ""
    words = "; ".join(f"{b[0]}: {t}" for b, t in zip(bars, texts))
    chart = svg.bar_chart(
        bars,
        title="activation memory per block",
        xlabel="KiB saved for backward (block_act_bytes)",
        ident="mem-blocks",
        desc=f"Bar chart of each block's peak activation memory. {words}.",
        value_text=texts,
    )
    return (
        '<section aria-labelledby="h-memory"><h2 id="h-memory">Memory per block</h2>'
        '<p class="muted">The peak, within a training step, of the bytes saved for backward '
        "while each block (with its head and loss) runs; the largest is the run's "
        "act_bytes_peak.</p>"
        f'<figure class="single">{chart}<figcaption>activation memory per block, first seed of '
        "each configuration</figcaption></figure></section>"
    )


def probe_section(runs: Sequence[RunRecord]) -> str:
    probed = [r for r in runs if r.probe]
    if not probed:
        return ""
    rows = []
    for r in probed:
        p = r.probe or {}
        ends = "; ".join(
            f"block {b.get('block')}: {_acc(b.get('test_acc'))}" for b in p.get("blocks_probe", [])
        )
        c = p.get("collapse") or {}
        nc1 = f"{c['nc1']:.4g}" if isinstance(c.get("nc1"), int | float) else "-"
        rows.append(
            "<tr>"
            + f'<th scope="row">{escape(r.name)}</th>'
            + _td(_acc(p.get("test_acc")), "num")
            + _td(_acc(p.get("input_probe_acc")), "num")
            + _td(ends or "-", "wrap")
            + _td(nc1, "num")
            + "</tr>"
        )
    series = [
        svg.Series(
            r.name,
            [
                (float(u["boundary"]), float(u["test_acc"]))
                for u in (r.probe or {}).get("units", [])
            ],
            runs.index(r),
        )
        for r in probed
    ]
    chart = svg.line_chart(
        series,
        title="linear probe test accuracy per unit boundary",
        xlabel="unit boundary (0 = input)",
        ylabel="probe test accuracy",
        ident="probe-units",
        desc="Line chart of linear-probe test accuracy at every unit boundary, one line per "
        f"probed run. {_curve_words(series)}.",
    )
    table = _table(
        "Probes (probe.json)",
        ["run", "network test acc", "probe on input", "probe at block ends", "NC1"],
        rows,
        "probes",
        "Linear probe test accuracy at the input and at each block end; NC1: within-class "
        "variability of the last linear layer's input (neural collapse; lower is more "
        "collapsed). Written by locallearn probe RUN_DIR.",
    )
    return (
        '<section aria-labelledby="h-probes"><h2 id="h-probes">Probes</h2>'
        f"{table}{_legend([r.name for r in probed], [runs.index(r) for r in probed])}"
        f'<figure class="single">{chart}<figcaption>linear probes per unit boundary'
        "</figcaption></figure>"
        "</section>"
    )


def details_section(runs: Sequence[RunRecord]) -> str:
    parts = []
    for i, r in enumerate(runs):
        command = r.command_line()
        via = (r.command or {}).get("via")
        if command:
            cwd = escape(str((r.command or {}).get("cwd")))
            cmd = (
                f"<pre><code>{escape(command)}</code></pre>"
                f'<p class="muted">run from {cwd} ({escape(str(via))})</p>'
            )
        else:
            cmd = '<p class="muted">no command recorded (run made before command.json existed)</p>'
        resumed = r.resumed_lines()
        res = (
            "<h3>Continued by</h3><pre><code>" + escape("\n".join(resumed)) + "</code></pre>"
            if resumed
            else ""
        )
        diverged = r.index.get("diverged")
        div = (
            f'<p class="status-diverged">diverged at epoch {escape(str(diverged.get("epoch")))}'
            f" (block {escape(str(diverged.get('block')))}, lr {escape(str(diverged.get('lr')))}):"
            f" {escape(str(diverged.get('message')))}</p>"
            if diverged
            else ""
        )
        parts.append(
            f'<details id="detail-{i}"><summary>{escape(r.name)} '
            f'<span class="muted">({escape(str(r.run_dir))}, {escape(r.status)})</span></summary>'
            f"{div}<h3>Command</h3>{cmd}{res}<h3>config.toml</h3>"
            f"<pre><code>{escape(r.config_text)}</code></pre></details>"
        )
    return (
        '<section aria-labelledby="h-details"><h2 id="h-details">Commands and configuration'
        "</h2>" + "".join(parts) + "</section>"
    )


def machine_section(runs: Sequence[RunRecord]) -> str:
    rows = []
    for m in machines(runs):
        rows.append(
            "<tr>"
            + _td(m.get("cpu") or "-", "wrap")
            + _td(m.get("cpu_count") or "-", "num")
            + _td(m.get("gpu") or "none")
            + _td(m.get("device") or "-")
            + _td(m.get("threads") or "-", "num")
            + _td(m.get("torch") or "-")
            + _td(m.get("locallearn") or "-")
            + _td(m.get("python") or "-")
            + _td(", ".join(m["runs"]), "wrap")
            + "</tr>"
        )
    table = _table(
        "Machines the runs were trained on (timings compare within one machine only)",
        ["CPU", "cores", "GPU", "device", "threads", "torch", "locallearn", "python", "runs"],
        rows,
        "machines",
    )
    return f'<section aria-labelledby="h-machine"><h2 id="h-machine">Machine</h2>{table}</section>'


def render_html(runs: Sequence[RunRecord], title: str | None = None) -> str:
    groups = group_runs(runs)
    labels = group_labels(groups)
    first = runs[0]
    title = title or (
        f"locallearn report: {first.get('model')} on {first.get('data')}"
        if len({(r.get("model"), r.get("data")) for r in runs}) == 1
        else "locallearn report"
    )
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    statuses = {}
    for r in runs:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    status_text = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
    body = [
        f"<header><h1>{escape(title)}</h1>",
        f'<p class="meta">{len(runs)} run(s) ({escape(status_text)}) in {len(groups)} '
        f"configuration(s); written {stamp} by locallearn {escape(__version__)}.</p></header>",
        '<section aria-labelledby="h-comparison"><h2 id="h-comparison">Comparison</h2>',
        comparison_table(groups, labels, len(runs) - sum(len(g.runs) for g in groups)),
        "</section>",
        curves_section(runs),
        memory_section(groups, labels),
        '<section aria-labelledby="h-runs"><h2 id="h-runs">Runs</h2>',
        runs_table(runs),
        "</section>",
        probe_section(runs),
        details_section(runs),
        machine_section(runs),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )


def write_html(runs: Sequence[RunRecord], path: str | Path, title: str | None = None) -> None:
    atomic_write_text(path, render_html(runs, title))
