"""Synthetic shortcut-learning data after Hermann et al., ICLR 2024, sec. 2.

"On the Foundations of Shortcut Learning". Two latent features, a *core* z_c and a *shortcut*
z_s, each a noisy copy of the label y in {-1, +1}:

    z_i | y ~ N(y * mu_i, 1),  mu_i = Phi^{-1}(rho_i),

so the *predictivity* rho_i is exactly P(sign z_i = y), "how often the feature agrees with the
label". *Availability* is how the latent is embedded in the input x: each latent is written
into its own block of ``EMBED_DIM`` coordinates along a fixed random unit direction, scaled by
its *amplification* alpha_i, then passed through ``nesting`` eta_i fixed random tanh layers
(eta = 0: linear embedding). x = [block_s, block_c].

Given y the latents are independent unit-variance Gaussians, so the Bayes-optimal classifier
is linear in z (LDA): predict sign(mu_s z_s + mu_c z_c). Labels are 0/1 for the engine
(0 <-> y = -1). The test set keeps its latents (``z_test``) for the bias measure
(``locallearn.studies.shortcut``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from locallearn.data.base import DATASETS, Dataset
from locallearn.errors import UsageError

EMBED_DIM = 16
TEST_SIZE = 2000
DEFAULTS = {
    "core_predictivity": 0.9,
    "shortcut_predictivity": 0.8,
    "core_amplification": 1.0,
    "shortcut_amplification": 1.0,
    "core_nesting": 0,
    "shortcut_nesting": 0,
    "train_size": 2000,
}


@dataclass
class ShortcutDataset(Dataset):
    """A Dataset that also carries the test set's latents, columns (z_s, z_c), and mu."""

    z_test: torch.Tensor | None = None
    mu: tuple[float, float] = (0.0, 0.0)  # (mu_s, mu_c)

    def bayes_predictions(self) -> torch.Tensor:
        """0/1 predictions of the Bayes-optimal classifier on the test set."""
        assert self.z_test is not None
        return ((self.z_test @ torch.tensor(self.mu)) > 0).long()


def latent_mean(predictivity: float) -> float:
    """mu with P(N(mu, 1) > 0) = predictivity."""
    return math.sqrt(2.0) * torch.erfinv(torch.tensor(2.0 * predictivity - 1.0)).item()


def _embedding(amplification: float, nesting: int, generator: torch.Generator):
    direction = torch.randn(EMBED_DIM, generator=generator)
    direction = direction / direction.norm()
    # Nesting layers: fixed random maps scaled to keep unit gain, tanh between them.
    layers = [
        torch.randn(EMBED_DIM, EMBED_DIM, generator=generator) / math.sqrt(EMBED_DIM)
        for _ in range(nesting)
    ]

    def embed(z: torch.Tensor) -> torch.Tensor:
        h = amplification * z[:, None] * direction  # (n, EMBED_DIM)
        for w in layers:
            h = torch.tanh(h @ w.T)
        return h

    return embed


def sample_latents(
    n: int, mu: tuple[float, float], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels in {0, 1}, latents (n, 2) with columns z_s, z_c)."""
    y = torch.randint(0, 2, (n,), generator=generator)
    sign = (2 * y - 1).float()[:, None]
    z = sign * torch.tensor(mu) + torch.randn(n, 2, generator=generator)
    return y, z


def make_shortcut(
    core_predictivity: float = DEFAULTS["core_predictivity"],
    shortcut_predictivity: float = DEFAULTS["shortcut_predictivity"],
    core_amplification: float = DEFAULTS["core_amplification"],
    shortcut_amplification: float = DEFAULTS["shortcut_amplification"],
    core_nesting: int = DEFAULTS["core_nesting"],
    shortcut_nesting: int = DEFAULTS["shortcut_nesting"],
    train_size: int = DEFAULTS["train_size"],
    test_size: int = TEST_SIZE,
    seed: int = 0,
) -> ShortcutDataset:
    for name, value in (
        ("core-predictivity", core_predictivity),
        ("shortcut-predictivity", shortcut_predictivity),
    ):
        if not 0.5 <= value < 1:
            raise UsageError(f"--{name} must be in [0.5, 1), got {value}")
    for name, value in (
        ("core-amplification", core_amplification),
        ("shortcut-amplification", shortcut_amplification),
    ):
        if not (value > 0 and math.isfinite(value)):
            raise UsageError(f"--{name} must be a positive number, got {value}")
    for name, value in (("core-nesting", core_nesting), ("shortcut-nesting", shortcut_nesting)):
        if value < 0:
            raise UsageError(f"--{name} must be >= 0, got {value}")
    for name, value in (("train-size", train_size), ("test size", test_size)):
        if value < 1:
            raise UsageError(f"--{name} must be a positive integer, got {value}")
    mu = (latent_mean(shortcut_predictivity), latent_mean(core_predictivity))
    g = torch.Generator().manual_seed(seed)
    embed_s = _embedding(shortcut_amplification, shortcut_nesting, g)
    embed_c = _embedding(core_amplification, core_nesting, g)

    def inputs(z: torch.Tensor) -> torch.Tensor:
        return torch.cat([embed_s(z[:, 0]), embed_c(z[:, 1])], dim=1)

    y_train, z_train = sample_latents(train_size, mu, torch.Generator().manual_seed(seed * 2 + 1))
    y_test, z_test = sample_latents(test_size, mu, torch.Generator().manual_seed(seed * 2 + 2))
    return ShortcutDataset(
        name="shortcut",
        x_train=inputs(z_train),
        y_train=y_train,
        x_test=inputs(z_test),
        y_test=y_test,
        classes=2,
        source=(
            f"generated: shortcut rho_s={shortcut_predictivity:g} rho_c={core_predictivity:g} "
            f"alpha_s={shortcut_amplification:g} alpha_c={core_amplification:g} "
            f"eta_s={shortcut_nesting} eta_c={core_nesting} seed={seed}"
        ),
        z_test=z_test,
        mu=mu,
    )


@DATASETS.register(
    "shortcut",
    description="Hermann et al. 2024 synthetic data: a core and a shortcut latent feature of "
    "settable predictivity and availability; binary",
    options=(*DEFAULTS, "data_seed"),
    shape=(2 * EMBED_DIM,),
    classes=2,
    source="generated (--core-/--shortcut-predictivity, -amplification, -nesting)",
)
def build_shortcut(data_dir: Path | None, data_seed: int = 0, **options: float) -> Dataset:
    return make_shortcut(**options, test_size=TEST_SIZE, seed=data_seed)
