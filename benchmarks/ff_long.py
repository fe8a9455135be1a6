"""Forward-Forward on full MNIST with 3x1000 units for up to 100 epochs: the published-error check.

The recipe of the public reimplementation that reports 1.45% test error (METHODS.md): batch
100, SGD lr 1e-3, momentum 0.9, weight decay 3e-4, 100 epochs, linear readout; ours adds
the label-sweep accuracy of the same network at the end. The run lives in
benchmarks/results/ff_long/ (a normal run directory: config, metrics.jsonl, checkpoint), so
an interrupted benchmark continues where it stopped. It is the same as

    locallearn train --rule ff --ff-readout linear --model mlp --depth 3 --width 1000 \\
        --data mnist --data-dir ../shared/data --optimizer sgd --lr 1e-3 --momentum 0.9 \\
        --weight-decay 3e-4 --epochs 100 --batch-size 100 --seed 0 \\
        --out benchmarks/results/ff_long

    python benchmarks/ff_long.py                # train (or continue), then report
    python benchmarks/ff_long.py --report-only  # report on the last checkpoint as it is
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from locallearn.config import config_from_mapping, load_config_file
from locallearn.engine.io import atomic_write_json
from locallearn.engine.loop import evaluate
from locallearn.engine.run import Run

sys.path.insert(0, str(Path(__file__).parent))
from common import ROOT, command_line, machine, replace_section, today  # noqa: E402
from forward_only import sweep_accuracy  # noqa: E402

RUN_DIR = ROOT / "benchmarks" / "results" / "ff_long"
RESULTS = ROOT / "benchmarks" / "results" / "ff_long.json"
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
)


def load_run() -> Run:
    config = RUN_DIR / "config.toml"
    if not config.exists():
        return Run(config_from_mapping(RECIPE), RUN_DIR)
    run = Run(load_config_file(config), RUN_DIR)
    if (RUN_DIR / "checkpoint.pt").exists():
        run.load_checkpoint()
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args()
    run = load_run()
    if not args.report_only and run.state.epoch < run.cfg.epochs:
        run.fit()
    if run.state.epoch == 0:
        sys.exit("no epoch finished yet: nothing to report")
    with torch.no_grad():
        linear = evaluate(run.rule, run.data.x_test, run.data.y_test)
    sweep = sweep_accuracy(run)
    curve = [r["test_acc"] for r in run.state.history]
    result = {
        "epochs_done": run.state.epoch,
        "epochs_planned": run.cfg.epochs,
        "linear_test_acc": linear,
        "sweep_test_acc": sweep,
        "linear_test_acc_curve": curve,
        "epoch_seconds": run.state.train_seconds / run.state.epoch,
        "act_bytes_peak": run.state.act_bytes_peak,
    }
    atomic_write_json(RESULTS, result)
    print(json.dumps({k: v for k, v in result.items() if k != "linear_test_acc_curve"}))
    marks = sorted({1, 5, 10, 20, 40, 60, 80, 100, len(curve)} & set(range(1, len(curve) + 1)))
    lines = [
        "## Forward-Forward on MNIST, 3x1000, towards 100 epochs (issue 4's FF claim)",
        "",
        f"- command: `{command_line()}` (equivalent CLI in the script's docstring)",
        f"- machine: {machine()}; date: {today()}",
        "- full MNIST (60,000 train, 10,000 test), batch 100, SGD lr 1e-3, momentum 0.9, "
        "weight decay 3e-4, seed 0, linear readout trained alongside; peer normalisation "
        "0.03. Label sweep evaluated on the final network.",
        f"- epochs done: {run.state.epoch} of {run.cfg.epochs}; "
        f"{result['epoch_seconds']:.1f} s/epoch; act_bytes_peak {run.state.act_bytes_peak:,} B",
        "",
        "| epoch | linear readout test error |",
        "|---|---|",
        *(f"| {e} | {100 * (1 - curve[e - 1]):.2f}% |" for e in marks),
        "",
        f"Final: linear readout {100 * (1 - linear):.2f}% error, label sweep "
        f"{100 * (1 - sweep):.2f}% error. Published: 1.36% (paper, 4x2000, 60 epochs), 1.45% "
        "(reimplementation, 3x1000, 100 epochs, linear readout); the issue asks <= 1.6%.",
    ]
    replace_section("ff-long", "\n".join(lines))


if __name__ == "__main__":
    main()
