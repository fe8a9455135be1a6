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


VAL_SEED = 1  # the validation split's own stream, apart from --train-limit's subset


def split_validation(dataset: Dataset, fraction: float, seed: int = 0) -> Dataset:
    """``--val-split F``: hold out a stratified fraction of the training set for validation.

    The split depends on the labels, ``fraction`` and ``seed`` (the data seed) only, never on
    the run seed, so every rule and every run seed validates on the same examples. Each
    class keeps at least one training example.
    """
    if fraction <= 0:
        return dataset
    labels = dataset.y_train.numpy()
    n_val = int(round(fraction * len(labels)))
    if n_val < 1 or n_val >= len(labels):
        raise UsageError(
            f"--val-split {fraction} leaves no validation or no training example out of "
            f"{len(labels)}; choose a fraction between {1 / len(labels):.3g} and "
            f"{1 - 1 / len(labels):.3g}, or 0 to turn validation off"
        )
    rng = np.random.default_rng([VAL_SEED, seed])
    if dataset.task == "regression":  # no classes to stratify by: a fixed random subset
        val = np.sort(rng.permutation(len(labels))[:n_val])
    else:
        labels = labels.astype(np.int64)
        chosen = []
        for label, count in enumerate(class_counts(labels, n_val)):
            members = np.flatnonzero(labels == label)
            chosen.append(members[rng.permutation(len(members))[: min(count, len(members) - 1)]])
        val = np.sort(np.concatenate(chosen))
    mask = np.ones(len(labels), dtype=bool)
    mask[val] = False
    train, val_t = torch.from_numpy(np.flatnonzero(mask)), torch.from_numpy(val)
    return dataclasses.replace(
        dataset,
        x_train=dataset.x_train[train],
        y_train=dataset.y_train[train],
        x_val=dataset.x_train[val_t],
        y_val=dataset.y_train[val_t],
    )
