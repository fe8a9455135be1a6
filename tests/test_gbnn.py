"""GBNN: the package's formulas on recorded values, the packed network, memory, the CLI.

The recorded values come from the ``gbnn`` package 0.0.2 (scikit-learn 1.5.2): its
``GNEGNEClassifier``/``GNEGNERegressor.fit`` run with subsample=1.0 and eta=0.7, every
``MLPRegressor`` replaced by a stand-in whose ``predict`` returns the weak-learner outputs
``f`` below, then ``intercept``, ``steps``, ``loss.derive`` (round 2's residual), ``losses``,
``staged_score`` and ``predict_proba``/``predict`` read off (script: benchmarks/gbnn_record.py).
"""

from __future__ import annotations

import json

import pytest
import torch

import locallearn
from locallearn.cli import main
from locallearn.config import RunConfig
from locallearn.data import load_dataset
from locallearn.engine.run import Run
from locallearn.errors import UsageError
from locallearn.rules.gbnn import (
    BinaryLoss,
    MultiClassLoss,
    SquaredLoss,
    staged_raw,
    staged_score,
)

D = torch.float64
ETA = 0.7

MULTI = {
    "y": [0, 1, 2, 1, 0, 2],
    "f": [
        [
            [0.761, 0.122, 0.444],
            [0.334, 1.494, -0.205],
            [0.313, -0.854, -2.553],
            [0.654, 0.864, -0.742],
            [2.27, -1.454, 0.046],
            [-0.187, 1.533, 1.469],
        ],
        [
            [0.155, 0.378, -0.888],
            [-1.981, -0.348, 0.156],
            [1.23, 1.202, -0.387],
            [-0.302, -1.049, -1.42],
            [-1.706, 1.951, -0.51],
            [-0.438, -1.253, 0.777],
        ],
        [
            [-1.614, -0.213, -0.895],
            [0.387, -0.511, -1.181],
            [-0.028, 0.428, 0.067],
            [0.302, -0.634, -0.363],
            [-0.672, -0.36, -0.813],
            [-1.726, 0.177, -0.402],
        ],
    ],
    "f0": [0.0, 0.0, 0.0],
    "rho": [0.37559262670811355, -0.11064671270230124, -0.4148519266485964],
    "residual_round1": [
        [0.6260811329577483, -0.29413391368879205, -0.3319472192689562],
        [-0.29737500762894664, 0.5402506538677547, -0.24287564623880806],
        [-0.5035436222079903, -0.3248468209233922, 0.8283904431313825],
        [-0.37396851605867193, 0.5953404631462939, -0.2213719470876218],
        [0.4049930242068167, -0.14691676290125438, -0.25807626130556244],
        [-0.20961962130256565, -0.3999397373320179, 0.6095593586345835],
    ],
    # the package's multi-class loss is a sum over rows; ours is the mean
    "losses": [5.887694369287933, 5.838475749596347, 5.447277565572783],
    "staged": [0.6666666666666666, 0.6666666666666666, 0.6666666666666666],
    "proba": [
        [0.4611350941333682, 0.19790865607154956, 0.3409562497950822],
        [0.24338970657852804, 0.4558675399646185, 0.30074275345685353],
        [0.5188306818243332, 0.27787923830130457, 0.20329007987436215],
        [0.27657344570756465, 0.4792897695913883, 0.24413678470104713],
        [0.6461578685470506, 0.09352867569085856, 0.26031345576209064],
        [0.3462274595922913, 0.32826759989993737, 0.32550494050777135],
    ],
}
BINARY = {
    "y": [0, 1, 1, 0, 1, 1],
    "f": [
        [-1.63, 0.463, -0.907, 0.052, 0.729, 0.129],
        [1.139, -1.235, 0.402, -0.685, -0.871, -0.579],
        [-0.312, 0.056, -1.165, 0.901, 0.466, -1.536],
    ],
    "f0": [0.3465735902799726],
    "rho": [0.441550223525598, -0.1382613344339935, -0.5294806129632078],
    "residual_round1": [
        -0.6432532350587709,
        0.49872219111928745,
        1.053860289959675,
        -1.3535842164395593,
        0.4160315991121443,
        0.6170316452872887,
    ],
    "losses": [0.5258314318242469, 0.5148472144103928, 0.3282837669994026],
    "staged": [0.6666666666666666, 0.6666666666666666, 1.0],
    "proba": [
        [0.6749961514799037, 0.3250038485200964],
        [0.20033108627656948, 0.7996689137234305],
        [0.2660605162497933, 0.7339394837502067],
        [0.5064090570986736, 0.49359094290132643],
        [0.2526926308204087, 0.7473073691795913],
        [0.06954250761450764, 0.9304574923854924],
    ],
}
REGRESSION = {
    "y": [5.465, 6.688, 4.536, 0.46, -2.212, 4.163],
    "f": [
        [-0.403, 1.222, 0.208, 0.977, 0.356, 0.707],
        [0.011, 1.786, 0.127, 0.402, 1.883, -1.348],
        [-1.27, 0.969, -1.173, 1.944, -0.414, -0.747],
    ],
    "f0": [3.1833333333333336],
    "rho": [0.7, 0.7, 0.7],
    "residual_round1": [
        2.563766666666666,
        2.6492666666666667,
        1.207066666666666,
        -3.4072333333333336,
        -5.644533333333333,
        0.4847666666666668,
    ],
    # the package's staged_score for regression is the MSE after each round
    "losses": [9.792252931666667, 12.310945195555554, 14.996611236111113],
    "pred": [
        2.019933333333334,
        5.967233333333333,
        2.596733333333334,
        5.509433333333334,
        4.460833333333333,
        2.2117333333333336,
    ],
}


