"""SVHN, cropped digits (Netzer et al., 2011): ``train_32x32.mat`` and ``test_32x32.mat``.

Each file is a MATLAB v5 file with ``X``, uint8 of shape (32, 32, 3, N) (height, width,
colour, image), and ``y``, shape (N, 1), labels 1..10 where 10 stands for the digit 0. We map
10 to 0 so the class index is the digit. The ``extra`` set is not read (the papers train on
the 73,257 ``train`` images).

``--augment``: random crop after 2 pixels of black padding and *no* flip, the InfoPro
reference code's SVHN recipe (a mirrored digit is another digit, or none).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from locallearn.data.augment import colour_images
from locallearn.data.base import DATASETS, Dataset
from locallearn.data.files import corrupt_file, locate_files, resolve_data_dir

NAME = "svhn"
FILES = ("train_32x32.mat", "test_32x32.mat")
SUBDIRS = ("svhn", "SVHN")
SHAPE = (3, 32, 32)
PADDING = 2


def read_mat(path: str | Path, label: str = NAME) -> tuple[np.ndarray, np.ndarray]:
    """Read one SVHN .mat file as images (N, 3, 32, 32) uint8 and digits (N,) int64."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    path = Path(path)
    try:
        mat = loadmat(path, variable_names=("X", "y"))
    except (MatReadError, OSError, ValueError, TypeError, KeyError, EOFError) as error:
        why = f"cannot read it as a MATLAB v5 file ({type(error).__name__}: {error})"
        raise corrupt_file(label, path, why) from error
    if "X" not in mat or "y" not in mat:
        raise corrupt_file(label, path, f"no 'X' and 'y' variables (found {sorted(mat)})")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"])
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise corrupt_file(label, path, f"X is {x.dtype} {x.shape}, expected uint8 32x32x3xN")
    y = y.reshape(-1)
    if len(y) != x.shape[3]:
        raise corrupt_file(label, path, f"{x.shape[3]} images but {len(y)} labels")
    if y.size and (y.min() < 1 or y.max() > 10):
        raise corrupt_file(label, path, f"labels outside 1..10 ({y.min()}..{y.max()})")
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1))  # (H, W, C, N) -> (N, C, H, W)
    return images, (y.astype(np.int64) % 10)  # label 10 is the digit 0


def load_svhn(data_dir: Path | None) -> Dataset:
    root = resolve_data_dir(data_dir)
    paths = locate_files(NAME, root, SUBDIRS, FILES)
    x_train, y_train = read_mat(paths["train_32x32.mat"])
    x_test, y_test = read_mat(paths["test_32x32.mat"])
    return colour_images(
        NAME,
        x_train,
        y_train,
        x_test,
        y_test,
        source=f"SVHN .mat files in {paths['test_32x32.mat'].parent}",
        padding=PADDING,
        flip=False,
    )


@DATASETS.register(
    NAME,
    description="SVHN house-number digits, 32x32 colour: 73257 train / 26032 test (your own "
    "train_32x32.mat / test_32x32.mat)",
    shape=SHAPE,
    classes=10,
    source="train_32x32.mat, test_32x32.mat in <data_dir>/svhn/ or <data_dir>/",
)
def build_svhn(data_dir: Path | None) -> Dataset:
    return load_svhn(data_dir)
