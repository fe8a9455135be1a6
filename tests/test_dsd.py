"""The DSD task (data, the three models) and the `sweep dsd` study on a tiny grid."""

import json
import math

import pytest
import torch

import locallearn
from locallearn.cli import main
from locallearn.data import load_dataset
from locallearn.data.dsd import bayes_accuracy, bayes_scores, make_dsd, signal_direction
from locallearn.errors import UsageError
from locallearn.models import build_model
from locallearn.models.lcn import LocallyConnected1d
from locallearn.studies import dsd_sweep as sweep


def test_dsd_samples_follow_the_definition():
    data = make_dsd(patches=5, patch_dim=7, sigma=0.0, train_size=300, test_size=50, seed=3)
    w = signal_direction(7, 3)
    assert data.x_train.shape == (300, 5, 7) and data.x_test.shape == (50, 5, 7)
    assert torch.isclose(w.norm(), torch.tensor(1.0))
    # Without noise every sample is exactly one patch equal to +-w_star, the rest zero.
    proj = data.x_train @ w  # (n, k)
    nonzero = data.x_train.abs().sum(dim=2) > 0
    assert torch.all(nonzero.sum(dim=1) == 1)
    sign = proj.sum(dim=1)
    assert torch.allclose(sign.abs(), torch.ones(300))
    assert torch.equal((sign > 0).long(), data.y_train)
    # The signal patch is uniform over positions and labels are balanced (loose bounds).
    counts = nonzero.sum(dim=0).float() / 300
    assert counts.min() > 0.1 and counts.max() < 0.3
    assert 0.4 < data.y_train.float().mean() < 0.6


def test_dsd_noise_variance_and_fresh_test_set():
    data = make_dsd(patches=4, patch_dim=8, sigma=0.7, train_size=4000, test_size=100, seed=0)
    w = signal_direction(8, 0)
    # Remove the signal (y * w_star in one patch): what is left has variance sigma^2.
    residual = data.x_train.clone()
    where = (data.x_train @ w).abs().argmax(dim=1)  # a good enough guess of the signal patch
    residual[torch.arange(4000), where] -= (2 * data.y_train - 1).float()[:, None] * w
    assert abs(residual.std().item() - 0.7) < 0.03
    # Same seed: same test set whatever the training size; different samples from the train set.
    other = make_dsd(patches=4, patch_dim=8, sigma=0.7, train_size=10, test_size=100, seed=0)
    assert torch.equal(other.x_test, data.x_test)
    assert not torch.equal(data.x_train[:100], data.x_test)


def test_bayes_scores_are_the_log_likelihood_ratio():
    # Hand-computed: k = 2, sigma = 1, projections t = (1, -2): log(e + e^-2) - log(e^-1 + e^2).
    w = torch.tensor([1.0, 0.0])
    x = torch.tensor([[[1.0, 5.0], [-2.0, 3.0]]])
    expected = math.log(math.e + math.exp(-2)) - math.log(math.exp(-1) + math.exp(2))
    assert bayes_scores(x, w, 1.0).item() == pytest.approx(expected, rel=1e-6)
    easy = make_dsd(patches=2, patch_dim=4, sigma=0.05, train_size=1, test_size=500, seed=1)
    assert bayes_accuracy(easy, signal_direction(4, 1), 0.05) == 1.0


def test_dsd_dataset_options_and_errors():
    data = load_dataset("dsd", patches=3, patch_dim=5, sigma=0.2, train_size=40, data_seed=2)
    assert data.input_shape == (3, 5) and data.classes == 2 and len(data.y_train) == 40
    with pytest.raises(UsageError, match="--patches must be a positive integer, got 0"):
        load_dataset("dsd", patches=0)
    with pytest.raises(UsageError, match="--sigma must be a non-negative number"):
        load_dataset("dsd", sigma=-1.0)
    with pytest.raises(UsageError, match="--patches does not apply to dataset 'mnist1d'"):
        load_dataset("mnist1d", patches=3)


