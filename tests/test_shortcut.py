"""The shortcut dataset (Hermann et al. 2024) and the shortcut-bias measure."""

import math

import pytest
import torch

from locallearn.data import load_dataset
from locallearn.data.shortcut import EMBED_DIM, latent_mean, make_shortcut
from locallearn.errors import UsageError
from locallearn.studies.shortcut import (
    reliance,
    shortcut_bias,
    shortcut_bias_from_predictions,
)


def test_latent_mean_gives_the_predictivity():
    assert latent_mean(0.5) == pytest.approx(0.0, abs=1e-6)
    # Phi(1.2816) = 0.9, Phi(0.8416) = 0.8.
    assert latent_mean(0.9) == pytest.approx(1.28155, abs=1e-4)
    assert latent_mean(0.8) == pytest.approx(0.84162, abs=1e-4)


@pytest.mark.parametrize("rho_c,rho_s", [(0.9, 0.7), (0.6, 0.95)])
def test_predictivity_is_the_agreement_rate(rho_c, rho_s):
    data = make_shortcut(
        core_predictivity=rho_c, shortcut_predictivity=rho_s, train_size=10, test_size=20000
    )
    signed_y = 2 * data.y_test - 1
    agree_s = (torch.sign(data.z_test[:, 0]) == signed_y).float().mean().item()
    agree_c = (torch.sign(data.z_test[:, 1]) == signed_y).float().mean().item()
    # Binomial standard error at n = 20000 is at most 0.0036: allow about 3 of them.
    assert agree_s == pytest.approx(rho_s, abs=0.011)
    assert agree_c == pytest.approx(rho_c, abs=0.011)


def test_embedding_amplification_and_nesting():
    data = make_shortcut(shortcut_amplification=5.0, train_size=10, test_size=500)
    assert data.input_shape == (2 * EMBED_DIM,)
    xs, xc = data.x_test[:, :EMBED_DIM], data.x_test[:, EMBED_DIM:]
    # Linear embedding: each block is its latent times a fixed direction scaled by alpha.
    assert torch.allclose(xs.norm(dim=1), 5.0 * data.z_test[:, 0].abs(), atol=1e-4)
    assert torch.allclose(xc.norm(dim=1), 1.0 * data.z_test[:, 1].abs(), atol=1e-4)
    nested = make_shortcut(core_nesting=2, train_size=10, test_size=500)
    xc = nested.x_test[:, EMBED_DIM:]
    assert xc.abs().max() < 1  # tanh output
    assert not torch.allclose(xc.norm(dim=1), nested.z_test[:, 1].abs(), atol=1e-2)


def test_shortcut_options_and_errors():
    data = load_dataset("shortcut", core_predictivity=0.75, train_size=64, data_seed=3)
    assert len(data.y_train) == 64 and data.classes == 2
    assert data.mu[1] == pytest.approx(latent_mean(0.75))
    with pytest.raises(UsageError, match="--core-predictivity must be in \\[0.5, 1\\), got 1.2"):
        load_dataset("shortcut", core_predictivity=1.2)
    with pytest.raises(UsageError, match="--shortcut-amplification must be a positive number"):
        load_dataset("shortcut", shortcut_amplification=0.0)


def test_reliance_hand_computed():
    # Predictions equal sign(z_s): corr with z_s computed by hand on four points.
    z = torch.tensor([[2.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-2.0, -1.0]])
    pred = torch.tensor([1, 1, 0, 0])
    r = reliance(pred, z)
    # signed prediction s = (1, 1, -1, -1); z_s = (2, 1, -1, -2): corr = 6 / (2 * sqrt(10)).
    assert r["corr_shortcut"] == pytest.approx(6 / (2 * math.sqrt(10)))
    # z_c = (1, -1, 1, -1) is orthogonal to s: corr 0.
    assert r["corr_core"] == pytest.approx(0.0)
    assert r["reliance"] == pytest.approx(r["corr_shortcut"])
    assert reliance(torch.ones(4, dtype=torch.long), z)["reliance"] == 0.0  # constant


def _phi(t):
    return math.exp(-t * t / 2) / math.sqrt(2 * math.pi)


def _cdf(t):
    return 0.5 * (1 + math.erf(t / math.sqrt(2)))


