"""Forward-Forward on full MNIST with 3x1000 units for 100 epochs: the published-error check.

The recipe of the public reimplementation that reports 1.45% test error (METHODS.md): batch
100, SGD lr 1e-3, momentum 0.9, weight decay 3e-4, 100 epochs with the lr constant for the
first half and then cooled down linearly (`--lr-schedule cooldown`), linear readout; ours
adds the label-sweep accuracy of the same network at the end. Variant `constant` keeps the
lr constant. Each variant's run lives in benchmarks/results/ff_long[_constant]/ (a normal run
directory: config, metrics.jsonl, checkpoint), so an interrupted benchmark continues where
it stopped. The cooldown variant is the same as

    locallearn train --rule ff --ff-readout linear --model mlp --depth 3 --width 1000 \\
        --data mnist --data-dir ../shared/data --optimizer sgd --lr 1e-3 --momentum 0.9 \\
        --weight-decay 3e-4 --lr-schedule cooldown --epochs 100 --batch-size 100 --seed 0 \\
        --out benchmarks/results/ff_long

    python benchmarks/ff_long.py                      # train (or continue), then report
    python benchmarks/ff_long.py --variant constant   # the constant-lr run
    python benchmarks/ff_long.py --report-only        # report on the checkpoints as they are
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from locallearn.config import config_from_mapping
from locallearn.engine.io import atomic_write_json
from locallearn.engine.loop import evaluate
from locallearn.engine.run import Run, load_run_config

sys.path.insert(0, str(Path(__file__).parent))
from common import ROOT, command_line, machine, replace_section, today  # noqa: E402
from forward_only import sweep_accuracy  # noqa: E402

RESULTS_DIR = ROOT / "benchmarks" / "results"
VARIANTS = {"cooldown": "ff_long", "constant": "ff_long_constant"}
RECIPE = dict(
    rule="ff",
    ff_readout="linear",
    model="mlp",
    depth=3,
    width=1000,
    data="mnist",
    data_dir=str(ROOT.parent / "shared" / "data"),
    optimizer="sgd",
    lr=1e-3,
    momentum=0.9,
    weight_decay=3e-4,
    epochs=100,
    batch_size=100,
    seed=0,
    # The published run predates --val-split: it trains on all 60,000 images and records
    # the test accuracy per epoch, as this benchmark's table reports.
    val_split=0.0,
)


def load_run(variant: str) -> Run:
    run_dir = RESULTS_DIR / VARIANTS[variant]
    config = run_dir / "config.toml"
    if not config.exists():
        return Run(config_from_mapping({**RECIPE, "lr_schedule": variant}), run_dir)
    run = Run(load_run_config(config), run_dir)
    if (run_dir / "checkpoint.pt").exists():
        run.load_checkpoint()
    return run


def report(variant: str) -> dict | None:
    """Final (or latest-checkpoint) accuracy of a variant's run; None if it has no epoch."""
    if not (RESULTS_DIR / VARIANTS[variant] / "checkpoint.pt").exists():
        return None
    run = load_run(variant)
    with torch.no_grad():
        linear = evaluate(run.rule, run.data.x_test, run.data.y_test)
    result = {
        "variant": variant,
        "epochs_done": run.state.epoch,
        "epochs_planned": run.cfg.epochs,
        "linear_test_acc": linear,
        "sweep_test_acc": sweep_accuracy(run),
        "linear_test_acc_curve": [r["test_acc"] for r in run.state.history],
        "epoch_seconds": run.state.train_seconds / run.state.epoch,
        "act_bytes_peak": run.state.act_bytes_peak,
    }
    atomic_write_json(RESULTS_DIR / f"{VARIANTS[variant]}.json", result)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variant", choices=tuple(VARIANTS), default="cooldown")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args()
    if not args.report_only:
        run = load_run(args.variant)
        if run.state.epoch < run.cfg.epochs:
            run.fit()
    results = [r for r in (report(v) for v in VARIANTS) if r is not None]
    if not results:
        sys.exit("no epoch finished yet: nothing to report")
    for r in results:
        print(json.dumps({k: v for k, v in r.items() if k != "linear_test_acc_curve"}))
    marks = [1, 5, 10, 20, 40, 60, 80, 100]
    head = " | ".join(f"{r['variant']} lr" for r in results)
    rows = []
    for e in marks:
        cells = [
            f"{100 * (1 - r['linear_test_acc_curve'][e - 1]):.2f}%"
            if e <= len(r["linear_test_acc_curve"])
            else "-"
            for r in results
        ]
        rows.append(f"| {e} | " + " | ".join(cells) + " |")
    finals = [
        f"- {r['variant']} lr: {r['epochs_done']} of {r['epochs_planned']} epochs, "
        f"{r['epoch_seconds']:.1f} s/epoch; linear readout {100 * (1 - r['linear_test_acc']):.2f}% "
        f"error, label sweep {100 * (1 - r['sweep_test_acc']):.2f}% error; act_bytes_peak "
        f"{r['act_bytes_peak']:,} B"
        for r in results
    ]
    lines = [
        "## Forward-Forward on MNIST, 3x1000, 100 epochs (issue 4's FF claim)",
        "",
        f"- command: `{command_line()}` (equivalent CLI in the script's docstring)",
        f"- machine: {machine()}; date: {today()}",
        "- full MNIST (60,000 train, 10,000 test), batch 100, SGD lr 1e-3, momentum 0.9, "
        "weight decay 3e-4, seed 0, linear readout trained alongside (same lr); peer "
        "normalisation 0.03. 'cooldown': the lr constant for 50 epochs, then linearly down "
        "(the reimplementation's schedule); 'constant': no schedule. Label sweep evaluated on "
        "the final network.",
        "",
        f"| epoch | linear readout test error: {head} |",
        "|---|" + "---|" * len(results),
        *rows,
        "",
        *finals,
        "",
        "Published: 1.36% (paper, 4x2000, 60 epochs), 1.45% (reimplementation, 3x1000, 100 "
        "epochs, linear readout); the issue asks <= 1.6%.",
    ]
    replace_section("ff-long", "\n".join(lines))


if __name__ == "__main__":
    main()