def boost(loss, y_enc, outputs):
    """The package's fit loop on fixed weak-learner outputs, with our loss functions."""
    f0 = loss.init(y_enc)
    acc = torch.ones_like(y_enc) * f0
    rhos, residuals, losses = [], [], []
    for f in outputs:
        r = loss.residual(y_enc, acc)
        rho = ETA * loss.step(y_enc, r, f)
        acc = acc + rho * f
        rhos.append(float(rho))
        residuals.append(r)
        losses.append(float(loss.loss(y_enc, acc)))
    return f0, rhos, residuals, losses, acc


def test_multiclass_matches_the_package():
    y = torch.tensor(MULTI["y"])
    y_enc = torch.nn.functional.one_hot(y, 3).to(D)
    f = torch.tensor(MULTI["f"], dtype=D)
    loss = MultiClassLoss(3)
    f0, rhos, residuals, losses, acc = boost(loss, y_enc, f)
    assert f0.tolist() == MULTI["f0"]
    assert rhos == pytest.approx(MULTI["rho"], rel=1e-12)
    assert torch.allclose(
        residuals[1], torch.tensor(MULTI["residual_round1"], dtype=D), rtol=1e-12, atol=1e-15
    )
    assert [v * 6 for v in losses] == pytest.approx(MULTI["losses"], rel=1e-12)
    staged = staged_raw(f0, torch.tensor(rhos, dtype=D), f)
    assert torch.allclose(staged[-1], acc, atol=1e-14)
    assert staged_score("multi-class", staged, y) == pytest.approx(MULTI["staged"])
    proba = torch.softmax(acc, dim=1)
    assert torch.allclose(proba, torch.tensor(MULTI["proba"], dtype=D), atol=1e-14)


def test_binary_matches_the_package():
    y = torch.tensor(BINARY["y"])
    loss = BinaryLoss()
    y_enc = (2.0 * y.to(D) - 1.0).reshape(-1, 1)
    f = torch.tensor(BINARY["f"], dtype=D).unsqueeze(-1)
    f0, rhos, residuals, losses, acc = boost(loss, y_enc, f)
    assert f0.tolist() == pytest.approx(BINARY["f0"], rel=1e-14)
    assert rhos == pytest.approx(BINARY["rho"], rel=1e-12)
    assert residuals[1].reshape(-1).tolist() == pytest.approx(BINARY["residual_round1"], rel=1e-12)
    assert losses == pytest.approx(BINARY["losses"], rel=1e-12)
    staged = staged_raw(f0, torch.tensor(rhos, dtype=D), f)
    assert staged_score("binary", staged, y) == pytest.approx(BINARY["staged"])
    # the packed network's logits [0, 2F]: softmax is the package's predict_proba
    logits = torch.cat([torch.zeros_like(acc), 2 * acc], dim=1)
    proba = torch.softmax(logits, dim=1)
    assert torch.allclose(proba, torch.tensor(BINARY["proba"], dtype=D), atol=1e-14)
    assert loss.encode(y).reshape(-1).tolist() == [-1.0, 1.0, 1.0, -1.0, 1.0, 1.0]


