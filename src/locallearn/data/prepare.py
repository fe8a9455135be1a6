"""Turn raw arrays into a normalised ``Dataset``: the one place scaling happens."""

from __future__ import annotations

import numpy as np
import torch

from locallearn.data.base import Dataset

CHUNK = 256  # samples per pass of the statistics: a float64 copy of one chunk, not of all


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of (N, C, ...) ``x``, accumulated in float64
    chunk by chunk (two passes: the mean, then the squared deviations from it), so no
    float64 copy of the whole array is ever made (full MNIST: 376 MB)."""
    axes = (0, *range(2, x.ndim))
    n = x.shape[0] * (int(np.prod(x.shape[2:])) if x.ndim > 2 else 1)
    total = np.zeros(x.shape[1], dtype=np.float64)
    for start in range(0, x.shape[0], CHUNK):
        total += x[start : start + CHUNK].sum(axis=axes, dtype=np.float64)
    mean = total / max(1, n)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    squares = np.zeros(x.shape[1], dtype=np.float64)
    for start in range(0, x.shape[0], CHUNK):
        d = x[start : start + CHUNK].astype(np.float64)
        d -= mean.reshape(shape)
        d *= d
        squares += d.sum(axis=axes)
    return mean, np.sqrt(squares / max(1, n))


def normalise_per_channel(
    x_train: np.ndarray, x_test: np.ndarray, *, inplace: bool = False
) -> tuple[np.ndarray, np.ndarray, tuple[float, ...], tuple[float, ...]]:
    """Standardise both splits with the training split's per-channel mean and std.

    Arrays are (N, C, ...). Statistics come from the training split only, so the test split
    stays unseen. The returned mean/std let a rule undo the normalisation. ``inplace``
    (float32 arrays the caller owns) normalises them without another copy.
    """
    mean, std = channel_stats(x_train)
    std = np.where(std > 0, std, 1.0)  # a constant channel carries nothing; avoid 0/0
    shape = (1, -1) + (1,) * (x_train.ndim - 2)
    m = mean.reshape(shape).astype(np.float32)
    s = std.reshape(shape).astype(np.float32)

    def apply(x: np.ndarray) -> np.ndarray:
        if inplace and x.dtype == np.float32:
            out = x
            out -= m
        else:
            out = np.subtract(x, m, dtype=np.float32)
        out /= s
        return out

    return (
        apply(x_train),
        apply(x_test),
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
    train = x_train.astype(np.float32)
    train /= np.float32(scale)
    test = x_test.astype(np.float32)
    test /= np.float32(scale)
    # In place: the loaded dataset's peak memory is the float32 arrays plus the raw bytes.
    train, test, mean, std = normalise_per_channel(train, test, inplace=True)
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
