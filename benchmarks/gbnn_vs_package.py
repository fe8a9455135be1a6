"""GBNN in locallearn vs the ``gbnn`` package itself, side by side, plus a plain BP MLP.

    flock /tmp/locallearn-bench.lock python benchmarks/gbnn_vs_package.py

Same train/test splits (our registered datasets, features standardised on the train split,
handed to both as the same float arrays), same T and J, 5 seeds, one thread each. The package
runs in its own virtual environment, which this script creates if absent (``--venv``,
default /tmp/gbnn-venv): ``pip install --no-deps gbnn==0.0.2`` (it declares the dead
``sklearn`` name) plus ``scikit-learn==1.5.2 pandas numpy<2.3`` (its classifier breaks with
scikit-learn 1.9). Seeds: the package's ``random_state=seed`` and ``np.random.seed(seed)``
(its subsample uses numpy's global RNG); ours ``random_state=seed``. Fit time is the wall
time of ``fit`` alone, in one process each (the package's includes its one-off template
MLPClassifier fit, as its users pay it). The BP reference is ``LocalLearningClassifier("bp",
"mlp", depth=1, width=T*J)`` (ReLU, Adam 1e-2, 100 epochs, batch 64; regression targets
standardised by TransformedTargetRegressor), untuned.

Writes benchmarks/results/gbnn_vs_package.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

DATASETS = ("digits", "breast-cancer", "wine", "iris", "diabetes", "friedman1")
SHAPES = ((50, 1), (50, 4))  # (T, J): T*J = 50 and 200 hidden units
SEEDS = (0, 1, 2, 3, 4)

# Runs inside the package's venv: fit and score each (dataset, T, J, seed) it is given.
PACKAGE_WORKER = r"""
import json, sys, time, warnings
import numpy as np
warnings.filterwarnings("ignore")
from sklearn.metrics import r2_score
from gbnn import GNEGNEClassifier, GNEGNERegressor
jobs = json.load(open(sys.argv[1]))
# Warm-up (untimed): the first fit of a process pays one-off import and setup costs.
a = np.load(jobs[0]["npz"])
warm = GNEGNERegressor if jobs[0]["task"] == "regression" else GNEGNEClassifier
warm(total_nn=2, max_iter=5).fit(a["x_train"], a["y_train"])
out = []
for job in jobs:
    a = np.load(job["npz"])
    cls = GNEGNERegressor if job["task"] == "regression" else GNEGNEClassifier
    est = cls(total_nn=job["T"] * job["J"], num_nn_step=job["J"], random_state=job["seed"])
    np.random.seed(job["seed"])
    start = time.perf_counter()
    est.fit(a["x_train"], a["y_train"])
    seconds = time.perf_counter() - start
    pred = est.predict(a["x_test"])
    if job["task"] == "regression":
        score = float(r2_score(a["y_test"], pred))
    else:
        score = float(np.mean(pred == a["y_test"]))
    out.append(dict(job, score=score, seconds=seconds))
    print(json.dumps({k: out[-1][k] for k in ("data", "T", "J", "seed", "score", "seconds")}),
          file=sys.stderr, flush=True)
