"""Regression in the engine, and the tabular datasets (iris, wine, breast-cancer, diabetes,
friedman1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import locallearn
from locallearn.cli import main
from locallearn.data import DATASETS, load_dataset
from locallearn.engine.loop import evaluate_regression
from locallearn.errors import UsageError
from locallearn.rules import RULES
from locallearn.rules.build import rule_tasks

SIZES = {
    "iris": (105, 45, 4, 3),
    "wine": (124, 54, 13, 3),
    "breast-cancer": (398, 171, 30, 2),
    "diabetes": (309, 133, 10, 1),
    "friedman1": (700, 300, 10, 1),
}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_tabular_datasets_have_fixed_standardised_splits(name):
    d = load_dataset(name)
    train, test, features, outputs = SIZES[name]
    assert d.x_train.shape == (train, features) and d.x_test.shape == (test, features)
    assert d.classes == outputs and DATASETS.get(name).meta["classes"] == outputs
    assert torch.allclose(d.x_train.mean(0), torch.zeros(features), atol=1e-5)
    assert torch.allclose(d.x_train.std(0, unbiased=False), torch.ones(features), atol=1e-4)
    again = load_dataset(name)
    assert torch.equal(d.x_test, again.x_test), "the split is fixed"
    if d.task == "classification":
        assert d.y_train.dtype == torch.int64
        share = np.bincount(d.y_train) / train - np.bincount(d.y_test) / test
        assert np.abs(share).max() < 0.03, "stratified"
    else:
        assert d.task == "regression" and d.y_train.dtype == torch.float32


def test_regression_train_limit_is_a_fixed_subset():
    a, b = load_dataset("diabetes", train_limit=50), load_dataset("diabetes", train_limit=50)
    assert a.x_train.shape == (50, 10) and torch.equal(a.y_train, b.y_train)


@pytest.mark.parametrize("rule,extra", [("bp", {}), ("greedy", {"blocks": 2})])
def test_bp_and_greedy_regress_with_mse_and_report_r2(rule, extra):
    s = locallearn.train(rule, "mlp", "friedman1", epochs=15, lr=3e-3, threads=1, width=32, **extra)
    assert s["task"] == "regression" and s["test_acc"] is None and s["train_acc"] is None
    assert s["test_r2"] > 0.5, s["test_r2"]
    assert s["test_rmse"] > 0 and len(s["val_r2_curve"]) == 15
    assert s["val_r2_curve"][-1] == s["val_r2"] and all(v is not None for v in s["val_r2_curve"])
    assert s["val_acc"] is None and s["val_r2"] is not None and s["val_rmse"] > 0
    for key in ("rule", "test_acc", "train_acc", "train_loss", "act_bytes_peak"):
        assert key in s, f"required key {key} is kept"


def test_r2_and_rmse_are_scikit_learns():
    from sklearn.metrics import mean_squared_error, r2_score

    class Fixed:
        def train(self, mode):
            pass

        def predict(self, x):
            return x[:, :1] * 2.0

    x = torch.randn(50, 3)
    y = torch.randn(50)
    got = evaluate_regression(Fixed(), x, y, batch_size=7)
    pred = (x[:, 0] * 2).numpy()
    assert got["r2"] == pytest.approx(r2_score(y.numpy(), pred), rel=1e-6)
    assert got["rmse"] == pytest.approx(mean_squared_error(y.numpy(), pred) ** 0.5, rel=1e-6)


@pytest.mark.parametrize("rule", [r for r in RULES.names() if "regression" not in rule_tasks(r)])
def test_other_rules_refuse_regression_naming_those_that_can(rule):
    with pytest.raises(
        UsageError, match=f"rule '{rule}' does not support regression.*bp, gbnn, greedy"
    ):
        locallearn.train(rule, "mlp", "diabetes", epochs=1)


def test_compare_table_shows_r2_for_regression(tmp_path, capsys):
    code = main(
        [
            "compare",
            "--rules",
            "bp,greedy",
            "--model",
            "mlp",
            "--data",
            "diabetes",
            "--epochs",
            "2",
            "--blocks",
            "2",
            "--threads",
            "1",
            "--quiet",
            "--out",
            str(tmp_path),
            "--plot",
            str(tmp_path / "c.png"),
        ]
    )
    assert code == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "test R2" in header and "test RMSE" in header and "test acc" not in header
    assert (tmp_path / "c.png").exists()


def test_api_tensors_with_float_targets_are_a_regression_task(tmp_path):
    x = torch.randn(80, 3)
    y = x[:, 0] * 2 + 0.1 * torch.randn(80)
    s = locallearn.train(
        "bp", "mlp", (x, y, x, y), epochs=30, lr=3e-2, width=16, out=tmp_path / "r"
    )
    assert s["task"] == "regression" and s["test_r2"] > 0.8, s["test_r2"]
    with pytest.raises(UsageError, match="is a regression run.*classification runs only"):
        from locallearn.probes.run import probe_run

        probe_run(tmp_path / "r", dataset=locallearn.api._as_dataset((x, y, x, y)))
