"""STL-10 (Coates et al., 2011), binary release: the ``stl10_binary`` folder.

``train_X.bin`` / ``test_X.bin`` hold uint8 images back to back, each 3 x 96 x 96: the red,
green and blue planes in turn, each plane stored column-major (as MATLAB writes it), so a
plane read in C order is the transposed image. ``train_y.bin`` / ``test_y.bin`` hold one
uint8 label per image, 1..10; we subtract 1. The 100,000 unlabelled images are not read.

``--augment``: random crop after 4 pixels of black padding and a random horizontal flip, the
InfoPro reference code's STL-10 recipe (RandomCrop(96, padding=4) + flip).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from locallearn.data.augment import colour_images
from locallearn.data.base import DATASETS, Dataset
from locallearn.data.files import corrupt_file, locate_files, resolve_data_dir
from locallearn.errors import UsageError

NAME = "stl10"
SIDE = 96
SHAPE = (3, SIDE, SIDE)
IMAGE_BYTES = 3 * SIDE * SIDE
FILES = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin")
SUBDIRS = ("stl10", "stl10_binary", "stl10/stl10_binary")
PADDING = 4


def _read(path: Path) -> np.ndarray:
    try:
        return np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise UsageError(f"{NAME}: cannot read {path}: {error}") from error


def read_images(path: str | Path) -> np.ndarray:
    """Images of one ``*_X.bin`` file as (N, 3, 96, 96) uint8, rows first."""
    path = Path(path)
    raw = _read(path)
    if raw.size == 0 or raw.size % IMAGE_BYTES:
        raise corrupt_file(
            NAME, path, f"{raw.size} bytes is not a whole number of {IMAGE_BYTES}-byte images"
        )
    # Column-major planes: swap the last two axes to get (row, column).
    return np.ascontiguousarray(raw.reshape(-1, 3, SIDE, SIDE).transpose(0, 1, 3, 2))


def read_labels(path: str | Path) -> np.ndarray:
    """Labels of one ``*_y.bin`` file as class indices 0..9 (int64)."""
    path = Path(path)
    raw = _read(path)
    if raw.size and (raw.min() < 1 or raw.max() > 10):
        raise corrupt_file(NAME, path, f"labels outside 1..10 ({raw.min()}..{raw.max()})")
    return raw.astype(np.int64) - 1


def _split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_images(images_path), read_labels(labels_path)
    if len(images) != len(labels):
        raise UsageError(
            f"{NAME}: {images_path} holds {len(images)} images but {labels_path} holds "
            f"{len(labels)} labels; the files do not belong together"
        )
    return images, labels


def load_stl10(data_dir: Path | None) -> Dataset:
    root = resolve_data_dir(data_dir)
    paths = locate_files(NAME, root, SUBDIRS, FILES)
    x_train, y_train = _split(paths["train_X.bin"], paths["train_y.bin"])
    x_test, y_test = _split(paths["test_X.bin"], paths["test_y.bin"])
    return colour_images(
        NAME,
        x_train,
        y_train,
        x_test,
        y_test,
        source=f"STL-10 binary files in {paths['test_X.bin'].parent}",
        padding=PADDING,
        flip=True,
    )


@DATASETS.register(
    NAME,
    description="STL-10 colour images, 96x96, labelled part: 5000 train / 8000 test (your own "
    "stl10_binary files)",
    shape=SHAPE,
    classes=10,
    source="train_X.bin, train_y.bin, test_X.bin, test_y.bin in <data_dir>/stl10/, "
    "<data_dir>/stl10_binary/ or <data_dir>/",
)
def build_stl10(data_dir: Path | None) -> Dataset:
    return load_stl10(data_dir)
