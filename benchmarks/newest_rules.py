"""The newest rules beside BP and every older rule (issue 16): MNIST and MNIST-1D, each rule at
its recipe with the lr chosen on validation, 3 seeds.

Per (dataset, rule): a small lr grid around the recipe's lr (x0.3, x1, x3) on seed 0, the lr
with the best validation accuracy chosen (test accuracy chooses nothing), then every seed at
it. Each run appends to ``benchmarks/results/newest_rules/<data>__<rule>.json`` (written
atomically), so an interrupted run resumes where it stopped (``--resume``) and a finished
pair is skipped. ``--table`` rebuilds the BENCHMARKS.md section from every file present:
test accuracy, act_bytes_peak and time per epoch, each also as a ratio to BP's on the same
data, beside the papers' own claims.

Budget (2 shared cores, 1 thread per run): MNIST full (54,000 train / 6,000 validation /
10,000 test), mlp 3x1000, 3 epochs; MNIST-1D (3,600 / 400 / 1,000), the default model cnn1d
(a rule that cannot train it: mlp), 60 epochs; on MNIST a rule that cannot train the mlp gets
cnn, and ``--rule-model noprop=M`` gives a rule its own model. Timings matter here: run it
under the lock.

    flock /tmp/locallearn-bench.lock python benchmarks/newest_rules.py --rules bp,monoforward
    flock /tmp/locallearn-bench.lock python benchmarks/newest_rules.py --resume   # the rest
    python benchmarks/newest_rules.py --table          # BENCHMARKS.md from the result files
    python benchmarks/newest_rules.py --rules ff --data mnist --seeds 0 --no-grid --resume
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import locallearn
from locallearn.engine.io import atomic_write_json
from locallearn.models import MODELS
from locallearn.recipe import GLOBAL
from locallearn.rules import RULES, rule_applies

sys.path.insert(0, str(Path(__file__).parent))
from common import ROOT, command_line, machine, mean_std, replace_section, today  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "newest_rules"
SECTION = "newest-rules"
# Older rules first, then the newest; a rule not registered (yet) is skipped.
STUDIED = ("bp", "greedy", "drtp", "tpsgd", "ff", "fa", "dfa", "monoforward", "fwdgrad", "noprop")
NEWEST = ("monoforward", "fwdgrad", "noprop")
GRID_FACTORS = (0.3, 1.0, 3.0)
THREADS = 1
SETTINGS: dict[str, dict[str, Any]] = {
    "mnist": dict(
        data="mnist",
        data_dir=str(ROOT.parent / "shared" / "data"),
        model="mlp",
        model_options=dict(depth=3, width=1000),
        epochs=3,
        fallbacks=("cnn",),
    ),
    "mnist1d": dict(
        data="mnist1d",
        data_dir=None,
        model="cnn1d",
        model_options={},
        epochs=60,
        fallbacks=("mlp",),  # the model's own defaults: 2x100
    ),
}
# The papers' own figures at the closest setting, for the table (percent test accuracy).
CLAIMS = {
    "fwdgrad": "Ren et al. (ICLR 2023): ResNet-18-16b, CIFAR-10, 89.4% (activity) / 88.8% "
    "(weight perturbation); no MNIST MLP figure",
    "monoforward": "Gong et al. (2025), abstract: MLPs on MNIST match or beat BP; the "
    "paper's own MNIST MLP figure could not be read here (full text not reachable)",
    "noprop": "Li, Teh & Pascanu (2025), table 1: NoProp-DT, MNIST 99.47% (their CNN; "
    "unverified here)",
}
KEEP = (
    "rule",
    "model",
    "data",
    "blocks",
    "epochs",
    "seed",
    "test_acc",
    "val_acc",
    "train_acc",
    "params",
    "aux_params",
    "act_bytes_peak",
    "epoch_seconds",
    "samples_per_second",
    "settings",
)


def loadavg() -> float | None:
    """The 1-minute load average (None where /proc is not there)."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def model_for(rule: str, setting: dict[str, Any], overrides: dict[str, str]) -> tuple[str, dict]:
    """``overrides[rule]``, else the setting's model, else the first of its fallbacks (at
    their own defaults) that the rule can train."""
    if rule in overrides:
        return overrides[rule], {}
    if rule_applies(rule, setting["model"]):
        return setting["model"], dict(setting["model_options"])
    for name in setting["fallbacks"]:
        if rule_applies(rule, name):
            return name, {}
    raise SystemExit(f"rule {rule} trains none of {setting['model']}, {setting['fallbacks']}")


