"""A quick recheck of GBNN fit time, ours vs the ``gbnn`` package: wall and CPU seconds.

    flock /tmp/locallearn-bench.lock python benchmarks/gbnn_cpu_check.py wine,iris,diabetes

For each dataset and J in (1, 4): T = 50, seeds 0-2, the median of each package's fit time
as wall time and as this process's CPU time (``time.process_time``: on a shared machine it
counts only the time the fit ran, so the ratio suffers less from other jobs). Fits on the
training split only, no scores (``gbnn_vs_package.py`` has them). The package runs in the venv
``gbnn_vs_package.py`` makes (``--venv``). Prints one JSON line per row, the load before and
after; writes benchmarks/results/gbnn_cpu_check.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

WORKER = r"""
import json, sys, time, warnings
import numpy as np
warnings.filterwarnings("ignore")
from gbnn import GNEGNEClassifier, GNEGNERegressor
jobs = json.loads(sys.argv[1])
out = []
for i, j in enumerate(jobs):
    a = np.load(j["npz"])
    cls = GNEGNERegressor if j["task"] == "regression" else GNEGNEClassifier
    if i == 0:  # warm-up, untimed
        cls(total_nn=2, max_iter=5).fit(a["x_train"], a["y_train"])
    est = cls(total_nn=j["T"] * j["J"], num_nn_step=j["J"], random_state=j["seed"])
    np.random.seed(j["seed"])
    w, c = time.perf_counter(), time.process_time()
    est.fit(a["x_train"], a["y_train"])
    out.append(dict(j, wall=time.perf_counter() - w, cpu=time.process_time() - c))
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("datasets", nargs="?", default="wine,iris,diabetes,breast-cancer,digits")
    parser.add_argument("--venv", default="/tmp/gbnn-venv")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/gbnn_cpu_check.jsonl"))
    args = parser.parse_args()
    import torch

    from locallearn.data import load_dataset
    from locallearn.sklearn import GBNNClassifier, GBNNRegressor

    torch.set_num_threads(1)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    warm = np.random.RandomState(0).randn(20, 3).astype(np.float32)
    GBNNClassifier(total_nn=2, max_iter=2, threads=1).fit(warm, np.arange(20) % 2)
    GBNNRegressor(total_nn=2, max_iter=2, threads=1).fit(warm, warm[:, 0])
    lines = [Path("/proc/loadavg").read_text().strip()]
    print(lines[-1], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets.split(","):
            d = load_dataset(name)
            path = f"{tmp}/{name}.npz"
            x = d.x_train.flatten(1).numpy().astype(np.float64)
            np.savez(path, x_train=x, y_train=d.y_train.numpy())
            for units in (1, 4):
                jobs = [
                    dict(data=name, npz=path, task=d.task, T=50, J=units, seed=s) for s in range(3)
                ]
                python = str(Path(args.venv) / "bin" / "python")
                run = subprocess.run(
                    [python, "-c", WORKER, json.dumps(jobs)],
                    env=env, capture_output=True, text=True, check=True,
                )  # fmt: skip
                pkg = json.loads(run.stdout)
                ours = []
                cls = GBNNRegressor if d.task == "regression" else GBNNClassifier
                for seed in range(3):
                    est = cls(total_nn=50 * units, num_nn_step=units, random_state=seed, threads=1)
                    w, c = time.perf_counter(), time.process_time()
                    est.fit(x.astype(np.float32), d.y_train.numpy())
                    ours.append(dict(wall=time.perf_counter() - w, cpu=time.process_time() - c))
                row: dict = dict(data=name, J=units)
                for key, runs in (("pkg", pkg), ("ours", ours)):
                    for m in ("wall", "cpu"):
                        row[f"{key}_{m}"] = round(float(np.median([r[m] for r in runs])), 3)
                row["cpu_ratio"] = round(row["pkg_cpu"] / row["ours_cpu"], 2)
                row["wall_ratio"] = round(row["pkg_wall"] / row["ours_wall"], 2)
                lines.append(json.dumps(row))
                print(lines[-1], flush=True)
    lines.append(Path("/proc/loadavg").read_text().strip())
    print(lines[-1], flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