json.dump(out, open(sys.argv[2], "w"))
"""


def ensure_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import gbnn, sklearn; assert sklearn.__version__ == '1.5.2'"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--no-deps", "gbnn==0.0.2"], check=True)
    subprocess.run([*pip, "scikit-learn==1.5.2", "pandas", "numpy<2.3"], check=True)
    subprocess.run(check, check=True)
    return python


def export_splits(folder: Path) -> dict[str, dict]:
    from locallearn.data import load_dataset

    info = {}
    for name in DATASETS:
        d = load_dataset(name)
        path = folder / f"{name}.npz"
        np.savez(
            path,
            x_train=d.x_train.flatten(1).numpy().astype(np.float64),
            y_train=d.y_train.numpy(),
            x_test=d.x_test.flatten(1).numpy().astype(np.float64),
            y_test=d.y_test.numpy(),
        )
        info[name] = {"npz": str(path), "task": d.task, "train": len(d.y_train)}
    return info


def run_ours(info: dict[str, dict], log, shapes=None) -> list[dict]:
    import torch
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.metrics import r2_score
    from sklearn.preprocessing import StandardScaler

    from locallearn.sklearn import (
        GBNNClassifier,
        GBNNRegressor,
        LocalLearningClassifier,
        LocalLearningRegressor,
    )

    torch.set_num_threads(1)
    rows = []
    # Warm-up (untimed), as the package's worker: the first fit of a process pays one-off
    # costs (torch's lazy imports on the first optimizer step).
    warm_x = np.random.RandomState(0).randn(20, 3).astype(np.float32)
    GBNNClassifier(total_nn=2, max_iter=2, threads=1).fit(warm_x, np.arange(20) % 2)
    GBNNRegressor(total_nn=2, max_iter=2, threads=1).fit(warm_x, warm_x[:, 0])
    LocalLearningClassifier("bp", epochs=1, threads=1).fit(warm_x, np.arange(20) % 2)
    for name, meta in info.items():
        a = np.load(meta["npz"])
        regression = meta["task"] == "regression"
        for T, J in shapes or SHAPES:
            for seed in SEEDS:
                common = dict(random_state=seed, threads=1)
                gbnn = (GBNNRegressor if regression else GBNNClassifier)(
                    total_nn=T * J, num_nn_step=J, **common
                )
                bp_cls = LocalLearningRegressor if regression else LocalLearningClassifier
                bp = bp_cls("bp", "mlp", depth=1, width=T * J, epochs=100, batch_size=64, **common)
                if regression:
                    bp = TransformedTargetRegressor(bp, transformer=StandardScaler())
                for method, est in (("ours", gbnn), ("bp", bp)):
                    x_train = a["x_train"].astype(np.float32)
                    start = time.perf_counter()
                    est.fit(x_train, a["y_train"])
                    seconds = time.perf_counter() - start
                    pred = est.predict(a["x_test"].astype(np.float32))
                    score = (
                        float(r2_score(a["y_test"], pred))
                        if regression
                        else float(np.mean(pred == a["y_test"]))
                    )
                    row = dict(method=method, data=name, T=T, J=J, seed=seed)
                    rows.append(dict(row, score=score, seconds=seconds))
                    log(json.dumps(rows[-1]))
    return rows


def run_package(python: Path, info: dict[str, dict], folder: Path, shapes) -> list[dict]:
    jobs = [
        dict(data=name, npz=meta["npz"], task=meta["task"], T=T, J=J, seed=seed)
        for name, meta in info.items()
        for T, J in shapes
        for seed in SEEDS
    ]
    (folder / "jobs.json").write_text(json.dumps(jobs))
    (folder / "worker.py").write_text(PACKAGE_WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    subprocess.run(
        [
            str(python),
            str(folder / "worker.py"),
            str(folder / "jobs.json"),
            str(folder / "out.json"),
        ],
        check=True,
        env=env,
    )
    return [dict(r, method="package") for r in json.loads((folder / "out.json").read_text())]


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def table(rows: list[dict], info: dict[str, dict]) -> tuple[str, list[dict]]:
    lines = [
        "| dataset | T x J | metric | ours (GBNN, torch) | gbnn package | BP MLP | ours fit s | "
        "package fit s | BP fit s | package/ours time | score >= pkg - 1 std | faster |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    summary = []
    for name in DATASETS:
        for T, J in SHAPES:
            cell = {}
            for method in ("ours", "package", "bp"):
                sel = [
                    r
                    for r in rows
                    if (r["method"], r["data"], r["T"], r["J"]) == (method, name, T, J)
                ]
                cell[method] = {
                    "score": mean_std([r["score"] for r in sel]),
                    "seconds": mean_std([r["seconds"] for r in sel]),
                }
            ours, pkg = cell["ours"], cell["package"]
            ok = ours["score"][0] >= pkg["score"][0] - pkg["score"][1]
            faster = ours["seconds"][0] < pkg["seconds"][0]
            metric = "R^2" if info[name]["task"] == "regression" else "accuracy"

            def fmt(ms: tuple[float, float]) -> str:
                return f"{ms[0]:.4f} +- {ms[1]:.4f}"

            lines.append(
                f"| {name} | {T} x {J} | {metric} | {fmt(ours['score'])} | {fmt(pkg['score'])} "
                f"| {fmt(cell['bp']['score'])} | {ours['seconds'][0]:.2f} | "
                f"{pkg['seconds'][0]:.2f} | {cell['bp']['seconds'][0]:.2f} | "
                f"{pkg['seconds'][0] / ours['seconds'][0]:.2f}x | {'yes' if ok else 'NO'} | "
                f"{'yes' if faster else 'NO'} |"
            )
            summary.append(
                dict(
                    data=name,
                    T=T,
                    J=J,
                    metric=metric,
                    score_ok=ok,
                    faster=faster,
                    **{m: cell[m] for m in cell},
                )
            )
    return "\n".join(lines), summary


def markdown(result: dict, summary: list[dict], text: str) -> str:
    scores = sum(s["score_ok"] for s in summary)
    faster = sum(s["faster"] for s in summary)
    return f"""## GBNN: locallearn vs the `gbnn` package (issue 13)