def recipe_lr(rule: str) -> float:
    recipe = RULES.get(rule).meta.get("recipe")
    return recipe.lr if recipe is not None and recipe.lr is not None else float(GLOBAL.lr)


def result_path(data: str, rule: str) -> Path:
    return RESULTS / f"{data}__{rule}.json"


def run_pair(
    data: str,
    rule: str,
    seeds: list[int],
    args: argparse.Namespace,
    overrides: dict[str, str],
) -> dict[str, Any]:
    """Grid on the first seed, then every seed at the chosen lr; saved after every run."""
    setting = SETTINGS[data]
    path = result_path(data, rule)
    model, model_options = model_for(rule, setting, overrides)
    epochs = args.epochs if args.epochs is not None else setting["epochs"]
    base = recipe_lr(rule)
    grid = [base] if args.no_grid else [float(f"{base * f:.3g}") for f in GRID_FACTORS]
    record: dict[str, Any] = {
        "data": data,
        "rule": rule,
        "model": model,
        "model_options": model_options,
        "epochs": epochs,
        "train_limit": args.train_limit,
        "recipe_lr": base,
        "grid": grid,
        "seeds": seeds,
        "threads": THREADS,
        "under_lock": not args.unlocked,
        "runs": [],
        "complete": False,
    }
    if path.exists() and args.resume:
        old = json.loads(path.read_text())
        keys = ("model", "epochs", "train_limit", "grid", "under_lock")
        same = all(old.get(k, True) == record[k] for k in keys)
        if same and old.get("complete") and old.get("seeds") == seeds:
            print(f"[{data} {rule}] done, skipped", flush=True)
            return old
        if same:
            record["runs"] = old["runs"]

    def run(lr: float, seed: int) -> dict[str, Any]:
        for r in record["runs"]:
            if r["lr"] == lr and r["seed"] == seed:
                return r
        before = loadavg()
        start = time.perf_counter()
        s = locallearn.train(
            rule=rule,
            model=model,
            data=setting["data"],
            data_dir=setting["data_dir"],
            train_limit=args.train_limit,
            epochs=epochs,
            seed=seed,
            lr=lr,
            threads=THREADS,
            **model_options,
        )
        r = {k: s[k] for k in KEEP if k in s} | {
            "lr": lr,
            "wall_seconds": time.perf_counter() - start,
            "load_before": before,
            "load_after": loadavg(),
        }
        record["runs"].append(r)
        atomic_write_json(path, record)
        print(
            f"[{data} {rule}] lr {lr:g} seed {seed}: val {r['val_acc']:.4f} test "
            f"{r['test_acc']:.4f} {r['epoch_seconds']:.2f} s/epoch ({r['wall_seconds']:.0f} s)",
            flush=True,
        )
        return r

    scored = [run(lr, seeds[0]) for lr in grid]
    record["chosen_lr"] = max(scored, key=lambda r: r["val_acc"])["lr"]
    for seed in seeds[1:]:
        run(record["chosen_lr"], seed)
    record["complete"] = True
    record.update(machine=machine(), date=today(), command=command_line())
    atomic_write_json(path, record)
    return record


# -- the table ----------------------------------------------------------------------------------
def load_results() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]


def chosen_runs(record: dict[str, Any]) -> list[dict[str, Any]]:
    lr = record.get("chosen_lr")
    return [r for r in record["runs"] if r["lr"] == lr]


def _mean(runs: list[dict[str, Any]], key: str) -> float:
    return mean_std([float(r[key]) for r in runs])[0]


