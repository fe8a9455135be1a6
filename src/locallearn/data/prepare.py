"""Turn raw arrays into a normalised ``Dataset``: the one place scaling happens."""

from __future__ import annotations

import numpy as np
import torch

from locallearn.data.base import Dataset


def normalise_per_channel(
    x_train: np.ndarray, x_test: np.ndarray
) -> tuple[np.ndarray, np.ndarray, tuple[float, ...], tuple[float, ...]]:
    """Standardise both splits with the training split's per-channel mean and std.

    Arrays are (N, C, ...). Statistics come from the training split only, so the test split
    stays unseen. The returned mean/std let a rule undo the normalisation.
    """
    axes = (0, *range(2, x_train.ndim))
    mean = x_train.mean(axis=axes, dtype=np.float64)
    std = x_train.std(axis=axes, dtype=np.float64)
    std = np.where(std > 0, std, 1.0)  # a constant channel carries nothing; avoid 0/0
    shape = (1, -1) + (1,) * (x_train.ndim - 2)
    m = mean.reshape(shape).astype(np.float32)
    s = std.reshape(shape).astype(np.float32)
    return (
        ((x_train - m) / s).astype(np.float32),
        ((x_test - m) / s).astype(np.float32),
        tuple(float(v) for v in mean),
        tuple(float(v) for v in std),
    )


def dataset_from_arrays(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    scale: float,
    source: str,
    classes: int = 10,
) -> Dataset:
    """Divide by ``scale`` (to [0, 1]), normalise per channel and wrap as tensors."""
    # float32 before dividing: full MNIST in float64 would need twice the memory.
    train = x_train.astype(np.float32) / np.float32(scale)
    test = x_test.astype(np.float32) / np.float32(scale)
    train, test, mean, std = normalise_per_channel(train, test)
    return Dataset(
        name=name,
        x_train=torch.from_numpy(np.ascontiguousarray(train)),
        y_train=torch.from_numpy(np.asarray(y_train, dtype=np.int64)),
        x_test=torch.from_numpy(np.ascontiguousarray(test)),
        y_test=torch.from_numpy(np.asarray(y_test, dtype=np.int64)),
        classes=classes,
        mean=mean,
        std=std,
        source=source,
    )
