"""NoProp-DT's learning rate, chosen on a validation split of the MNIST training set.

5,000 training and 1,000 validation rows, both carved from MNIST's training set (a fixed
permutation, seed 0; the test set is not read), T = 10, batch 128, one epoch per lr, seed 0:

    python benchmarks/noprop_lr.py
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

import locallearn
from locallearn.data import load_dataset
from locallearn.engine.io import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results" / "noprop_lr.json"
DATA_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def main() -> None:
    data = load_dataset("mnist", DATA_DIR)
    order = torch.randperm(data.x_train.shape[0], generator=torch.Generator().manual_seed(0))
    tr, va = order[:5000], order[5000:6000]
    split = (data.x_train[tr], data.y_train[tr], data.x_train[va], data.y_train[va])
    rows = []
    for lr in (3e-4, 1e-3, 3e-3):
        s = locallearn.train(
            rule="noprop",
            model="cnn",
            data=split,
            epochs=1,
            seed=0,
            lr=lr,
            val_split=0.0,
            threads=1,
        )
        rows.append({"lr": lr, "val_acc": s["test_acc"], "train_loss": s["train_loss"]})
        print(json.dumps(rows[-1]), flush=True)
        atomic_write_json(RESULTS, rows)


if __name__ == "__main__":
    main()
