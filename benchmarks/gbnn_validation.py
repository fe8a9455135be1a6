"""GBNN's weak-learner budget on validation splits of the training sets (never the test set).

    python benchmarks/gbnn_validation.py iris,wine,breast-cancer,diabetes,digits,friedman1
    python benchmarks/gbnn_validation.py DATASETS --grid speed --units 1   # and --units 4

25% of each training split held out (``train_test_split(random_state=1)``, stratified for
classification); T = 50 rounds of J (``--units``) units, full batch, refit on unless the grid
says otherwise, seeds 0 and 1; prints one JSON line per (steps, lr, refit) with the mean
validation score (accuracy, R^2 for regression; NaN where a run diverged). Grids: ``first``
(the one the 30-step default came from) and ``speed`` (steps 5-30 x lr 1e-2-1e-1, the
estimators' current default's; ``--cells`` keeps only the listed ``STEPSxLR`` cells). The
scores are the figure; timings beside other jobs are not.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from locallearn.config import RunConfig
from locallearn.data import load_dataset
from locallearn.engine.run import Run
from locallearn.errors import Diverged

GRIDS = {
    "first": [(20, 0.01, False), (20, 0.01, True), (20, 0.03, True), (30, 0.01, True),
              (50, 0.01, False), (50, 0.01, True)],
    "speed": [(s, lr, True) for s in (5, 10, 15, 20, 30) for lr in (0.01, 0.03, 0.05, 0.1)],
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("datasets", nargs="?", default="iris,wine,breast-cancer,diabetes")
    parser.add_argument("--grid", choices=sorted(GRIDS), default="first")
    parser.add_argument("--units", type=int, default=1, help="J, hidden units per round")
    parser.add_argument("--cells", default="", help="e.g. 5x0.03,30x0.01 (default: all)")
    args = parser.parse_args()
    grid = GRIDS[args.grid]
    if args.cells:
        keep = {(int(s), float(lr)) for s, lr in (c.split("x") for c in args.cells.split(","))}
        grid = [g for g in grid if (g[0], g[1]) in keep]
    torch.set_num_threads(1)
    for name in args.datasets.split(","):
        d = load_dataset(name)
        regression = d.task == "regression"
        rows = np.arange(len(d.y_train))
        fit, val = train_test_split(
            rows, test_size=0.25, random_state=1, stratify=None if regression else d.y_train
        )
        split = dataclasses.replace(
            d,
            x_train=d.x_train[fit],
            y_train=d.y_train[fit],
            x_test=d.x_train[val],
            y_test=d.y_train[val],
        )
        for steps, lr, refit in grid:
            scores = []
            for seed in (0, 1):
                cfg = RunConfig(
                    rule="gbnn", data=name, gb_rounds=50, gb_units=args.units, gb_steps=steps,
                    gb_refit=refit, lr=lr, batch_size=10**9, epochs=1, seed=seed, threads=1,
                    val_split=0.0,
                )  # fmt: skip
                try:
                    s = Run(cfg, dataset=split).fit()
                    scores.append(s["test_r2"] if regression else s["test_acc"])
                except Diverged:  # the multi-class Newton step blew up (iris)
                    scores.append(math.nan)
            row = dict(data=name, units=args.units, steps=steps, lr=lr, refit=refit)
            row.update(val=[round(v, 4) for v in scores], mean=round(float(np.mean(scores)), 4))
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
