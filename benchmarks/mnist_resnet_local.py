"""Supervised local learning on a CIFAR ResNet, real MNIST: accuracy, memory and time per rule.

BP, greedy (DGL), InfoPro, AugLocal and MAN (on greedy and on InfoPro) train ResNet-20 on
one fixed short budget: the same stratified training subset, epochs, optimizer, batch and
seeds for every rule, tested on a fixed stratified test subset. Rules that are not
registered are skipped (and named in the output). CIFAR-10 pixels are not available here, so
the published CIFAR numbers in the table are context, not a like-for-like comparison.

    python benchmarks/mnist_resnet_local.py                       # the benchmark
    python benchmarks/mnist_resnet_local.py --epochs 1 --train 200 --test 200 --seeds 0 \\
        --no-write                                                # smoke test
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import torch

import locallearn
from locallearn.data import load_dataset
from locallearn.data.subset import stratified_indices
from locallearn.engine.io import atomic_write_json
from locallearn.report import format_bytes, format_table
from locallearn.rules import RULES

sys.path.insert(0, str(Path(__file__).parent))
from common import ROOT, command_line, machine, mean_std, replace_section, today  # noqa: E402

SECTION = "mnist-resnet-local"
RESULTS = ROOT / "benchmarks" / "results" / f"{SECTION}.json"


def _configs(k: int) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (f"greedy K={k}", "greedy", {"blocks": k}),
        (f"infopro K={k}", "infopro", {"blocks": k}),
        (f"auglocal K={k}", "auglocal", {"blocks": k, "aux_depth": 3, "pyramid": 0.5}),
        (f"man/greedy K={k}", "man", {"blocks": k, "host": "greedy"}),
        (f"man/infopro K={k}", "man", {"blocks": k, "host": "infopro"}),
    ]


# (label, rule, options), in the order they run: K = 4 for every rule before K = 8, so a
# benchmark cut short still compares every rule. AugLocal K = 10 is every unit of ResNet-20
# its own block (the analogue of the paper's ResNet-32 K = 16); d = 3 and c = 0.5.
CONFIGS: list[tuple[str, str, dict[str, Any]]] = [
    ("bp", "bp", {}),
    *_configs(4),
    ("auglocal K=10", "auglocal", {"blocks": 10, "aux_depth": 3, "pyramid": 0.5}),
    *_configs(8),
]

# Published CIFAR-10 test accuracy (%) for context (METHODS.md; different data and budget).
PUBLISHED = {
    "bp": "ResNet-32 92.63 (InfoPro paper, E2E err 7.37)",
    "greedy K=4": "ResNet-32 88.52 (DGL, InfoPro paper)",
    "greedy K=8": "ResNet-32 85.83 (DGL, InfoPro paper)",
    "infopro K=4": "ResNet-32 91.42",
    "infopro K=8": "ResNet-32 88.87",
    "auglocal K=10": "ResNet-110 K=55: 93.96 vs BP 94.61",
    "man/greedy K=8": "ResNet-32 91.58 (DGL 88.37)",
    "man/infopro K=8": "ResNet-32 90.68 (InfoPro 88.49)",
}


def subset_test(dataset: Any, n: int) -> Any:
    """The dataset with its test split cut to a fixed stratified subset of ``n``."""
    if n >= len(dataset.y_test):
        return dataset
    keep = torch.from_numpy(stratified_indices(dataset.y_test.numpy(), n))
    return dataclasses.replace(dataset, x_test=dataset.x_test[keep], y_test=dataset.y_test[keep])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--train", type=int, default=600, help="stratified training subset")
    parser.add_argument("--test", type=int, default=1000, help="stratified test subset")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--only", default="", help="comma-separated labels to run (default all)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    only = {s.strip() for s in args.only.split(",") if s.strip()}

    data = subset_test(load_dataset("mnist", args.data_dir, train_limit=args.train), args.test)
    registered = set(RULES.names())
    configs = [c for c in CONFIGS if not only or c[0] in only]
    skipped = sorted({rule for _, rule, _ in configs if rule not in registered})
    configs = [c for c in configs if c[1] in registered]
    if skipped:
        print(f"not registered, skipped: {', '.join(skipped)}", flush=True)

    runs: list[dict[str, Any]] = []
    table = "(no run)"
    started = time.time()
    for seed in seeds:  # all rules for one seed first, so a cut-short run has every rule
        for label, rule, options in configs:
            s = locallearn.train(
                rule=rule,
                model=args.model,
                data=data,
                width=args.width,
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                optimizer="adam",
                seed=seed,
                **options,
            )
            s["label"] = label
            runs.append(s)
            print(
                f"{label} seed {seed}: test {s['test_acc']:.4f} act "
                f"{format_bytes(s['act_bytes_peak'])} {s['epoch_seconds']:.1f} s/epoch "
                f"({time.time() - started:.0f} s so far)",
                flush=True,
            )
            # Written after every run, so a benchmark cut short still reports what finished.
            table = report(runs, configs, args, skipped, write=not args.no_write)
    print(table)


def report(
    runs: list[dict[str, Any]],
    configs: list[tuple[str, str, dict[str, Any]]],
    args: argparse.Namespace,
    skipped: list[str],
    write: bool,
) -> str:
    """The table of ``runs`` (one row per configuration with runs), written to the results
    JSON and BENCHMARKS.md when ``write``."""
    bp = [s for s in runs if s["label"] == "bp"]
    bp_bytes = bp[0]["act_bytes_peak"] if bp else None
    bp_secs = mean_std([s["epoch_seconds"] for s in bp])[0] if bp else None
    rows = []
    for label, _, _ in configs:
        group = [s for s in runs if s["label"] == label]
        if not group:
            continue
        acc, acc_sd = mean_std([100 * s["test_acc"] for s in group])
        secs = mean_std([s["epoch_seconds"] for s in group])[0]
        act = max(s["act_bytes_peak"] for s in group)
        rows.append(
            [
                label,
                group[0]["blocks"],
                f"{acc:.2f} ± {acc_sd:.2f} (n={len(group)})",
                format_bytes(act),
                f"{act / bp_bytes:.2f}x" if bp_bytes else "-",
                f"{secs:.1f} s",
                f"{secs / bp_secs:.2f}x" if bp_secs else "-",
                f"{group[0]['aux_params']:,}",
                PUBLISHED.get(label, "-"),
            ]
        )
    headers = [
        "rule",
        "K",
        "test acc % (mean ± sd)",
        "act_bytes_peak",
        "vs BP",
        "time/epoch",
        "vs BP",
        "aux params",
        "published CIFAR-10 acc %",
    ]
    table = format_table(headers, rows)
    if not write:
        return table
    atomic_write_json(RESULTS, runs)
    seeds_done = sorted({s["seed"] for s in runs})
    md = "\n".join(
        [
            f"## Supervised local learning on {args.model}, real MNIST",
            "",
            f"- command: `{command_line()}`",
            f"- machine: {machine()}; shared with other jobs while it ran, so times are "
            "indicative only (the ratio to BP is the figure to read)",
            f"- date: {today()}",
            f"- budget (all rules alike): `{args.model} --width {args.width}`, stratified "
            f"{args.train}-image MNIST training subset, {args.epochs} epochs, batch "
            f"{args.batch_size}, Adam lr {args.lr}, no augmentation; test accuracy on a fixed "
            f"stratified {args.test}-image subset of the MNIST test set; seeds "
            f"{','.join(map(str, seeds_done))} finished (of {args.seeds} planned; n per row)",
            "- cuts: balanced by activation bytes (every rule's default with `--blocks`); "
            "InfoPro and MAN with their default heads and weights; AugLocal d = 3, c = 0.5",
            f"- raw summaries: `benchmarks/results/{SECTION}.json`"
            + (f"; not registered when run: {', '.join(skipped)}" if skipped else ""),
            "",
            "| " + " | ".join(headers) + " |",
            "|" + "---|" * len(headers),
            *("| " + " | ".join(str(c) for c in r) + " |" for r in rows),
            "",
            "The published column is CIFAR-10 (ResNet-32/110, 160-400 epochs, augmentation; "
            "METHODS.md): a different dataset and a budget hundreds of times larger, given as "
            "the anchor of each method, not as a like-for-like comparison.",
        ]
    )
    replace_section(SECTION, md)
    return table


if __name__ == "__main__":
    main()
