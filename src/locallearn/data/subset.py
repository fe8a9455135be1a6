"""``--train-limit N``: one fixed, stratified subset of the training set.

The subset depends only on the labels and N, never on the run seed, so runs with different
seeds (or different rules) train on exactly the same examples and stay comparable.
"""

from __future__ import annotations

import dataclasses
import operator

import numpy as np
import torch

from locallearn.data.base import Dataset
from locallearn.errors import UsageError

SUBSET_SEED = 0


def class_counts(labels: np.ndarray, n: int) -> np.ndarray:
    """How many of ``n`` examples each class gets: proportional, by largest remainder.

    Ties in the remainder go to the lower class index, so the allocation is deterministic.
    """
    totals = np.bincount(labels)
    quotas = n * totals / totals.sum()
    counts = np.floor(quotas).astype(np.int64)
    remainder = n - int(counts.sum())
    # Stable sort on -fraction keeps lower class indices first among equal fractions.
    order = np.argsort(-(quotas - counts), kind="stable")
    counts[order[:remainder]] += 1
    return counts


def stratified_indices(labels: np.ndarray | torch.Tensor, n: int) -> np.ndarray:
    """Sorted indices of a stratified subset of size ``n`` drawn with the fixed seed."""
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(SUBSET_SEED)  # local generator: global RNG state untouched
    chosen = []
    for label, count in enumerate(class_counts(labels, n)):
        members = np.flatnonzero(labels == label)
        chosen.append(members[rng.permutation(len(members))[:count]])
    return np.sort(np.concatenate(chosen))


def limit_train(dataset: Dataset, n: int) -> Dataset:
    """The dataset with its training split cut to the fixed stratified subset of size ``n``.

    Normalisation statistics are kept from the full training set, so a limited run sees
    inputs on the same scale as a full one.
    """
    size = len(dataset.y_train)
    try:
        # operator.index accepts ints and numpy integers but refuses floats and strings.
        valid = not isinstance(n, bool) and 1 <= operator.index(n) <= size
    except TypeError:
        valid = False
    if not valid:
        raise UsageError(
            f"--train-limit {n!r} is out of range for {dataset.name}: "
            f"it must be an integer from 1 to {size} (the training set size)"
        )
    if n == size:
        return dataset
    if dataset.task == "regression":  # no classes to stratify by: a fixed random subset
        order = np.random.default_rng(SUBSET_SEED).permutation(size)
        keep = torch.from_numpy(np.sort(order[: operator.index(n)]))
    else:
        keep = torch.from_numpy(stratified_indices(dataset.y_train.numpy(), operator.index(n)))
    return dataclasses.replace(
        dataset, x_train=dataset.x_train[keep], y_train=dataset.y_train[keep]
    )
