"""CIFAR-10, python version: the ``cifar-10-batches-py`` folder users already have.

Each batch file is a pickle of a dict with b"data" (uint8, N x 3072: 1024 red, 1024 green,
1024 blue values, each a row-major 32x32 plane) and b"labels" (N ints).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from locallearn.data.base import DATASETS, Dataset
from locallearn.data.files import corrupt_file, locate_files, resolve_data_dir
from locallearn.data.prepare import dataset_from_arrays

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
SUBDIRS = ("cifar10", "cifar-10-batches-py", "cifar10/cifar-10-batches-py")
SHAPE = (3, 32, 32)
NAME = "cifar10"

# A damaged pickle fails in many ways depending on where the damage is; all mean "corrupt".
UNPICKLE_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    OSError,
    ValueError,
    TypeError,
    AttributeError,
    ImportError,
    IndexError,
    KeyError,
    OverflowError,
    MemoryError,
)


def read_batch(path: str | Path, label: str = NAME) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 batch as images (N, 3, 32, 32) uint8 and labels (N,) int64.

    The batches are pickles by format (written by Python 2), so reading one runs the pickle
    machinery: like any pickle, only load batch files from a source you trust.
    ``encoding="bytes"`` is needed for the Python 2 strings they contain.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except UNPICKLE_ERRORS as error:
        why = f"cannot read it as a pickle ({type(error).__name__}: {error})"
        raise corrupt_file(label, path, why) from error
    if not isinstance(batch, dict):
        raise corrupt_file(label, path, f"holds a {type(batch).__name__}, expected a dict")
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if data is None or labels is None:
        raise corrupt_file(label, path, "no b'data' and b'labels' entries")
    data, labels = np.asarray(data), np.asarray(labels)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise corrupt_file(label, path, f"data is {data.dtype} {data.shape}, expected uint8 Nx3072")
    if labels.ndim != 1 or len(labels) != len(data):
        raise corrupt_file(label, path, f"{len(data)} images but labels of shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= 10):
        raise corrupt_file(label, path, f"labels outside 0..9 ({labels.min()}..{labels.max()})")
    return data.reshape(-1, *SHAPE), labels.astype(np.int64)


def load_cifar10(data_dir: Path | None) -> Dataset:
    """Read the five training batches and the test batch; normalise per colour channel."""
    root = resolve_data_dir(data_dir)
    paths = locate_files(NAME, root, SUBDIRS, (*TRAIN_BATCHES, TEST_BATCH))
    train = [read_batch(paths[name]) for name in TRAIN_BATCHES]
    x_test, y_test = read_batch(paths[TEST_BATCH])
    return dataset_from_arrays(
        NAME,
        np.concatenate([x for x, _ in train]),
        np.concatenate([y for _, y in train]),
        x_test,
        y_test,
        scale=255.0,
        source=f"CIFAR-10 python batches in {paths[TEST_BATCH].parent}",
    )


@DATASETS.register(
    NAME,
    description="CIFAR-10 colour images, 32x32: 50000 train / 10000 test (your own copy of "
    "the python version)",
    shape=SHAPE,
    classes=10,
    source="cifar-10-batches-py files in <data_dir>/cifar10/, "
    "<data_dir>/cifar-10-batches-py/ or <data_dir>/",
)
def build_cifar10(data_dir: Path | None) -> Dataset:
    return load_cifar10(data_dir)
