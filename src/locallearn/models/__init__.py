"""Model registry. Every model is an ``nn.Sequential`` of *units*: cut points lie between
units, so any contiguous slice of the list is itself a runnable network."""

from locallearn.models import (  # noqa: F401  (registration)
    cnn,
    dsd,
    gnn,
    lcn,
    mlp,
    recurrent,  # noqa: F401  (registration)
    resnet,
    vgg,
)
from locallearn.models.base import MODELS, build_model, model_infos

__all__ = ["MODELS", "build_model", "model_infos"]
