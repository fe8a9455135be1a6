"""Shortcut bias of a classifier on the ``shortcut`` dataset (Hermann et al., ICLR 2024, sec. 2).

A classifier's *reliance* on the shortcut is how much more its predictions follow the shortcut
latent than the core latent, measured on the test set:

    R(f) = corr(f(x), z_s) - corr(f(x), z_c),

with f(x) in {-1, +1} its predicted label and corr the Pearson correlation. The *shortcut bias*
is the reliance beyond what the Bayes-optimal classifier (LDA on the latents: the best any
model can do) shows on the same samples:

    bias(f) = R(f) - R(f_bayes).

Zero: the model weighs the features as the data warrant; positive: it over-relies on the
shortcut; negative: on the core. Values lie in [-2, 2].
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from locallearn.data.base import Dataset
from locallearn.data.shortcut import ShortcutDataset
from locallearn.errors import UsageError


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    denom = a.norm() * b.norm()
    return 0.0 if denom == 0 else float((a @ b) / denom)  # a constant predictor follows nothing


def reliance(predictions: torch.Tensor, z: torch.Tensor) -> dict[str, float]:
    """corr with z_s, corr with z_c and their difference, for 0/1 predictions and (n, 2) latents
    with columns (z_s, z_c)."""
    signed = 2.0 * predictions.flatten().double() - 1.0
    corr_s, corr_c = _corr(signed, z[:, 0]), _corr(signed, z[:, 1])
    return {"corr_shortcut": corr_s, "corr_core": corr_c, "reliance": corr_s - corr_c}


def shortcut_bias_from_predictions(
    predictions: torch.Tensor, dataset: ShortcutDataset
) -> dict[str, float]:
    """The bias of 0/1 ``predictions`` made on ``dataset.x_test`` (see the module docstring).

    Returns bias, the model's reliance/corr_shortcut/corr_core/accuracy and the same four for
    the Bayes-optimal classifier (keys prefixed ``bayes_``).
    """
    if not isinstance(dataset, ShortcutDataset) or dataset.z_test is None:
        raise UsageError(
            f"shortcut bias needs the 'shortcut' dataset (it keeps the latent features); "
            f"got {dataset.name!r}"
        )
    predictions = predictions.flatten().long().cpu()
    if predictions.numel() != dataset.y_test.numel():
        raise UsageError(
            f"expected one prediction per test sample ({dataset.y_test.numel()}), "
            f"got {predictions.numel()}"
        )
    bayes = dataset.bayes_predictions()
    model = reliance(predictions, dataset.z_test)
    optimal = reliance(bayes, dataset.z_test)
    result = {"bias": model["reliance"] - optimal["reliance"], **model}
    result["accuracy"] = float((predictions == dataset.y_test).float().mean())
    result.update({f"bayes_{k}": v for k, v in optimal.items()})
    result["bayes_accuracy"] = float((bayes == dataset.y_test).float().mean())
    return result


@torch.no_grad()
def shortcut_bias(
    predict: Callable[[torch.Tensor], torch.Tensor] | nn.Module,
    dataset: Dataset,
    batch_size: int = 4096,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Shortcut bias of a classifier on the test set of a ``shortcut`` dataset.

    ``predict`` maps a batch of inputs to class scores (N, 2), one score per sample (N,) (> 0
    means class 1) or 0/1 labels; an ``nn.Module`` is run in eval mode (its mode is restored).
    Returns the dict of :func:`shortcut_bias_from_predictions`.
    """
    was_training = predict.training if isinstance(predict, nn.Module) else None
    if isinstance(predict, nn.Module):
        predict.eval()
    try:
        outs = []
        for start in range(0, dataset.x_test.shape[0], batch_size):
            x = dataset.x_test[start : start + batch_size].to(device)
            outs.append(_labels(predict(x)).cpu())
    finally:
        if isinstance(predict, nn.Module) and was_training:
            predict.train()
    return shortcut_bias_from_predictions(torch.cat(outs), dataset)  # type: ignore[arg-type]


def _labels(scores: torch.Tensor) -> torch.Tensor:
    if scores.dim() == 2 and scores.shape[1] == 2:
        return scores.argmax(dim=1)
    if scores.dim() == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]
    if scores.dim() != 1:
        raise UsageError(f"expected scores of shape (N, 2) or (N,), got {tuple(scores.shape)}")
    if scores.dtype in (torch.int64, torch.int32, torch.bool):
        return scores.long()
    return (scores > 0).long()
