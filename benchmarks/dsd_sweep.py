"""DSD sample complexity of CNN vs LCN vs FCN: the default `locallearn sweep dsd` grid.

Writes benchmarks/results/dsd_sweep.json, docs/img/dsd_sweep.png and the BENCHMARKS.md
section ``dsd-sweep`` (fitted exponents beside the theory of Lahoti et al., ICLR 2024).

    nice -n 10 .venv/bin/python benchmarks/dsd_sweep.py [--full]
"""

from __future__ import annotations

import argparse
import time

from common import ROOT, command_line, machine, replace_section, today

from locallearn.engine.io import atomic_write_json
from locallearn.studies import dsd_sweep as sweep

# Theory's exponents of k and d where each bound's leading term dominates (Lahoti et al.).
EXPECTED = {"dsd-cnn": "k+d (additive: <1, <1)", "dsd-lcn": "k^1 d^1", "dsd-fcn": "k^2 d^1"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--seeds", type=int, default=None, help="default: the sweep's (3)")
    args = parser.parse_args()
    cfg = sweep.sweep_config(args.full, seeds=args.seeds)
    start = time.time()
    total = len(cfg.patches) * len(cfg.patch_dims) * len(cfg.models)
    # Partial results are written after every point, marked as such, so a sweep cut short
    # by the clock still leaves what it measured.
    result = sweep.run_sweep(
        cfg,
        sweep.stderr_log,
        lambda r: report(r, cfg, args, time.time() - start, f"{len(r.points)}/{total}"),
    )
    report(result, cfg, args, time.time() - start, None)
    print(sweep.table(result))


def report(result, cfg, args, wall: float, partial: str | None) -> None:
    data = result.to_json()
    data.update(machine=machine(), date=today(), command=command_line(), wall_seconds=wall)
    data["partial"] = partial
    atomic_write_json(ROOT / "benchmarks" / "results" / "dsd_sweep.json", data)
    sweep.plot(result, ROOT / "docs" / "img" / "dsd_sweep.png")
    rows = []
    for name in cfg.models:
        fit = result.fits[name]
        if fit is None:
            rows.append(f"| {name} | - | - | - | {EXPECTED[name]} |")
        else:
            rows.append(
                f"| {name} | {fit['k']:.2f} | {fit['d']:.2f} | {fit['r2']:.3f} "
                f"({fit['points']} pts) | {EXPECTED[name]} |"
            )
    body = f"""## DSD sample complexity: CNN vs LCN vs FCN (`locallearn sweep dsd`)

Lahoti et al. (ICLR 2024) prove, for k patches of dimension d: CNN O~(sigma^2 (k+d)), LCN
Omega(sigma^2 k d) .. O~(sigma^2 k (k+d)), FCN Omega(sigma^2 k^2 d). The paper has no
experiments; this is our measurement. n* = smallest training-set size (geometric grid
{cfg.n_min}..{cfg.n_max}, {cfg.steps_per_octave} per octave, bisection) whose mean test accuracy
over {cfg.seeds} seeds reaches chance + {cfg.target} x (Bayes - chance); sigma = {cfg.sigma};
width {cfg.width} filters per patch; full-batch Adam lr {cfg.lr}, at most {cfg.steps} steps.
Fit: log n* = a log k + b log d + c (least squares over the grid points with an n*).

| model | exponent of k (a) | exponent of d (b) | R^2 | theory |
|---|---|---|---|---|
{chr(10).join(rows)}

n* per grid point:

```
{sweep.table(result).split(chr(10) + chr(10))[0]}
```

![DSD sweep](docs/img/dsd_sweep.png)

Command: `{data["command"]}` (same grid as `locallearn sweep dsd`{" --full" if args.full else ""}).
Machine: {data["machine"]}. Date: {data["date"]}. Wall time: {wall:.0f} s (the machine was shared
with other jobs). Raw points: `benchmarks/results/dsd_sweep.json`.
"""
    if partial:
        body = body.replace(
            "## DSD sample complexity: CNN vs LCN vs FCN (`locallearn sweep dsd`)",
            "## DSD sample complexity: CNN vs LCN vs FCN (`locallearn sweep dsd`)\n\n"
            f"**PARTIAL: {partial} grid points measured when this was written.**",
        )
    replace_section("dsd-sweep", body)


if __name__ == "__main__":
    main()
