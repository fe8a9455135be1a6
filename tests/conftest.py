"""Shared fixtures: a per-session dataset cache and small, fast datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from locallearn.data import Dataset, load_dataset

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Generated datasets (MNIST-1D) are cached once per test session, never in $HOME.
    os.environ["LOCALLEARN_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def mnist1d_small() -> Dataset:
    return load_dataset("mnist1d", train_limit=500)


@pytest.fixture(scope="session")
def digits_small() -> Dataset:
    return load_dataset("digits", train_limit=500)


def data_for_rank(rank: int, mnist1d: Dataset, digits: Dataset) -> Dataset:
    """A small dataset whose inputs have ``rank`` dims: (1, 40) sequences or (1, 8, 8) images."""
    return mnist1d if rank == 2 else digits


@pytest.fixture(scope="session")
def result_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    """A folder of tiny runs in every state (see results_fixtures.make_runs)."""
    from results_fixtures import make_runs

    root = tmp_path_factory.mktemp("result-runs")
    return root, make_runs(root)