def _fastest(runs: list[dict[str, Any]]) -> float:
    """The shortest epoch_seconds of ``runs``: on a shared machine the least disturbed."""
    return min(float(r["epoch_seconds"]) for r in runs)


def _load_range(runs: list[dict[str, Any]]) -> str:
    """The 1-minute load averages seen around ``runs``, as 'low-high'."""
    loads = [r[k] for r in runs for k in ("load_before", "load_after") if r.get(k) is not None]
    return f"{min(loads):.1f}-{max(loads):.1f}" if loads else "-"


def _network(record: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two records' networks the same: the model and its options."""
    return record["model"], sorted(record.get("model_options", {}).items())


def table_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    """One row per complete (data, rule): chosen lr (grid validation), test accuracy, and
    memory and time beside BP's on the same data."""
    rows = []
    order = {r: i for i, r in enumerate(STUDIED)}
    done = [r for r in results if r.get("complete")]
    done.sort(key=lambda r: (r["data"], order.get(r["rule"], len(order)), r["rule"]))
    bp = {r["data"]: r for r in done if r["rule"] == "bp"}
    for record in done:
        runs = chosen_runs(record)
        grid = ", ".join(
            f"{r['lr']:g}: {r['val_acc']:.3f}"
            for r in record["runs"]
            if r["seed"] == record["seeds"][0]
        )
        acc, sd = mean_std([100 * r["test_acc"] for r in runs])
        mem, sec = _mean(runs, "act_bytes_peak"), _fastest(runs)
        vs = ["-", "-", "-"]
        base = bp.get(record["data"])
        # A ratio to BP only where BP ran the same network (memory), on the same data
        # (time per epoch) and for as long (accuracy): noprop's own CNN against BP's mlp
        # would compare two networks, not two rules.
        if base is not None and _network(base) == _network(record):
            ref = chosen_runs(base)
            vs[1] = f"{mem / _mean(ref, 'act_bytes_peak'):.2f}x"
            if base.get("train_limit") == record.get("train_limit"):
                vs[2] = f"{sec / _fastest(ref):.2f}x"
                if base["epochs"] == record["epochs"]:
                    gap = acc - mean_std([100 * r["test_acc"] for r in ref])[0]
                    vs[0] = f"{gap:+.1f}"
        model = record["model"] + "".join(
            f" {k} {v}" for k, v in sorted(record.get("model_options", {}).items())
        )
        model += f", {record['epochs']} ep"
        if record.get("train_limit"):
            model += f", {record['train_limit']:,} train"
        claim = CLAIMS.get(record["rule"], "-") if record["data"] == "mnist" else "-"
        rows.append(
            [
                record["data"],
                record["rule"] + (" (new)" if record["rule"] in NEWEST else ""),
                model,
                str(runs[0]["blocks"]),
                f"{record['chosen_lr']:g} ({grid})",
                f"{acc:.2f} ± {sd:.2f} (n={len(runs)})",
                vs[0],
                f"{mem / 2**20:.2f} MiB",
                vs[1],
                f"{sec:.2f}" + ("" if record.get("under_lock", True) else " (no lock)"),
                vs[2],
                _load_range(runs),
                claim,
            ]
        )
    return rows


def section(results: list[dict[str, Any]]) -> str:
    headers = [
        "data",
        "rule",
        "model, epochs",
        "K",
        "chosen lr (seed-0 val acc per lr)",
        "test acc % (mean ± sd)",
        "vs BP (points)",
        "act_bytes_peak",
        "vs BP",
        "s/epoch (fastest)",
        "vs BP",
        "load",
        "the paper's claim",
    ]
    done = [r for r in results if r.get("complete")]
    loads = [
        x
        for r in done
        for run in r["runs"]
        for x in (run["load_before"], run["load_after"])
        if x is not None
    ]
    dates = sorted({r.get("date", "?") for r in done})
    machines = sorted({r.get("machine", "?") for r in done})
    commands = sorted({r.get("command", "?") for r in done})
    partial = [f"{r['data']}/{r['rule']}" for r in results if not r.get("complete")]
    lines = [
        "## The newest rules beside BP and the older rules (issue 16)",
        "",
        "- commands (each under `flock /tmp/locallearn-bench.lock`; the table: "
        "`python benchmarks/newest_rules.py --table`): " + "; ".join(f"`{c}`" for c in commands),
        f"- machine: {'; '.join(machines)}; {THREADS} thread per run; date: {', '.join(dates)}",
        "- load (1-minute loadavg before and after each run): "
        + (f"{min(loads):.2f} .. {max(loads):.2f}" if loads else "not recorded"),
        "- setting (defaults; each row shows its own): MNIST full (54,000 train, 6,000 "
        "validation, 10,000 test), mlp 3x1000 (a rule that cannot train it: cnn), 3 epochs; "
        "MNIST-1D (3,600 / 400 / 1,000), cnn1d (else mlp 2x100), 60 epochs; "
        "`--rule-model R=M` gives a rule its own model; batch, optimiser and model settings "
        "from each rule's recipe",
        "- choice on validation only: the recipe's lr x0.3, x1, x3 on seed 0, the best "
        "validation accuracy chosen, then seeds 1 and 2 at it; a rule run with `--no-grid` "
        "or fewer seeds shows one lr or a smaller n. Test accuracy chose nothing.",
        "- act_bytes_peak: bytes saved for backward at the peak of a training step (exact, "
        "device-independent); s/epoch: training time only, the fastest of the chosen runs "
        "(the machine is shared: the least disturbed one), measured in this one script, one "
        "run at a time under the lock, so the ratios to BP are side by side ('no lock': "
        "a pair run with `--unlocked`, beside other jobs: its time is not comparable)",
        "- vs BP: memory only against BP on the same network (model and its options), time "
        "per epoch only on the same training set as well, accuracy only for as many epochs "
        "as well; '-' where BP's row is another setting",
        f"- raw results: `{RESULTS.relative_to(ROOT)}/<data>__<rule>.json`",
    ]
    if partial:
        lines.append(f"- not finished (not in the table): {', '.join(partial)}")
    lines += [
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "---|" * len(headers),
        *("| " + " | ".join(r) + " |" for r in table_rows(results)),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rules", default=None, help="comma-separated (default: all studied)")
    parser.add_argument("--data", default="mnist,mnist1d", help="mnist, mnist1d or both")
    parser.add_argument("--seeds", default="0,1,2", help="the first one runs the lr grid")
    parser.add_argument("--epochs", type=int, default=None, help="default: the setting's")
    parser.add_argument("--train-limit", type=int, default=None, help="a stratified subset")
    parser.add_argument("--no-grid", action="store_true", help="the recipe's lr only")
    parser.add_argument("--resume", action="store_true", help="skip finished pairs")
    parser.add_argument(
        "--rule-model", default="", help="per-rule model, e.g. noprop=noprop-cnn (comma-separated)"
    )
    parser.add_argument("--table", action="store_true", help="only rebuild the section")
    parser.add_argument(
        "--unlocked",
        action="store_true",
        help="say that this run is not under the benchmark lock (its timings are marked)",
    )
    args = parser.parse_args()
    if not args.table:
        overrides = dict(p.split("=", 1) for p in args.rule_model.split(",") if p)
        for name in overrides.values():
            MODELS.get(name)  # an unknown model fails now, not after an hour
        wanted = args.rules.split(",") if args.rules else list(STUDIED)
        missing = [r for r in wanted if r not in RULES.names()]
        if missing:
            print(f"skipping rules not registered (yet): {', '.join(missing)}", flush=True)
        seeds = [int(s) for s in args.seeds.split(",")]
        os.makedirs(RESULTS, exist_ok=True)
        for data in args.data.split(","):
            for rule in [r for r in wanted if r in RULES.names()]:
                run_pair(data, rule, seeds, args, overrides)
    text = section(load_results())
    print(text)
    replace_section(SECTION, text)


if __name__ == "__main__":
    main()