- command: `flock /tmp/locallearn-bench.lock {result["command"]}` (results:
  `benchmarks/results/gbnn_vs_package.json`)
- machine: {result["machine"]}; 1 thread per fit (torch `set_num_threads(1)`; the package
  with `OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=1`); date: {result["date"]}
- load: before `{result["uptime_before"]}`, after `{result["uptime_after"]}`. Other helpers'
  jobs shared the 2 cores: absolute times are inflated and noisy; the two packages alternate
  per (dataset, shape), so the ratio is the figure to read.
- same fixed splits for both (our registered datasets; 30% test, 70/30 for the five tabular
  sets, 1437/360 for digits), 5 seeds, T x J as listed. Ours: `GBNNClassifier/Regressor`
  defaults (5 full-batch Adam steps per round at lr 3e-2, output layer refit by least
  squares at the end of each round; chosen on validation splits of the training sets:
  section "GBNN: the weak learner's budget for speed"). Package:
  `GNEGNEClassifier/Regressor(total_nn=T*J, num_nn_step=J, random_state=seed)`, its
  defaults otherwise (L-BFGS, max_iter 200), scikit-learn 1.5.2.
- BP MLP: `LocalLearningClassifier("bp", "mlp", depth=1, width=T*J)`, ReLU, Adam 1e-2,
  100 epochs, batch 64 (regression: targets standardised), untuned: a reference only.
- done-when: our mean score >= the package's mean - 1 std on {scores} of {len(summary)} rows;
  our fit time lower on {faster} of {len(summary)} rows.

{text}
"""


def main() -> None:
    global DATASETS, SEEDS, SHAPES
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--venv", default="/tmp/gbnn-venv")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/gbnn_vs_package.json"))
    parser.add_argument("--datasets", default=",".join(DATASETS), help="a smoke run: fewer")
    parser.add_argument("--seeds", type=int, default=len(SEEDS), help="seeds 0..N-1")
    parser.add_argument("--shapes", default=",".join(f"{t}x{j}" for t, j in SHAPES))
    parser.add_argument(
        "--no-write-md", dest="write_md", action="store_false", help="leave BENCHMARKS.md"
    )
    args = parser.parse_args()
    DATASETS = tuple(args.datasets.split(","))
    SEEDS = tuple(range(args.seeds))
    SHAPES = tuple(tuple(int(v) for v in s.split("x")) for s in args.shapes.split(","))

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    uptime_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    python = ensure_venv(Path(args.venv))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        info = export_splits(folder)
        start = time.perf_counter()
        rows = []
        # Alternate the two per (dataset, shape), so a change in the machine's load hits both.
        for name in DATASETS:
            for shape in SHAPES:
                rows += run_package(python, {name: info[name]}, folder, [shape])
                rows += run_ours({name: info[name]}, log, [shape])
        wall = time.perf_counter() - start
    text, summary = table(rows, info)
    uptime_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    from common import command_line, machine, replace_section, today

    from locallearn.engine.io import atomic_write_json

    result = {
        "command": command_line(),
        "machine": machine(),
        "date": today(),
        "threads": 1,
        "uptime_before": uptime_before,
        "uptime_after": uptime_after,
        "wall_seconds": wall,
        "shapes": SHAPES,
        "seeds": SEEDS,
        "summary": summary,
        "rows": [{k: v for k, v in r.items() if k != "npz"} for r in rows],
        "table": text,
    }
    atomic_write_json(args.out, result)
    if args.write_md:
        replace_section("gbnn-vs-package", markdown(result, summary, text))
    print(text)
    print(f"\nuptime before: {uptime_before}\nuptime after:  {uptime_after}")
    print(
        f"all scores ok: {all(s['score_ok'] for s in summary)}; "
        f"all faster: {all(s['faster'] for s in summary)}"
    )


if __name__ == "__main__":
    main()