def test_dsd_models_share_weights_only_in_the_cnn():
    k, d, m = 5, 6, 3
    cnn, lcn, fcn = (build_model(n, (k, d), 2, width=m) for n in ("dsd-cnn", "dsd-lcn", "dsd-fcn"))
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    # CNN: m filters of d (+ bias) shared; LCN: k times that; FCN: dense kd -> mk.
    assert count(cnn) == m * (d + 1) + (m * 2 + 2)
    assert count(lcn) == k * m * (d + 1) + (m * 2 + 2)
    assert count(fcn) == k * d * m * k + m * k + (m * k * 2 + 2)
    assert any(isinstance(mod, LocallyConnected1d) for mod in lcn.modules())
    # The CNN is invariant to permuting the patches (shared filter, then a sum); the LCN is not.
    x = torch.randn(4, k, d)
    perm = x[:, torch.randperm(k, generator=torch.Generator().manual_seed(0))]
    torch.testing.assert_close(cnn(x), cnn(perm))
    assert not torch.allclose(lcn(x), lcn(perm))
    for net in (cnn, lcn, fcn):
        assert len(net) == 2 and net(x).shape == (4, 2)


@pytest.mark.parametrize("rule", ["bp", "greedy"])
@pytest.mark.parametrize("model", ["dsd-cnn", "dsd-lcn", "dsd-fcn"])
def test_rules_train_the_dsd_models(rule, model):
    data = load_dataset("dsd", patches=3, patch_dim=4, sigma=0.3, train_size=400)
    options = {"blocks": 2} if rule == "greedy" else {}
    s = locallearn.train(
        rule=rule,
        model=model,
        data=data,
        epochs=15,
        batch_size=50,
        seed=0,
        val_split=0.0,
        **options,
    )  # val_split 0: all 400 samples train, as the bar was set on
    # Bayes accuracy here is about 0.99; chance is 0.5.
    assert s["test_acc"] > 0.8, f"{rule}/{model}: test acc {s['test_acc']}"


def test_dsd_cnn_equals_its_formula():
    # f(x) = V sum_i relu(W x_i + b) + c, with one shared (W, b) for all patches.
    torch.manual_seed(0)
    net = build_model("dsd-cnn", (3, 4), 2, width=2)
    shared, linear = net[0][0], net[1][1]
    x = torch.randn(5, 3, 4)
    w, b = shared.weight, shared.bias  # (m, d), (m,)
    hidden = torch.relu(x @ w.T + b).sum(dim=1)  # (n, m)
    torch.testing.assert_close(net(x), hidden @ linear.weight.T + linear.bias)


def test_n_grid_and_bisection():
    assert sweep.n_grid(4, 64, 1) == [4, 8, 16, 32, 64]
    assert sweep.n_grid(2, 8, 2) == [2, 3, 4, 6, 8]
    grid = list(range(1, 101))
    calls = []

    def reaches(n):
        calls.append(n)
        return n >= 37

    assert sweep.smallest_reaching(grid, reaches, stride=8) == 37
    # Gallop 1, 9, 17, 25, 33, 41 (the first that reaches), then bisect 34..40.
    assert calls == [1, 9, 17, 25, 33, 41, 37, 35, 36]
    assert sweep.smallest_reaching(grid, lambda n: False, stride=8) is None
    assert sweep.smallest_reaching(grid, lambda n: True, stride=8) == 1
    assert sweep.smallest_reaching([1, 2, 3], lambda n: n >= 3) == 3


def test_fit_recovers_known_exponents():
    points = [
        {"k": k, "d": d, "n_star": 3.0 * k**2 * d**0.5} for k in (2, 4, 8) for d in (4, 16, 64)
    ]
    points.append({"k": 16, "d": 4, "n_star": None})  # never reached: left out
    fit = sweep.fit_exponents(points)
    assert fit["k"] == pytest.approx(2.0) and fit["d"] == pytest.approx(0.5)
    assert fit["c"] == pytest.approx(math.log(3.0)) and fit["r2"] == pytest.approx(1.0)
    assert fit["points"] == 9
    assert sweep.fit_exponents(points[:2]) is None


