"""Spatial bias on MNIST-1D: every model under BP and greedy, on the original and the
spatially shuffled sequences (one fixed permutation of the 40 positions for all samples).

Greydanus (2020), MNIST-1D, table 1: MLP 68% -> 68%, CNN 94% -> 56%, GRU 91% -> 57%
(original -> shuffled). A model with a locality prior (convolution, local connectivity) should
lose accuracy under shuffling; a dense MLP, blind to the order of its inputs, should not.

Reference budget: Adam lr 1e-2, batch 100, 150 epochs (6,000 steps of the 4,000 training
sequences), as in the paper. Each finished run is appended to
benchmarks/results/mnist1d_shuffled.json at once, and a rerun skips the runs already there, so
the benchmark can be run in parts (``--models mlp,cnn1d`` now, ``--models lcn1d`` later); the
table in BENCHMARKS.md is rebuilt from every run in that file.

    python benchmarks/mnist1d_shuffled.py                              # every model, 3 seeds
    python benchmarks/mnist1d_shuffled.py --models mlp,cnn1d --seeds 0,1,2
    python benchmarks/mnist1d_shuffled.py --epochs 2 --seeds 0 --no-write   # smoke test
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import locallearn
from locallearn.engine.io import atomic_write_json
from locallearn.models import MODELS
from locallearn.report import format_table

sys.path.insert(0, str(Path(__file__).parent))
from common import ROOT, command_line, machine, mean_std, replace_section, today  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "mnist1d_shuffled.json"
MODELS_STUDIED = ("mlp", "cnn1d", "lcn1d")
RULES_STUDIED = ("bp", "greedy")
DATASETS_STUDIED = ("mnist1d", "mnist1d-shuffled")
# Greydanus (2020), table 1: test accuracy (%) on the original and the shuffled sequences.
PUBLISHED = {"mlp": (68, 68), "cnn1d": (94, 56), "gru": (91, 57), "logistic": (32, 32)}


def _key(s: dict[str, Any]) -> tuple[str, str, str, int, int]:
    return (s["model"], s["rule"], s["data"], s["seed"], s["epochs"])


def load_results() -> list[dict[str, Any]]:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else []


def run_all(models: list[str], seeds: list[int], epochs: int, write: bool) -> list[dict]:
    results = load_results() if write else []
    done = {_key(s) for s in results}
    # Seed-major order: if time runs out, every model has the same seeds done.
    for seed in seeds:
        for model in models:
            for data in DATASETS_STUDIED:
                for rule in RULES_STUDIED:
                    if (model, rule, data, seed, epochs) in done:
                        continue
                    s = locallearn.train(
                        rule=rule,
                        model=model,
                        data=data,
                        epochs=epochs,
                        seed=seed,
                        batch_size=100,
                        lr=1e-2,
                        optimizer="adam",
                    )
                    keep = {
                        k: s[k]
                        for k in (
                            "rule",
                            "model",
                            "data",
                            "blocks",
                            "cuts",
                            "epochs",
                            "seed",
                            "test_acc",
                            "train_acc",
                            "params",
                            "aux_params",
                            "epoch_seconds",
                            "test_acc_curve",
                        )
                    }
                    results.append(keep)
                    print(
                        f"{model:6s} {rule:6s} {data:16s} seed {seed}: test {s['test_acc']:.4f} "
                        f"train {s['train_acc']:.4f} ({s['epoch_seconds']:.3f} s/epoch)",
                        flush=True,
                    )
                    if write:  # each run is kept at once: a later crash loses nothing
                        atomic_write_json(RESULTS, results)
                        write_section(results, epochs)
    return results


def _cell(runs: list[dict[str, Any]]) -> str:
    if not runs:
        return "not run"
    mean, sd = mean_std([100 * r["test_acc"] for r in runs])
    return f"{mean:.1f} ± {sd:.1f} (n={len(runs)})"


def table(results: list[dict[str, Any]], epochs: int) -> tuple[list[str], list[list[str]]]:
    headers = ["model", "rule", "K", "mnist1d (%)", "shuffled (%)", "drop (points)", "published"]
    rows = []
    models = [m for m in MODELS_STUDIED if any(r["model"] == m for r in results)]
    for model in models:
        for rule in RULES_STUDIED:
            group = [
                r for r in results if (r["model"], r["rule"], r["epochs"]) == (model, rule, epochs)
            ]
            if not group:
                continue
            orig = [r for r in group if r["data"] == "mnist1d"]
            shuf = [r for r in group if r["data"] == "mnist1d-shuffled"]
            drop = "-"
            if orig and shuf:
                gap = mean_std([r["test_acc"] for r in orig])[0]
                gap -= mean_std([r["test_acc"] for r in shuf])[0]
                drop = f"{100 * gap:.1f}"
            pub = PUBLISHED.get(model)
            published = f"{pub[0]} -> {pub[1]} (BP)" if pub and rule == "bp" else "-"
            rows.append(
                [model, rule, str(group[0]["blocks"]), _cell(orig), _cell(shuf), drop, published]
            )
    return headers, rows


def write_section(results: list[dict[str, Any]], epochs: int) -> None:
    """(Re)write the BENCHMARKS.md section from every run in ``results`` at this budget."""
    headers, rows = table(results, epochs)
    runs = [r for r in results if r["epochs"] == epochs]
    seeds_done = sorted({r["seed"] for r in runs})
    md = "\n".join(
        [
            "## MNIST-1D vs spatially shuffled MNIST-1D (spatial bias)",
            "",
            f"- command: `{command_line()}` (runs accumulate in the results file; the table "
            "holds every run in it with this epoch budget)",
            f"- machine: {machine()}",
            f"- date: {today()}",
            f"- budget: Adam lr 1e-2, batch 100, {epochs} epochs x 40 steps "
            f"({40 * epochs:,} steps; the paper's ~6,000), seeds {seeds_done}, all 4,000 "
            "training / 1,000 test sequences; greedy at its default K=3 with the balanced cut "
            "and DGL `auto` heads",
            "- published: Greydanus (2020), MNIST-1D, table 1, test accuracy original -> "
            "shuffled: logistic 32 -> 32, MLP 68 -> 68, CNN 94 -> 56, GRU 91 -> 57 "
            "(`lcn1d` has no published figure)",
            f"- raw results: `{RESULTS.relative_to(ROOT)}`",
            "",
            "| " + " | ".join(headers) + " |",
            "|" + "---|" * len(headers),
            *("| " + " | ".join(r) + " |" for r in rows),
        ]
    )
    replace_section("mnist1d-shuffled", md)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS_STUDIED))
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    models = [m for m in args.models.split(",") if m]
    missing = [m for m in models if m not in MODELS.names()]
    if missing:
        print(f"skipping models not registered (yet): {', '.join(missing)}", flush=True)
    models = [m for m in models if m in MODELS.names()]

    results = run_all(models, seeds, args.epochs, write=not args.no_write)
    headers, rows = table(results, args.epochs)
    print(format_table(headers, rows))
    if args.no_write:
        return
    write_section(results, args.epochs)


if __name__ == "__main__":
    main()
