"""GBNN's weak-learner budget on validation splits of the training sets (never the test set).

    python benchmarks/gbnn_validation.py iris,wine,breast-cancer,diabetes,digits,friedman1

25% of each training split held out (``train_test_split(random_state=1)``, stratified for
classification); T = 50 rounds of J = 1 unit, full batch, seeds 0 and 1; prints one JSON line
per (steps, lr, refit). The scores are the figure; timings beside other jobs are not.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from locallearn.config import RunConfig
from locallearn.data import load_dataset
from locallearn.engine.run import Run

GRID = [(20, 0.01, False), (20, 0.01, True), (20, 0.03, True), (30, 0.01, True),
        (50, 0.01, False), (50, 0.01, True)]  # fmt: skip


def main(names: str) -> None:
    torch.set_num_threads(1)
    for name in names.split(","):
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
        for steps, lr, refit in GRID:
            scores, seconds = [], []
            for seed in (0, 1):
                cfg = RunConfig(
                    rule="gbnn", data=name, gb_rounds=50, gb_steps=steps, gb_refit=refit,
                    lr=lr, batch_size=10**9, epochs=1, seed=seed, threads=1, val_split=0.0,
                )  # fmt: skip
                start = time.perf_counter()
                s = Run(cfg, dataset=split).fit()
                seconds.append(time.perf_counter() - start)
                scores.append(s["test_r2"] if regression else s["test_acc"])
            row = dict(data=name, steps=steps, lr=lr, refit=refit)
            row.update(val=round(float(np.mean(scores)), 4), sec=round(float(np.mean(seconds)), 2))
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "iris,wine,breast-cancer,diabetes")