def test_batched_seeds_train_like_separate_networks():
    w = signal_direction(4, 0)
    gens = [torch.Generator().manual_seed(s) for s in range(2)]
    data = [sweep.sample_dsd(32, w, 3, 0.3, g) for g in gens]
    x = torch.stack([a[0] for a in data])
    y = torch.stack([a[1] for a in data])
    x_test, y_test, _ = sweep.sample_dsd(200, w, 3, 0.3, torch.Generator().manual_seed(9))
    batched = sweep.train_seeds("dsd-lcn", x, y, x_test, y_test, width=2, steps=20, lr=0.05)
    # Seed 1 alone, trained by hand with the same recipe (no plateau within 20 steps).
    torch.manual_seed(1)
    net = build_model("dsd-lcn", (3, 4), 2, width=2)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(20):
        loss = torch.nn.functional.cross_entropy(net(x[1]), y[1])
        opt.zero_grad()
        loss.backward()
        opt.step()
    alone = (net(x_test).argmax(1) == y_test).float().mean().item()
    assert batched[1] == pytest.approx(alone)


def test_weight_sharing_needs_fewer_samples():
    # k = 8 patches of d = 16 at n = 128: theory puts the CNN's sample need (k + d) far below
    # the LCN's (k d) and the FCN's (k^2 d); at equal n the CNN must generalise clearly better.
    cfg = sweep.sweep_config(patches=(2, 8), patch_dims=(4, 16), seeds=2, test_size=1000)
    w = signal_direction(16, 0)
    x_test, y_test, _ = sweep.sample_dsd(1000, w, 8, cfg.sigma, torch.Generator().manual_seed(5))
    test = sweep._dataset(x_test[:1], y_test[:1], x_test, y_test)
    acc = {m: sweep.mean_accuracy(cfg, m, 128, w, 8, test) for m in sweep.ARCHITECTURES}
    assert acc["dsd-cnn"] > acc["dsd-lcn"] + 0.02, acc
    assert acc["dsd-cnn"] > acc["dsd-fcn"] + 0.02, acc


def test_sweep_tiny_grid_writes_every_output(tmp_path):
    cfg = sweep.sweep_config(
        patches=(2, 3),
        patch_dims=(2, 3),
        models=("dsd-cnn", "dsd-fcn"),
        seeds=1,
        n_max=16,
        steps=40,
        test_size=200,
    )
    lines = []
    result = sweep.run_sweep(cfg, lines.append)
    assert len(result.points) == 8 and len(lines) == 8
    for p in result.points:
        tried = {int(n): a for n, a in p["tried"].items()}
        if p["n_star"] is not None:  # n* reaches the target and the grid value below does not
            assert tried[p["n_star"]] >= p["target_acc"]
            below = [n for n in tried if n < p["n_star"]]
            assert all(tried[n] < p["target_acc"] for n in below)
        assert p["target_acc"] == pytest.approx(0.5 + cfg.target * (p["bayes_acc"] - 0.5))
    paths = sweep.write_results(result, tmp_path)
    saved = json.loads(paths["json"].read_text())
    assert set(saved["fits"]) == {"dsd-cnn", "dsd-fcn"}
    for fit in saved["fits"].values():
        assert fit is None or {"k", "d", "c", "r2"} <= set(fit)
    assert len(saved["points"]) == 8 and paths["plot"].read_bytes()[:4] == b"\x89PNG"
    assert "exp k (a)" in paths["table"].read_text()


def test_sweep_cli(tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(
        [
            "sweep", "dsd", "--patches", "2,3", "--patch-dims", "2,4", "--models", "dsd-cnn",
            "--seeds", "1", "--n-max", "32", "--out", str(out), "--json",
            str(tmp_path / "s.json"), "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    assert (out / "dsd_sweep.json").exists() and (tmp_path / "s.json").exists()
    assert "n* dsd-cnn" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["sweep", "cifar"], "unknown study 'cifar'"),
        (["sweep", "dsd", "--target", "1.5"], "--target must be in (0, 1), got 1.5"),
        (["sweep", "dsd", "--patches", "2,x"], "--patches must be a comma-separated list"),
        (["sweep", "dsd", "--patches", "4"], "at least two values of k and two of d"),
        (["sweep", "dsd", "--models", "dsd-rnn"], "unknown DSD architecture 'dsd-rnn'"),
    ],
)
def test_sweep_cli_errors(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err