def population_reliance_single(mu_a, mu_b, rho_a):
    """corr(sign z_a, z_a) - corr(sign z_a, z_b) for z_i = y mu_i + N(0, 1).

    E[sign(z_a) z_a] = E|N(mu_a, 1)| = mu_a (1 - 2 Phi(-mu_a)) + 2 phi(mu_a);
    E[sign(z_a) z_b] = mu_b E[sign(z_a) y] = mu_b (2 rho_a - 1); sign has variance 1 and the
    latents variance 1 + mu^2.
    """
    own = (mu_a * (1 - 2 * _cdf(-mu_a)) + 2 * _phi(mu_a)) / math.sqrt(1 + mu_a**2)
    other = mu_b * (2 * rho_a - 1) / math.sqrt(1 + mu_b**2)
    return own - other


def population_reliance_bayes(mu_s, mu_c):
    """Reliance of sign(u), u = mu_s z_s + mu_c z_c = y M^2 + N(0, M^2), M^2 = mu_s^2 + mu_c^2.

    E[sign(u) z_i] = mu_i (2 Phi(M) - 1) + E[sign(u) e_i], and regressing e_i on u gives
    E[sign(u) e_i] = (mu_i / M^2) E[sign(u)(u - y M^2)] = 2 mu_i phi(M) / M.
    """
    m = math.sqrt(mu_s**2 + mu_c**2)

    def corr(mu):
        return (mu * (2 * _cdf(m) - 1) + 2 * mu * _phi(m) / m) / math.sqrt(1 + mu**2)

    return corr(mu_s) - corr(mu_c)


def test_bias_of_hand_built_predictors():
    data = make_shortcut(
        core_predictivity=0.9, shortcut_predictivity=0.8, train_size=10, test_size=20000
    )
    z = data.z_test
    bayes = shortcut_bias_from_predictions(data.bayes_predictions(), data)
    assert bayes["bias"] == pytest.approx(0.0, abs=1e-12)
    # The Bayes rule weighs the core more (mu_c > mu_s): it relies on it more.
    assert bayes["bayes_reliance"] < 0
    shortcut_only = shortcut_bias_from_predictions((z[:, 0] > 0).long(), data)
    core_only = shortcut_bias_from_predictions((z[:, 1] > 0).long(), data)
    # Population values, by hand (mu_s, mu_c from rho 0.8, 0.9; see population_reliance).
    mu_s, mu_c = latent_mean(0.8), latent_mean(0.9)
    r_bayes = population_reliance_bayes(mu_s, mu_c)
    expect_s = population_reliance_single(mu_s, mu_c, 0.8) - r_bayes
    expect_c = -population_reliance_single(mu_c, mu_s, 0.9) - r_bayes
    assert bayes["bayes_reliance"] == pytest.approx(r_bayes, abs=0.02)
    assert shortcut_only["bias"] == pytest.approx(expect_s, abs=0.03), shortcut_only
    assert core_only["bias"] == pytest.approx(expect_c, abs=0.03), core_only
    assert shortcut_only["bias"] > 0 > core_only["bias"]
    assert shortcut_only["accuracy"] == pytest.approx(0.8, abs=0.011)
    assert core_only["accuracy"] == pytest.approx(0.9, abs=0.011)
    assert bayes["bayes_accuracy"] > core_only["accuracy"]


def test_bias_through_a_network_reading_one_block():
    data = make_shortcut(train_size=10, test_size=4000)
    # A linear map onto the shortcut block's direction recovers z_s, so its sign predicts.
    xs = data.x_test[:, :EMBED_DIM]
    direction = xs[0] / xs[0].norm() * torch.sign(data.z_test[0, 0])
    net = torch.nn.Linear(2 * EMBED_DIM, 1, bias=False)
    with torch.no_grad():
        net.weight.zero_()
        net.weight[0, :EMBED_DIM] = direction
    net.train()
    result = shortcut_bias(net, data, batch_size=1000)
    assert net.training  # mode restored
    expected = shortcut_bias_from_predictions((data.z_test[:, 0] > 0).long(), data)
    assert result["bias"] == pytest.approx(expected["bias"])
    # Two-column scores and plain callables work the same way.
    two = shortcut_bias(lambda x: torch.cat([-net(x), net(x)], dim=1), data)
    assert two["bias"] == pytest.approx(expected["bias"])


def test_bias_needs_the_shortcut_dataset(mnist1d_small):
    with pytest.raises(UsageError, match="needs the 'shortcut' dataset"):
        shortcut_bias(lambda x: x[:, 0, 0], mnist1d_small)
    data = make_shortcut(train_size=10, test_size=100)
    with pytest.raises(UsageError, match="one prediction per test sample \\(100\\)"):
        shortcut_bias_from_predictions(torch.zeros(5), data)
