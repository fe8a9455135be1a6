"""The idx file format (MNIST, Fashion-MNIST, KMNIST) and the datasets stored in it.

An idx file is a big-endian header -- two zero bytes, a dtype code, the number of dimensions,
then one uint32 per dimension -- followed by the raw values in C order. The first four bytes
read as one integer are the "magic number": 2051 for MNIST images (ubyte, 3 dims) and 2049
for labels (ubyte, 1 dim). Files may be gzip-compressed, as distributed.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from locallearn.data.base import DATASETS, Dataset
from locallearn.data.files import corrupt_file, locate_files, resolve_data_dir
from locallearn.data.prepare import dataset_from_arrays
from locallearn.errors import UsageError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049

# dtype codes from the idx specification; multi-byte values are big-endian.
DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
SUFFIXES = ("", ".gz")
SIDE = 28


def _read_bytes(path: Path, label: str) -> bytes:
    try:
        with path.open("rb") as f:
            raw = f.read()
    except OSError as error:
        raise UsageError(f"{label}: cannot read {path}: {error}") from error
    # Decide by content, not by name: a renamed or already-decompressed file still reads.
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise corrupt_file(label, path, f"damaged gzip data ({error})") from error
    return raw


def read_idx(path: str | Path, magic: int | None = None, label: str = "idx") -> np.ndarray:
    """Read one idx file (plain or gzip) into an array in native byte order.

    ``magic``, when given, is the required first four bytes as a big-endian integer. Every
    inconsistency (magic, unknown dtype, declared size vs bytes present) raises a UsageError
    naming the file, since a bad file is the user's to replace, not a bug.
    """
    path = Path(path)
    raw = _read_bytes(path, label)
    if len(raw) < 4:
        raise corrupt_file(label, path, f"only {len(raw)} bytes, shorter than an idx header")
    found = int.from_bytes(raw[:4], "big")
    if magic is not None and found != magic:
        raise corrupt_file(label, path, f"magic number {found}, expected {magic}")
    code, ndim = raw[2], raw[3]
    if raw[:2] != b"\x00\x00" or code not in DTYPES:
        raise corrupt_file(label, path, f"not an idx header (first bytes {raw[:4].hex()})")
    start = 4 + 4 * ndim
    if len(raw) < start:
        raise corrupt_file(label, path, f"header declares {ndim} dimensions but is truncated")
    dims = struct.unpack(f">{ndim}I", raw[4:start])
    dtype = DTYPES[code]
    count = math.prod(dims)
    expected, actual = count * dtype.itemsize, len(raw) - start
    if actual != expected:
        raise corrupt_file(
            label, path, f"header declares shape {dims} ({expected} data bytes), file has {actual}"
        )
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=start).reshape(dims)
    return data.astype(dtype.newbyteorder("="))  # native order, and a writable copy


def _split(label: str, images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, IMAGES_MAGIC, label)
    labels = read_idx(labels_path, LABELS_MAGIC, label)
    if images.shape[1:] != (SIDE, SIDE):
        raise corrupt_file(label, images_path, f"images are {images.shape[1:]}, expected 28x28")
    if len(images) != len(labels):
        raise UsageError(
            f"{label}: {images_path} holds {len(images)} images but {labels_path} holds "
            f"{len(labels)} labels; the files do not belong together"
        )
    if labels.size and labels.max() >= 10:
        raise corrupt_file(label, labels_path, f"label {labels.max()} outside 0..9")
    return images, labels


def load_idx_dataset(name: str, data_dir: Path | None, subdirs: tuple[str, ...]) -> Dataset:
    """Load the four standard idx files of an MNIST-like dataset and normalise it."""
    root = resolve_data_dir(data_dir)
    paths = locate_files(name, root, subdirs, list(FILES.values()), SUFFIXES)
    x_train, y_train = _split(name, paths[FILES["train_images"]], paths[FILES["train_labels"]])
    x_test, y_test = _split(name, paths[FILES["test_images"]], paths[FILES["test_labels"]])
    source = f"idx files in {paths[FILES['train_images']].parent}"
    return dataset_from_arrays(
        name, x_train[:, None], y_train, x_test[:, None], y_test, scale=255.0, source=source
    )


def _register(name: str, description: str, subdirs: tuple[str, ...]) -> None:
    where = f"idx files (.gz or plain) in <data_dir>/{name}/ or <data_dir>/"

    @DATASETS.register(
        name, description=description, shape=(1, SIDE, SIDE), classes=10, source=where
    )
    def build(data_dir: Path | None) -> Dataset:
        return load_idx_dataset(name, data_dir, subdirs)


# Folder names tried under the data root, besides the root itself; "X/raw" is the layout
# torchvision leaves behind, so existing downloads work as they are.
_register(
    "mnist",
    "MNIST handwritten digits, 28x28: 60000 train / 10000 test (your own idx files)",
    ("mnist", "MNIST/raw", "MNIST"),
)
_register(
    "fashion-mnist",
    "Fashion-MNIST clothing images, 28x28: 60000 train / 10000 test (your own idx files)",
    ("fashion-mnist", "fashion_mnist", "FashionMNIST/raw", "FashionMNIST"),
)
_register(
    "kmnist",
    "Kuzushiji-MNIST cursive Japanese characters, 28x28: 60000 / 10000 (your own idx files)",
    ("kmnist", "KMNIST/raw", "KMNIST"),
)
