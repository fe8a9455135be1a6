"""The in-memory dataset every rule trains on, and the dataset registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from locallearn.registry import Registry


@dataclass
class Dataset:
    """A whole dataset as tensors, already normalised.

    ``x_*`` are float32 of shape (N, *input_shape); ``y_*`` are int64 class indices, or for
    ``task == "regression"`` float32 targets of shape (N,) (and ``classes`` is 1: the number
    of outputs).
    ``mean``/``std`` are the per-channel statistics that were subtracted/divided, so a rule
    that needs the raw input (a reconstruction loss) can undo them.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: int
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    source: str = ""
    # Training-time augmentation of a batch (already on the device), drawing its randomness
    # from the generator; None when the dataset defines none. Applied with --augment.
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None
    task: str = "classification"  # or "regression" (see TASKS)
    # The validation split (``--val-split``), held out of the training set; None: none.
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


TASKS = ("classification", "regression")

# Builders take (data_dir: pathlib.Path | None, **dataset options) and return a Dataset;
# entries carry meta: shape (tuple), classes (int), source (str), and task (str, default
# classification).
DATASETS: Registry[Dataset] = Registry("dataset")
