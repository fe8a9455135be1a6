"""Probes: neural collapse and filter quality against hand-computed cases, linear probes,
and `locallearn probe` on tiny finished runs of every registered rule."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import locallearn
from locallearn.cli import main
from locallearn.errors import UsageError
from locallearn.models import MODELS
from locallearn.probes import (
    filter_quality,
    linear_probe,
    nc1,
    nc2,
    nc3,
    nc4,
    neural_collapse,
    pool_features,
    probe_run,
    sparsity,
    variance_entropy,
)
from locallearn.probes.run import last_features
from locallearn.rules import RULES, rule_applies

# -- neural collapse (Papyan, Han & Donoho 2020) -----------------------------------------
# Two classes, four points in 2-D. Class 0: (-1, 1), (-3, -1), mean (-2, 0); class 1:
# (1, 1), (3, -1), mean (2, 0); global mean 0. Deviations from the class means are
# (1, 1), (-1, -1), (-1, 1), (1, -1), so Sigma_W = (1/4) * 4 I = I. Sigma_B = (1/2)((-2,0)^2 +
# (2,0)^2) = diag(4, 0), Sigma_B^+ = diag(1/4, 0): NC1 = Tr(I diag(1/4, 0)) / 2 = 1/8. The
# vertical spread is orthogonal to the class means and does not count.
H2 = np.array([[-1.0, 1.0], [-3.0, -1.0], [1.0, 1.0], [3.0, -1.0]])
Y2 = np.array([0, 0, 1, 1])


def test_nc1_hand_computed():
    assert nc1(H2, Y2) == pytest.approx(1 / 8)


def test_nc1_is_zero_for_collapsed_features_and_matches_the_direct_formula():
    means = np.array([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0], [-1.0, -1.0, 1.0]])
    labels = np.array([0, 1, 2, 2, 1, 0, 0])
    assert nc1(means[labels], labels) == pytest.approx(0.0, abs=1e-20)
    # Unbalanced random case against Tr(Sigma_W pinv(Sigma_B)) / C written out directly.
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=60)
    h = means[labels] + 0.3 * rng.standard_normal((60, 3))
    mu = np.stack([h[labels == c].mean(0) for c in range(3)])
    mu_g = h.mean(0)
    within = h - mu[labels]
    sigma_w = within.T @ within / 60
    sigma_b = (mu - mu_g).T @ (mu - mu_g) / 3
    direct = np.trace(sigma_w @ np.linalg.pinv(sigma_b)) / 3
    assert nc1(h, labels) == pytest.approx(direct, rel=1e-9)


def test_nc2_hand_computed_and_simplex_etf():
    # One point per class at m1 = (2, 0), m2 = (-1, 1), m3 = (-1, -1): mean 0, norms 2, sqrt2,
    # sqrt2. cos(m1, m2) = cos(m1, m3) = -2 / (2 sqrt2) = -1/sqrt2, cos(m2, m3) = 0. With
    # C = 3, |cos + 1/2| = 0.5 - 1/sqrt2 (x2, absolute) and 0.5: average (2(1/sqrt2 - 0.5)
    # + 0.5) / 3.
    h = np.array([[2.0, 0.0], [-1.0, 1.0], [-1.0, -1.0]])
    out = nc2(h, np.array([0, 1, 2]))
    norms = [2.0, math.sqrt(2), math.sqrt(2)]
    mean = sum(norms) / 3
    sd = math.sqrt(sum((n - mean) ** 2 for n in norms) / 3)
    assert out["equinorm"] == pytest.approx(sd / mean)
    assert out["equiangle"] == pytest.approx((2 * (1 / math.sqrt(2) - 0.5) + 0.5) / 3)
    # A simplex ETF (three unit vectors 120 degrees apart) has equal norms and cos = -1/2.
    angles = np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3])
    etf = np.stack([np.cos(angles), np.sin(angles)], axis=1) * 5.0
    out = nc2(np.repeat(etf, 4, axis=0), np.repeat([0, 1, 2], 4))
    assert out["equinorm"] == pytest.approx(0.0, abs=1e-12)
    assert out["equiangle"] == pytest.approx(0.0, abs=1e-12)


def test_nc3_hand_computed():
    # Centred class means of H2: (-2, 0), (2, 0) -> normalised (-1/sqrt2, 0), (1/sqrt2, 0).
    aligned = np.array([[-1.0, 0.0], [1.0, 0.0]])  # W proportional to M: self-duality
    assert nc3(H2, Y2, aligned * 7) == pytest.approx(0.0, abs=1e-12)
    # W = (0, -1), (0, 1): W/||W|| - M/||M|| has four entries of +-1/sqrt2 -> 4 * 1/2 = 2.
    assert nc3(H2, Y2, np.array([[0.0, -1.0], [0.0, 1.0]])) == pytest.approx(2.0)


def test_nc4_counts_disagreements_with_nearest_class_mean():
    # Class means (-2, 0) and (2, 0). A network that predicts the labels agrees with the
    # nearest mean on all four points; flipping one prediction makes 1 of 4 disagree.
    assert nc4(H2, Y2, Y2) == 0.0
    assert nc4(H2, Y2, np.array([0, 1, 1, 1])) == pytest.approx(0.25)
    # A query point (0.5, 9) is nearer (2, 0): a network saying class 0 disagrees.
    assert nc4(H2, Y2, np.array([0]), query=np.array([[0.5, 9.0]])) == 1.0
    out = neural_collapse(H2, Y2, np.array([[-1.0, 0.0], [1.0, 0.0]]), Y2)
    assert out["nc1"] == pytest.approx(1 / 8) and out["nc3"] == pytest.approx(0.0, abs=1e-12)
    assert out["nc4"] == 0.0 and out["nc2_w_equinorm"] == pytest.approx(0.0)


# -- filter quality (Gavrikov & Keuper 2022) -----------------------------------------------
def test_variance_entropy_hand_computed():
    identical = torch.tensor([[1.0, 2, 3, 4, 5, 6, 7, 8, 9]]).repeat(12, 1)
    assert variance_entropy(identical.double()) == 0.0
    # e_i and -e_i for i = 1..9: mean 0, so the centred matrix is itself, with nine equal
    # singular values sqrt2: energy 1/9 each, entropy log10 9 (the maximum).
    spread = torch.cat([torch.eye(9), -torch.eye(9)]).double()
    assert variance_entropy(spread) == pytest.approx(math.log10(9))
    # The nine unit filters alone: centring removes the mean (1/9,...,1/9), leaving I - J/9,
    # singular values 1 (eight times) and 0: entropy log10 8.
    assert variance_entropy(torch.eye(9).double()) == pytest.approx(math.log10(8))
    # Filters varying along one direction only: one nonzero singular value, entropy 0.
    line = torch.outer(torch.arange(5.0), torch.ones(9)).double()
    assert variance_entropy(line) == pytest.approx(0.0, abs=1e-12)


def test_sparsity_hand_computed():
    filters = torch.tensor(
        [
            [1.0] + [0.0] * 8,  # holds the layer's largest |w|
            [0.009] * 9,  # every |w| below 1% of 1.0: sparse
            [0.0] * 8 + [0.011],  # one weight above the threshold: not sparse
            [-0.005] * 9,  # sparse (magnitudes count)
        ]
    ).double()
    assert sparsity(filters) == pytest.approx(0.5)
    assert sparsity(torch.zeros(3, 9).double()) == 1.0


def test_filter_quality_reads_conv_layers_of_a_network():
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.Conv1d(1, 3, 5))
    with torch.no_grad():
        net[0].weight.copy_(torch.ones(4, 2, 3, 3))
    layers = filter_quality(net)
    assert [r["layer"] for r in layers] == ["0", "3"], "1x1 kernels have no spatial structure"
    first = layers[0]
    assert first["filters"] == 8 and first["kernel"] == [3, 3] and first["paper_case"]
    assert first["variance_entropy"] == 0.0 and first["sparsity"] == 0.0
    assert first["max_entropy"] == pytest.approx(math.log10(9))
    assert layers[1]["max_entropy"] == pytest.approx(math.log10(5)) and not layers[1]["paper_case"]


# -- linear probes -------------------------------------------------------------------------
def test_pool_features_flattens_small_maps_and_pools_large_ones():
    flat, how = pool_features(torch.randn(3, 25, 5), max_features=2048)
    assert flat.shape == (3, 125) and how == "flatten"
    pooled, how = pool_features(torch.randn(3, 32, 16, 16), max_features=2048)
    assert pooled.shape == (3, 32 * 8 * 8) and how == "average pool to 8x8"
    gap, how = pool_features(torch.randn(3, 4096, 4, 4), max_features=2048)
    assert gap.shape == (3, 4096) and how == "global average pool"
    x = torch.arange(24.0).reshape(2, 3, 4)
    assert torch.equal(pool_features(x, max_features=3)[0], x.mean(dim=2))


def test_linear_probe_separates_separable_features_and_not_noise():
    g = torch.Generator().manual_seed(0)
    y_train, y_test = (
        torch.randint(0, 4, (200,), generator=g),
        torch.randint(0, 4, (100,), generator=g),
    )
    centres = 3 * torch.randn(4, 6, generator=g)
    x_train = centres[y_train] + 0.1 * torch.randn(200, 6, generator=g)
    x_test = centres[y_test] + 0.1 * torch.randn(100, 6, generator=g)
    result = linear_probe(x_train, y_train, x_test, y_test, 4)
    assert result["test_acc"] == 1.0 and result["train_acc"] == 1.0
    noise = linear_probe(
        torch.randn(200, 6, generator=g), y_train, torch.randn(100, 6, generator=g), y_test, 4
    )
    assert noise["test_acc"] < 0.5, "labels independent of features cannot be predicted"
    chosen = linear_probe(x_train, y_train, x_test, y_test, 4, l2_grid=(1e-3, 1e-1))
    assert chosen["l2"] in (1e-3, 1e-1) and chosen["val_acc"] == 1.0


def test_last_features_is_the_input_of_the_last_linear_to_run():
    class Backwards(nn.Module):  # declares its output layer first
        def __init__(self) -> None:
            super().__init__()
            self.out = nn.Linear(3, 2)
            self.hidden = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(torch.relu(self.hidden(x)))

    net = nn.Sequential(Backwards())
    x = torch.randn(7, 4)
    feats, layer = last_features(net, x)
    assert layer is net[0].out
    assert torch.allclose(feats, torch.relu(net[0].hidden(x)))
    assert last_features(nn.Sequential(nn.ReLU()), x) is None


# -- probe on finished runs of every rule ---------------------------------------------------
def _model_and_data(rule: str) -> tuple[str, str]:
    """A registered model the rule applies to, preferring the small ones, and tiny data of
    the rank it takes: MNIST-1D sequences (1, 40) or digits images (1, 8, 8)."""
    for model in ("mlp", "cnn1d", "cnn", *MODELS.names()):
        if not rule_applies(rule, model):
            continue
        ranks = MODELS.get(model).meta.get("ranks") or (2,)
        if 2 in ranks or 3 in ranks:
            return model, "mnist1d" if 2 in ranks else "digits"
    pytest.skip(f"no model for sequences or 8x8 images applies to rule {rule}")


@pytest.mark.parametrize("rule", RULES.names())
def test_probe_runs_on_a_finished_run_of_every_rule(rule, tmp_path):
    model, data = _model_and_data(rule)
    options = {"blocks": 2} if "blocks" in RULES.get(rule).options else {}
    own_network = RULES.get(rule).meta.get("own_network", False)
    if rule == "noprop":  # its blocks are not a chain of units: tests/test_noprop.py
        pytest.skip("noprop refuses unit-by-unit probes (tested in tests/test_noprop.py)")
    if own_network:  # GBNN: 3 rounds of 2 steps; its rounds are stages, not network slices
        options = {"gb_rounds": 3, "gb_steps": 2}
    out = tmp_path / "run"
    summary = locallearn.train(
        rule=rule, model=model, data=data, train_limit=100, epochs=1, out=out, **options
    )
    report = probe_run(out, max_train=80)
    units = report["units"]
    # A rule may reshape the network it trains (FF drops the output layer); the boundaries
    # are those of the rule's network: the input, then each of its units.
    assert [u["boundary"] for u in units] == list(range(len(units)))
    assert units[0]["after"] == "input" and units[0]["features"] == (
        40 if data == "mnist1d" else 64
    )
    ends = [u["boundary"] for u in units if u["block_end"] is not None]
    assert len(ends) == (1 if own_network else summary["blocks"]) and ends[-1] == len(units) - 1
    assert [u["block_end"] for u in units if u["block_end"]] == list(range(1, len(ends) + 1))
    assert all(0.0 <= u["test_acc"] <= 1.0 for u in units)
    assert report["test_acc"] == summary["test_acc"], "the rebuilt run must predict the same"
    assert report["probe_train_samples"] == 80
    collapse = report["collapse"]
    assert "skipped" in collapse or (collapse["nc1"] >= 0 and 0 <= collapse["nc4"] <= 1)
    saved = json.loads((out / "probe.json").read_text())
    assert saved["units"] == json.loads(json.dumps(units))
    assert (out / "probe_accuracy.png").stat().st_size > 0


def test_probe_cli_table_json_and_errors(tmp_path, capsys):
    out = tmp_path / "run"
    locallearn.train(
        rule="greedy", model="cnn1d", data="mnist1d", train_limit=200, epochs=1, blocks=3, out=out
    )
    assert (
        main(
            [
                "probe",
                str(out),
                "--quiet",
                "--json",
                str(tmp_path / "p.json"),
                "--plot",
                str(tmp_path / "p.png"),
                "--max-train",
                "100",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "probe after" in text and "neural collapse" in text and "variance entropy" in text
    reports = json.loads((tmp_path / "p.json").read_text())
    assert reports[0]["blocks"] == 3 and len(reports[0]["filters"]) == 3
    assert (tmp_path / "p.png").stat().st_size > 0

    assert main(["probe", str(tmp_path / "missing"), "--quiet"]) == 2
    assert "not a directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["probe", str(tmp_path / "empty"), "--quiet"]) == 2
    assert "config.toml is missing" in capsys.readouterr().err
    # A run stopped early: its config asks for more epochs than the checkpoint holds.
    config = out / "config.toml"
    config.write_text(config.read_text().replace("epochs = 1", "epochs = 5"))
    with pytest.raises(UsageError, match=r"unfinished \(epoch 1 of 5\).*locallearn resume"):
        probe_run(out)


def test_probe_of_an_api_run_on_custom_data_needs_the_data(tmp_path, mnist1d_small):
    out = tmp_path / "run"
    data = (
        mnist1d_small.x_train,
        mnist1d_small.y_train,
        mnist1d_small.x_test,
        mnist1d_small.y_test,
    )
    locallearn.train(rule="bp", model="mlp", data=data, epochs=1, out=out)
    with pytest.raises(
        UsageError, match="custom dataset .* probe_run\\(run_dir, network=..., dataset=...\\)"
    ):
        probe_run(out)
    report = probe_run(out, dataset=mnist1d_small, write=False)
    assert len(report["units"]) == 4 and not (out / "probe.json").exists()


def test_probe_reports_shortcut_bias_on_shortcut_data(tmp_path):
    out = tmp_path / "run"
    locallearn.train(rule="bp", model="mlp", data="shortcut", train_limit=200, epochs=1, out=out)
    report = probe_run(out, max_train=100)
    bias = report["shortcut"]
    assert bias["bias"] == pytest.approx(bias["reliance"] - bias["bayes_reliance"])
    assert 0.0 <= bias["accuracy"] <= 1.0
