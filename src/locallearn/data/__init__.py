"""Datasets: a registry of named builders, and ``load_dataset`` to get one by name.

Importing this package imports every family module, which is what registers the entries.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from locallearn.data import (  # noqa: F401  (registers entries)
    bundled,
    cifar,
    dsd,
    idx,
    mnist1d,
    shortcut,
    stl10,
    svhn,
    tabular,
)
from locallearn.data.base import DATASETS, Dataset
from locallearn.data.files import resolve_data_dir
from locallearn.data.subset import limit_train
from locallearn.errors import UsageError


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    train_limit: int | None = None,
    *,
    as_sequence: bool = False,
    **options: Any,
) -> Dataset:
    """Build the dataset called ``name`` (or an alias), cut to ``train_limit`` if given.

    ``options`` are the entry's own (None keeps its default; one it does not take is an
    error). ``as_sequence`` turns inputs into (length, features) sequences.
    Unknown names raise a UsageError listing the valid ones; missing or corrupt files raise
    a UsageError naming the file and where it was looked for.
    """
    entry = DATASETS.get(name)
    given = entry.given(options, "dataset")
    dataset = entry.build(resolve_data_dir(data_dir), **given)
    if train_limit is not None:
        dataset = limit_train(dataset, train_limit)
    if as_sequence:
        dataset = as_sequences(dataset)
    return dataset


def as_sequences(dataset: Dataset) -> Dataset:
    """Inputs as sequences for recurrent models: (C, L) signals become L steps of C features,
    (C, H, W) images H steps (rows) of W*C features."""

    def convert(x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            return x.transpose(1, 2).contiguous()
        if x.dim() == 4:
            n, c, h, w = x.shape
            return x.permute(0, 2, 3, 1).reshape(n, h, w * c).contiguous()
        raise UsageError(
            f"--as-sequence needs signals (C, L) or images (C, H, W); dataset {dataset.name!r} "
            f"has inputs of shape {'x'.join(map(str, dataset.input_shape))}"
        )

    return dataclasses.replace(
        dataset,
        x_train=convert(dataset.x_train),
        x_test=convert(dataset.x_test),
        augment=None,  # image augmentations do not apply to rows
    )


def dataset_infos() -> list[dict[str, Any]]:
    """One row per registered dataset, for ``locallearn list datasets``."""
    return [
        {
            "name": entry.name,
            "shape": tuple(entry.meta["shape"]),
            "classes": entry.meta["classes"],
            "source": entry.meta["source"],
            "description": entry.description,
        }
        for entry in DATASETS.entries()
    ]


__all__ = [
    "as_sequences",
    "DATASETS",
    "Dataset",
    "dataset_infos",
    "limit_train",
    "load_dataset",
    "resolve_data_dir",
]
