"""BP vs greedy local learning (K = 2, 3) on MNIST-1D with the reference CNN.

The published budget (Greydanus 2020): Adam, lr 1e-2, batch 100, 6,000 steps = 150 epochs of
the 4,000 training sequences. Three seeds per configuration. Writes every run's summary to
benchmarks/results/mnist1d_cnn1d.json and the table into BENCHMARKS.md.

    python benchmarks/mnist1d_bp_vs_greedy.py                  # the full benchmark
    python benchmarks/mnist1d_bp_vs_greedy.py --epochs 2 --seeds 0 --no-write   # smoke test
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import locallearn
from locallearn.engine.io import atomic_write_json
from locallearn.report import format_bytes, format_table

sys.path.insert(0, str(Path(__file__).parent))
from common import ROOT, command_line, machine, mean_std, replace_section, today  # noqa: E402

CONFIGS = [("bp", None), ("greedy", 2), ("greedy", 3)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]

    runs = []
    for rule, blocks in CONFIGS:
        for seed in seeds:
            s = locallearn.train(
                rule=rule,
                model="cnn1d",
                data="mnist1d",
                blocks=blocks,
                epochs=args.epochs,
                seed=seed,
                batch_size=100,
                lr=1e-2,
                optimizer="adam",
            )
            print(
                f"{rule} K={s['blocks']} seed {seed}: test {s['test_acc']:.4f} "
                f"act {s['act_bytes_peak']} B {s['epoch_seconds']:.3f} s/epoch",
                flush=True,
            )
            runs.append(s)

    bp_bytes = next(s["act_bytes_peak"] for s in runs if s["rule"] == "bp")
    rows = []
    for rule, blocks in CONFIGS:
        group = [s for s in runs if s["rule"] == rule and s["blocks"] == (blocks or 1)]
        acc, acc_sd = mean_std([s["test_acc"] for s in group])
        secs, secs_sd = mean_std([s["epoch_seconds"] for s in group])
        act = max(s["act_bytes_peak"] for s in group)
        rows.append(
            [
                rule,
                blocks or 1,
                f"{acc:.4f} ± {acc_sd:.4f}",
                f"{min(s['test_acc'] for s in group):.3f}-{max(s['test_acc'] for s in group):.3f}",
                format_bytes(act),
                f"{act / bp_bytes:.2f}x",
                f"{secs:.3f} ± {secs_sd:.3f} s",
                f"{group[0]['aux_params']:,}",
            ]
        )
    headers = [
        "rule",
        "K",
        "test acc (mean ± sd)",
        "range",
        "act_bytes_peak",
        "vs BP",
        "time/epoch",
        "aux params",
    ]
    table = format_table(headers, rows)
    print(table)
    if args.no_write:
        return
    atomic_write_json(ROOT / "benchmarks" / "results" / "mnist1d_cnn1d.json", runs)
    md = "\n".join(
        [
            "## MNIST-1D, reference CNN (`cnn1d`): BP vs greedy",
            "",
            f"- command: `{command_line()}`",
            f"- machine: {machine()}",
            f"- date: {today()}",
            f"- budget: Adam lr 1e-2, batch 100, {args.epochs} epochs x 40 steps, "
            f"seeds {args.seeds}; greedy cut balanced by activation bytes, DGL `mlp` heads",
            "- raw summaries: `benchmarks/results/mnist1d_cnn1d.json`",
            "",
            "| " + " | ".join(headers) + " |",
            "|" + "---|" * len(headers),
            *("| " + " | ".join(str(c) for c in r) + " |" for r in rows),
        ]
    )
    replace_section("mnist1d-cnn1d", md)


if __name__ == "__main__":
    main()