def test_regression_matches_the_package():
    y = torch.tensor(REGRESSION["y"], dtype=D).reshape(-1, 1)
    f = torch.tensor(REGRESSION["f"], dtype=D).unsqueeze(-1)
    f0, rhos, residuals, losses, acc = boost(SquaredLoss(), y, f)
    assert f0.tolist() == pytest.approx(REGRESSION["f0"], rel=1e-14)
    assert rhos == pytest.approx(REGRESSION["rho"], rel=1e-14)
    assert residuals[1].reshape(-1).tolist() == pytest.approx(
        REGRESSION["residual_round1"], rel=1e-12
    )
    assert losses == pytest.approx(REGRESSION["losses"], rel=1e-12)
    assert acc.reshape(-1).tolist() == pytest.approx(REGRESSION["pred"], rel=1e-12)
    staged = staged_raw(f0, torch.tensor(rhos, dtype=D), f)
    mse = (staged[..., 0] - y.reshape(1, -1)).pow(2).mean(dim=1)
    assert mse.tolist() == pytest.approx(REGRESSION["losses"], rel=1e-12)
    r2 = staged_score("regression", staged, y.reshape(-1))
    ss_tot = float((y - y.mean()).pow(2).mean())
    assert r2 == pytest.approx([1 - m / ss_tot for m in REGRESSION["losses"]], rel=1e-12)


def _fit(data: str, **options):
    dataset = load_dataset(data)
    cfg = dict(rule="gbnn", data=data, epochs=3, threads=1, gb_rounds=3, gb_units=2, gb_steps=4)
    cfg.update(options)
    run = Run(RunConfig(**cfg), dataset=dataset)
    return run, run.fit(), dataset


@pytest.mark.parametrize("data", ["wine", "breast-cancer", "diabetes"])
def test_packed_network_predicts_the_boosted_sum(data):
    run, summary, dataset = _fit(data)
    rule = run.rule
    x = dataset.x_test
    with torch.no_grad():
        f = rule.f0 + sum(float(rho) * learner(x) for rho, learner in zip(rule.rhos, rule.learners))
        out = rule.network(x)
    assert isinstance(rule.network, torch.nn.Sequential)
    assert rule.network[1].out_features == 3 * 2, "one hidden layer of T*J units"
    if data == "breast-cancer":  # logits [0, 2F]
        assert torch.equal(out[:, 0], torch.zeros_like(out[:, 0]))
        assert torch.allclose(out[:, 1:], 2 * f, atol=1e-5, rtol=1e-5)
    else:
        assert torch.allclose(out, f, atol=1e-5, rtol=1e-5)
    assert summary["gb_finished_rounds"] == 3
    assert len(summary["staged_test_score"]) == 3
    final = summary["test_acc"] if data != "diabetes" else summary["test_r2"]
    assert summary["staged_test_score"][-1] == pytest.approx(final, abs=1e-5)
    assert summary["params"] == sum(p.numel() for p in rule.network.parameters())


def test_boosting_lowers_the_training_loss_and_learns_digits():
    _, summary, _ = _fit(
        "digits", gb_rounds=20, gb_units=1, gb_steps=20, epochs=2, batch_size=10_000, lr=0.03
    )
    losses = summary["gb_train_loss"]
    assert losses[-1] < losses[0] < 2.31  # below chance (ln 10 = 2.30) from round one
    assert summary["test_acc"] > 0.8, summary["test_acc"]
    assert summary["staged_test_score"][-1] > summary["staged_test_score"][0]


def test_only_one_round_is_alive_in_memory():
    small = _fit("wine", gb_rounds=2, gb_steps=2, epochs=1)[1]
    large = _fit("wine", gb_rounds=12, gb_steps=2, epochs=1)[1]
    assert small["act_bytes_peak"] > 0
    assert large["act_bytes_peak"] == small["act_bytes_peak"], "memory must not grow with T"


def test_the_subsample_is_drawn_from_the_run_seed():
    a = _fit("iris", seed=1)[1]
    b = _fit("iris", seed=1)[1]
    c = _fit("iris", seed=2)[1]
    assert a["weights_sha256"] == b["weights_sha256"]
    assert a["weights_sha256"] != c["weights_sha256"]


def test_resume_inside_a_round_matches_an_uninterrupted_run(tmp_path):
    opts = dict(epochs=5, gb_rounds=2, gb_steps=4, gb_units=2, threads=1)
    whole = locallearn.train("gbnn", data="iris", out=tmp_path / "a", **opts)

    class Crash(Exception):
        pass

    def crash(record, cfg):
        if record["epoch"] == 2:  # epoch 2 ends inside round 1 (8 steps over 5 epochs)
            raise Crash

    with pytest.raises(Crash):
        locallearn.train("gbnn", data="iris", out=tmp_path / "b", on_epoch=crash, **opts)
    resumed = locallearn.engine.run.resume_run(tmp_path / "b")
    assert resumed["weights_sha256"] == whole["weights_sha256"]
    assert resumed["gb_rho"] == whole["gb_rho"]


