"""CIFAR-10 and CIFAR-100, python version: the ``cifar-10-batches-py`` and
``cifar-100-python`` folders users already have.

Each batch file is a pickle of a dict with b"data" (uint8, N x 3072: 1024 red, 1024 green,
1024 blue values, each a row-major 32x32 plane) and the labels: b"labels" (N ints) for
CIFAR-10; b"fine_labels" (100 classes) and b"coarse_labels" (20 superclasses) for CIFAR-100,
whose ``meta`` pickle names the classes. We train on the fine labels, as the papers do.

Both get the standard CIFAR augmentation (``--augment``): 4-pixel padding with black pixels,
random 32x32 crop, random horizontal flip (He et al., 2016, sec. 4.2).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from locallearn.data.augment import colour_images
from locallearn.data.base import DATASETS, Dataset
from locallearn.data.files import corrupt_file, locate_files, resolve_data_dir
from locallearn.data.safe_pickle import CIFAR_TYPES, safe_load

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
SUBDIRS = ("cifar10", "cifar-10-batches-py", "cifar10/cifar-10-batches-py")
SHAPE = (3, 32, 32)
NAME = "cifar10"


def _unpickle(path: Path, label: str) -> object:
    # Restricted: only the NumPy names a batch holds are admitted, so no file runs code.
    return safe_load(path, CIFAR_TYPES, encoding="bytes", dataset=label)


def read_batch(
    path: str | Path, label: str = NAME, labels_key: bytes = b"labels", classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR batch as images (N, 3, 32, 32) uint8 and labels (N,) int64.

    ``labels_key`` and ``classes`` select the label set: b"labels"/10 for CIFAR-10,
    b"fine_labels"/100 for CIFAR-100.
    The batches are pickles by format (written by Python 2); they are read with the
    restricted unpickler of ``safe_pickle``, which admits only NumPy's array types, so a
    crafted file is refused instead of run. ``encoding="bytes"`` is needed for the Python 2
    strings they contain.
    """
    path = Path(path)
    batch = _unpickle(path, label)
    if not isinstance(batch, dict):
        raise corrupt_file(label, path, f"holds a {type(batch).__name__}, expected a dict")
    data, labels = batch.get(b"data"), batch.get(labels_key)
    if data is None or labels is None:
        raise corrupt_file(label, path, f"no b'data' and {labels_key!r} entries")
    data = np.asarray(data)
    try:  # object dtype: a list holding None or strings is not a label list
        labels = np.asarray(labels)
    except ValueError:
        labels = np.asarray(labels, dtype=object)
    if labels.dtype.kind not in "iu" and not (labels.size == 0 and labels.ndim == 1):
        first = labels.ravel()[:3].tolist()
        raise corrupt_file(label, path, f"labels must be integers, got {labels.dtype} {first}")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise corrupt_file(label, path, f"data is {data.dtype} {data.shape}, expected uint8 Nx3072")
    if labels.ndim != 1 or len(labels) != len(data):
        raise corrupt_file(label, path, f"{len(data)} images but labels of shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise corrupt_file(
            label, path, f"labels outside 0..{classes - 1} ({labels.min()}..{labels.max()})"
        )
    return data.reshape(-1, *SHAPE), labels.astype(np.int64)


def load_cifar10(data_dir: Path | None) -> Dataset:
    """Read the five training batches and the test batch; normalise per colour channel."""
    root = resolve_data_dir(data_dir)
    paths = locate_files(NAME, root, SUBDIRS, (*TRAIN_BATCHES, TEST_BATCH))
    train = [read_batch(paths[name]) for name in TRAIN_BATCHES]
    x_test, y_test = read_batch(paths[TEST_BATCH])
    return colour_images(
        NAME,
        np.concatenate([x for x, _ in train]),
        np.concatenate([y for _, y in train]),
        x_test,
        y_test,
        source=f"CIFAR-10 python batches in {paths[TEST_BATCH].parent}",
        padding=4,
        flip=True,
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


# --- CIFAR-100 -------------------------------------------------------------------------------

NAME100 = "cifar100"
FILES100 = ("train", "test", "meta")
SUBDIRS100 = ("cifar100", "cifar-100-python", "cifar100/cifar-100-python")
CLASSES100 = 100


def read_meta100(path: Path) -> list[str]:
    """The 100 fine class names from the ``meta`` pickle; checks the file is CIFAR-100's."""
    meta = _unpickle(path, NAME100)
    names = meta.get(b"fine_label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != CLASSES100:
        raise corrupt_file(
            NAME100, path, f"no list of {CLASSES100} b'fine_label_names' (not CIFAR-100's meta)"
        )
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def load_cifar100(data_dir: Path | None) -> Dataset:
    """Read ``train`` (50000) and ``test`` (10000) with fine labels; normalise per channel."""
    root = resolve_data_dir(data_dir)
    paths = locate_files(NAME100, root, SUBDIRS100, FILES100)
    read_meta100(paths["meta"])
    x_train, y_train = read_batch(paths["train"], NAME100, b"fine_labels", CLASSES100)
    x_test, y_test = read_batch(paths["test"], NAME100, b"fine_labels", CLASSES100)
    return colour_images(
        NAME100,
        x_train,
        y_train,
        x_test,
        y_test,
        classes=CLASSES100,
        source=f"CIFAR-100 python files in {paths['test'].parent}",
        padding=4,
        flip=True,
    )


@DATASETS.register(
    NAME100,
    description="CIFAR-100 colour images, 32x32, 100 fine classes: 50000 train / 10000 test "
    "(your own copy of the python version)",
    shape=SHAPE,
    classes=CLASSES100,
    source="cifar-100-python files (train, test, meta) in <data_dir>/cifar100/, "
    "<data_dir>/cifar-100-python/ or <data_dir>/",
)
def build_cifar100(data_dir: Path | None) -> Dataset:
    return load_cifar100(data_dir)
