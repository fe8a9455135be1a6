"""The Dynamic Signal Distribution (DSD) task of Lahoti et al., ICLR 2024, sec. 4.

"Role of Locality and Weight Sharing in Image-Based Tasks: A Sample Complexity Separation
between CNNs, LCNs, and FCNs". An input is k patches of dimension d. The label y is +1 or -1
with equal probability; one patch, chosen uniformly, holds y * w_star (w_star a unit vector
of R^d, the same for every sample); every patch carries isotropic Gaussian noise N(0, s^2 I_d).

Samples are generated, never downloaded; the test set is fresh samples from the same
distribution (same w_star). Labels are 0/1 for the engine (0 <-> y = -1, 1 <-> y = +1).
Inputs have shape (k, d): one row per patch.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from locallearn.data.base import DATASETS, Dataset
from locallearn.errors import UsageError

DEFAULTS = {"patches": 4, "patch_dim": 16, "sigma": 0.5, "train_size": 1000}
TEST_SIZE = 2000


def signal_direction(patch_dim: int, seed: int) -> torch.Tensor:
    """w_star: a uniformly random unit vector of R^d, fixed by the seed.

    The paper's algorithms are orthogonally equivariant, so the direction does not matter;
    a random one (rather than e_1) keeps a coordinate-wise method from getting it for free.
    """
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(patch_dim, generator=g, dtype=torch.float64)
    return (w / w.norm()).float()


def sample_dsd(
    n: int, w_star: torch.Tensor, patches: int, sigma: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` DSD samples: (x of shape (n, k, d), labels in {0, 1}, index of the signal patch)."""
    d = w_star.numel()
    y = torch.randint(0, 2, (n,), generator=generator)
    where = torch.randint(0, patches, (n,), generator=generator)
    x = sigma * torch.randn(n, patches, d, generator=generator)
    sign = (2 * y - 1).float()  # 0/1 -> -1/+1
    x[torch.arange(n), where] += sign[:, None] * w_star
    return x, y, where


def make_dsd(
    patches: int = DEFAULTS["patches"],
    patch_dim: int = DEFAULTS["patch_dim"],
    sigma: float = DEFAULTS["sigma"],
    train_size: int = DEFAULTS["train_size"],
    test_size: int = TEST_SIZE,
    seed: int = 0,
) -> Dataset:
    """A DSD training set of ``train_size`` and a fresh test set of ``test_size`` samples."""
    for name, value in (
        ("patches", patches),
        ("patch-dim", patch_dim),
        ("train-size", train_size),
        ("test size", test_size),
    ):
        if value < 1:
            raise UsageError(f"--{name} must be a positive integer, got {value}")
    if not (sigma >= 0 and math.isfinite(sigma)):
        raise UsageError(f"--sigma must be a non-negative number, got {sigma}")
    w_star = signal_direction(patch_dim, seed)
    # Separate streams for train and test, so the test set is the same whatever train_size.
    train_gen = torch.Generator().manual_seed(seed * 2 + 1)
    test_gen = torch.Generator().manual_seed(seed * 2 + 2)
    x_train, y_train, _ = sample_dsd(train_size, w_star, patches, sigma, train_gen)
    x_test, y_test, _ = sample_dsd(test_size, w_star, patches, sigma, test_gen)
    return Dataset(
        name="dsd",
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        classes=2,
        source=f"generated: DSD k={patches} d={patch_dim} sigma={sigma:g} seed={seed}",
    )


def bayes_scores(x: torch.Tensor, w_star: torch.Tensor, sigma: float) -> torch.Tensor:
    """Log-likelihood ratio log p(x | y=+1) / p(x | y=-1) of the DSD model.

    With t_i = <w_star, x_i> / sigma^2, p(x | y) is proportional to sum_i exp(y t_i), so the
    ratio is logsumexp(t) - logsumexp(-t); its sign is the Bayes-optimal prediction.
    """
    t = (x @ w_star) / max(sigma, 1e-12) ** 2  # (n, k)
    return torch.logsumexp(t, dim=1) - torch.logsumexp(-t, dim=1)


def bayes_accuracy(dataset: Dataset, w_star: torch.Tensor, sigma: float) -> float:
    """Test accuracy of the Bayes-optimal classifier (knows w_star): the ceiling of any model."""
    pred = (bayes_scores(dataset.x_test, w_star, sigma) > 0).long()
    return float((pred == dataset.y_test).float().mean())


@DATASETS.register(
    "dsd",
    description="Dynamic Signal Distribution (Lahoti et al. 2024): k patches of dim d, "
    "one holds +-w_star, all noisy; binary",
    options=("patches", "patch_dim", "sigma", "train_size", "data_seed"),
    shape=(DEFAULTS["patches"], DEFAULTS["patch_dim"]),
    classes=2,
    source="generated (--patches, --patch-dim, --sigma, --train-size, --data-seed)",
)
def build_dsd(
    data_dir: Path | None,
    patches: int = DEFAULTS["patches"],
    patch_dim: int = DEFAULTS["patch_dim"],
    sigma: float = DEFAULTS["sigma"],
    train_size: int = DEFAULTS["train_size"],
    data_seed: int = 0,
) -> Dataset:
    return make_dsd(patches, patch_dim, sigma, train_size, TEST_SIZE, data_seed)
