"""Issue 11: DRTP and tpSGD on a 2-D tanh conv net (`cnn`) on MNIST, against BP (ReLU, tanh).

The tpSGD paper (Lomnitz et al. 2022) claims accuracy within 5% of BP on conv nets; DRTP
(Frenkel et al. 2021) trains conv nets with tanh units. Setting: MNIST, a stratified
--train-limit subset of which 10% is the validation split, the full 10,000-image test set;
`cnn` (4 conv3x3-BN units, width 32), batch 100, Adam, each rule's recipe otherwise. The lr
of each (rule, activation) is chosen on *validation* accuracy on a small grid with seed 0;
the other seeds run at the chosen lr only. Test accuracy chooses nothing. Accuracy only (one
thread per run, no timing), so no benchmark lock is needed.

    python benchmarks/tanh_conv.py --resume          # the study (results accumulate)
    python benchmarks/tanh_conv.py --render          # rewrite the section from the JSON
    python benchmarks/tanh_conv.py --train-limit 500 --epochs 1 --seeds 0 --no-write  # smoke
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from locallearn.config import config_from_mapping
from locallearn.engine.io import atomic_write_json
from locallearn.engine.run import Run

sys.path.insert(0, str(Path(__file__).parent))
from common import ROOT, command_line, machine, mean_std, replace_section, today  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "tanh_conv.json"
DATA_DIR = ROOT.parent / "shared" / "data"
# (rule, activation) -> the lr grid: three values around each rule's MLP recipe (drtp 3e-3,
# tpsgd 3e-4; bp between the two values the recipes grid tried). DRTP and tpSGD validated best
# at the top of those three on seed 0, so their grids were extended upwards while the top
# value won (DRTP: 3e-2, then 1e-1).
GRID: dict[tuple[str, str], list[float]] = {
    ("bp", "relu"): [1e-3, 3e-3, 1e-2],
    ("bp", "tanh"): [1e-3, 3e-3, 1e-2],
    ("drtp", "tanh"): [1e-3, 3e-3, 1e-2, 3e-2, 1e-1],
    ("tpsgd", "tanh"): [1e-4, 3e-4, 1e-3, 3e-3],
}


def key(rule: str, activation: str, lr: float, seed: int) -> str:
    return f"{rule}/{activation}/{lr:g}/{seed}"


def run_one(args: argparse.Namespace, rule: str, activation: str, lr: float, seed: int) -> dict:
    values = dict(
        rule=rule,
        model="cnn",
        activation=activation,
        data="mnist",
        data_dir=str(DATA_DIR),
        train_limit=args.train_limit,
        epochs=args.epochs,
        optimizer="adam",
        lr=lr,
        batch_size=100,
        seed=seed,
        threads=1,
    )
    s = Run(config_from_mapping(values)).fit()
    keep = ("val_acc", "test_acc", "train_acc", "epoch_seconds", "blocks")
    return {"rule": rule, "activation": activation, "lr": lr, "seed": seed} | {
        k: s.get(k) for k in keep
    }


def chosen_lr(runs: dict[str, dict], rule: str, activation: str) -> float | None:
    """The lr of the best seed-0 validation accuracy (None until the grid has run)."""
    grid = [runs.get(key(rule, activation, lr, 0)) for lr in GRID[(rule, activation)]]
    if any(r is None for r in grid):
        return None
    return max(grid, key=lambda r: r["val_acc"])["lr"]  # type: ignore[index]


def report(args: argparse.Namespace, runs: dict[str, dict], seeds: list[int]) -> str:
    lines = [
        "## DRTP and tpSGD on tanh conv nets (issue 11)",
        "",
        "cnn1d on MNIST-1D (the forward-only table above; `--activation tanh`, each rule's "
        "recipe, 20 epochs, 3 seeds): DRTP 29.9 ± 2.2% and tpSGD 19.1 ± 2.0% test accuracy "
        "against BP's 88.0 ± 1.7% (ReLU) on the same net. On the 3x1000 tanh MLP on MNIST "
        "(the recipes table) DRTP is level with BP (0.921 vs 0.919) and tpSGD 8 points "
        "behind (0.839). The 2-D `cnn` on MNIST:",
        "",
        f"- command: `{args.command or command_line()}`",
        f"- machine: {machine()}; one thread per run; date: {today()}; accuracy only",
        f"- setting: MNIST, {args.train_limit:,}-image stratified subset, 10% of it the "
        "validation split, full 10,000-image test set; `cnn` (4 conv3x3-BN units, width 32, "
        f"2x2 max-pool after units 2 and 4, global pool, linear), {args.epochs} epochs, Adam, "
        "batch 100. DRTP and tpSGD train each unit as its own block (5 blocks).",
        "- lr chosen per row on the seed-0 *validation* accuracy among those listed (the "
        "chosen one starred); the other seeds ran at it. Test accuracy chose nothing.",
        f"- raw results: `{RESULTS.relative_to(ROOT)}`",
        "",
        "| rule | activation | val acc per lr (seed 0) | test acc at chosen lr (mean ± sd) "
        "| train acc | seeds | vs BP relu | vs BP tanh |",
        "|---|---|---|---|---|---|---|---|",
    ]
    means: dict[tuple[str, str], float] = {}
    rows = []
    for (rule, activation), grid in GRID.items():
        lr = chosen_lr(runs, rule, activation)
        cells = []
        for g in grid:
            r = runs.get(key(rule, activation, g, 0))
            if r is not None:
                cells.append(f"{g:g}: {r['val_acc']:.4f}" + (" *" if g == lr else ""))
        group = [] if lr is None else [runs.get(key(rule, activation, lr, s)) for s in seeds]
        done = [r for r in group if r is not None]
        if done:
            means[(rule, activation)] = mean_std([r["test_acc"] for r in done])[0]
        rows.append((rule, activation, cells, done))
    for rule, activation, cells, done in rows:
        if done:
            acc, sd = mean_std([r["test_acc"] for r in done])
            test = f"{acc:.4f} ± {sd:.4f}"
            train = f"{mean_std([r['train_acc'] for r in done])[0]:.4f}"
            gaps = [
                f"{100 * (acc - means[b]):+.1f} pts" if b in means else "-"
                for b in (("bp", "relu"), ("bp", "tanh"))
            ]
        else:
            test, train, gaps = "-", "-", ["-", "-"]
        lines.append(
            f"| {rule} | {activation} | {'; '.join(cells)} | {test} | {train} | {len(done)} | "
            f"{gaps[0]} | {gaps[1]} |"
        )
    if args.verdict:
        lines += ["", args.verdict]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train-limit", type=int, default=10_000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--resume", action="store_true", help="keep the finished runs")
    p.add_argument("--render", action="store_true", help="only rewrite the section")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--command", default=None, help="the command line to show (with --render)")
    p.add_argument("--verdict", default=None, help="a closing paragraph for the section")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    runs: dict[str, dict[str, Any]] = {}
    if (args.resume or args.render) and RESULTS.exists():
        runs = json.loads(RESULTS.read_text())
    if not args.render:
        # The whole seed-0 grid first, then the other seeds at each row's chosen lr.
        plan = [(r, a, lr, 0) for (r, a), grid in GRID.items() for lr in grid]
        for rule, activation, lr, seed in plan + [("later", "", 0.0, s) for s in seeds[1:]]:
            todo = [(rule, activation, lr, seed)]
            if rule == "later":
                todo = [(r, a, chosen_lr(runs, r, a), seed) for (r, a) in GRID]
            for r, a, rate, s in todo:
                if rate is None or key(r, a, rate, s) in runs:
                    continue
                runs[key(r, a, rate, s)] = out = run_one(args, r, a, rate, s)
                print(
                    f"{r} {a} lr {rate:g} seed {s}: val {out['val_acc']:.4f} test "
                    f"{out['test_acc']:.4f} ({out['epoch_seconds']:.1f} s/epoch)",
                    flush=True,
                )
                if not args.no_write:
                    atomic_write_json(RESULTS, runs)
    text = report(args, runs, seeds)
    print(text)
    if not args.no_write:
        replace_section("tanh-conv", text)


if __name__ == "__main__":
    main()