def test_cli_digits_and_diabetes_print_their_metric(tmp_path, capsys):
    base = [
        "train",
        "--rule",
        "gbnn",
        "--gb-rounds",
        "50",
        "--gb-units",
        "1",
        "--gb-steps",
        "2",
        "--threads",
        "1",
        "--quiet",
    ]
    assert (
        main(
            [
                *base,
                "--data",
                "digits",
                "--out",
                str(tmp_path / "d"),
                "--json",
                str(tmp_path / "d.json"),
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "test acc" in table.splitlines()[0] and "gbnn" in table
    assert main([*base, "--data", "diabetes", "--out", str(tmp_path / "r")]) == 0
    table = capsys.readouterr().out
    assert "test R2" in table.splitlines()[0] and "test RMSE" in table
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["test_acc"] is None and summary["task"] == "regression"
    assert summary["model"] == "gbnn-50x1" and summary["blocks"] == 50
    assert len(summary["staged_test_score"]) == 50
    assert (tmp_path / "r" / "staged.png").stat().st_size > 1000, "the staged-score plot"


@pytest.mark.parametrize(
    "options,message",
    [
        ({"gb_subsample": 0.0}, "--gb-subsample must be in (0, 1]"),
        ({"gb_rounds": 0}, "--gb-rounds must be at least 1"),
        ({"gb_eta": -1.0}, "--gb-eta must be a positive number"),
        ({"gb_activation": "gelu"}, "--gb-activation"),
        ({"width": 10}, "--width does not apply to rule 'gbnn': it builds its own network"),
        ({"epochs": 100, "gb_rounds": 2, "gb_steps": 3}, "--epochs 100 would leave epochs"),
    ],
)
def test_gbnn_errors(options, message):
    cfg = dict(rule="gbnn", data="iris", epochs=1, gb_rounds=2, gb_steps=3)
    cfg.update(options)
    with pytest.raises(
        UsageError,
        match=message.replace("(", r"\(")
        .replace(")", r"\)")
        .replace("[", r"\[")
        .replace("]", r"\]"),
    ):
        Run(RunConfig(**cfg)).fit()


@pytest.mark.parametrize("activation", ["logistic", "tanh", "relu", "identity"])
def test_fused_weak_learner_has_the_gradients_of_the_plain_one(activation):
    from locallearn.rules.gbnn import WeakLearner

    torch.manual_seed(0)
    learner = WeakLearner(5, 3, 2, activation).double()
    learner.scale.fill_(1.7)
    x, target = torch.randn(7, 5, dtype=D), torch.randn(7, 2, dtype=D)
    torch.nn.functional.mse_loss(learner(x), target).backward()
    fused = [p.grad.clone() for p in learner.parameters()]
    learner.zero_grad()
    plain = learner.out(learner.act(learner.hidden(x))) * learner.scale
    torch.nn.functional.mse_loss(plain, target).backward()
    for got, want in zip(fused, [p.grad for p in learner.parameters()]):
        assert torch.allclose(got, want, atol=1e-12), activation


def test_measure_steps_one_round_whatever_the_number_of_rounds(tmp_path):
    peaks = []
    for rounds in ("2", "20"):
        out = tmp_path / f"m{rounds}.json"
        args = ["measure", "--rule", "gbnn", "--model", "mlp", "--input-shape", "64",
                "--gb-rounds", rounds, "--gb-steps", "2", "--steps", "1", "--quiet",
                "--json", str(out)]  # fmt: skip
        assert main(args) == 0
        peaks.append(json.loads(out.read_text())[0]["act_bytes_peak"])
    assert peaks[0] == peaks[1] > 0


def test_without_the_output_refit_the_network_still_packs_exactly():
    run, summary, dataset = _fit("wine", gb_refit=False)
    refit = _fit("wine")[1]
    assert summary["weights_sha256"] != refit["weights_sha256"], "--no-gb-refit changes the fit"
    rule = run.rule
    with torch.no_grad():
        f = rule.f0 + sum(float(r) * m(dataset.x_test) for r, m in zip(rule.rhos, rule.learners))
        assert torch.allclose(rule.network(dataset.x_test), f, atol=1e-5, rtol=1e-5)
