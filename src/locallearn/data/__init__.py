"""Datasets: a registry of named builders, and ``load_dataset`` to get one by name.

Importing this package imports every family module, which is what registers the entries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from locallearn.data import bundled, cifar, idx, mnist1d  # noqa: F401  (registers entries)
from locallearn.data.base import DATASETS, Dataset
from locallearn.data.files import resolve_data_dir
from locallearn.data.subset import limit_train


def load_dataset(
    name: str, data_dir: str | Path | None = None, train_limit: int | None = None
) -> Dataset:
    """Build the dataset called ``name`` (or an alias), cut to ``train_limit`` if given.

    Unknown names raise a UsageError listing the valid ones; missing or corrupt files raise
    a UsageError naming the file and where it was looked for.
    """
    entry = DATASETS.get(name)
    dataset = entry.build(resolve_data_dir(data_dir))
    if train_limit is not None:
        dataset = limit_train(dataset, train_limit)
    return dataset


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
    "DATASETS",
    "Dataset",
    "dataset_infos",
    "limit_train",
    "load_dataset",
    "resolve_data_dir",
]
