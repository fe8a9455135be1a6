"""Recipes (user > rule recipe > global default), validation split, --keep-best, --seeds."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import locallearn
from locallearn.cli import main
from locallearn.config import LR_SCHEDULES, OPTIMIZERS, RunConfig, load_config_file
from locallearn.data.subset import split_validation
from locallearn.engine.run import resume_run
from locallearn.models import MODELS, build_model
from locallearn.recipe import GLOBAL, TRAINING_FIELDS, Recipe, resolve
from locallearn.rules import RULES

TINY = dict(data="mnist1d", train_limit=300, epochs=2, seed=0)


@pytest.mark.parametrize("name", RULES.names())
def test_every_rule_has_a_valid_recipe_with_a_source(name):
    recipe = RULES.get(name).meta.get("recipe")
    assert isinstance(recipe, Recipe), f"{name} has no Recipe in its registry entry"
    assert recipe.source, f"{name}'s recipe names no source"
    assert recipe.optimizer in (None, *OPTIMIZERS)
    assert recipe.lr_schedule in (None, *LR_SCHEDULES)
    assert recipe.lr is None or (recipe.lr > 0 and math.isfinite(recipe.lr))
    assert recipe.momentum is None or 0 <= recipe.momentum < 1
    assert recipe.batch_size is None or recipe.batch_size >= 1
    for key in recipe.model:  # model settings must be options some model takes
        assert any(key in m.options for m in MODELS.entries()), f"{name}: {key}"


def test_precedence_user_then_recipe_then_global():
    recipe = Recipe(optimizer="sgd", lr=0.5, model={"activation": "tanh"})
    # Nothing set: the recipe, then the global default for what it leaves out.
    cfg = resolve(RunConfig(rule="x"), recipe, {"activation"})
    assert (cfg.optimizer, cfg.lr, cfg.activation) == ("sgd", 0.5, "tanh")
    assert (cfg.batch_size, cfg.momentum) == (GLOBAL.batch_size, GLOBAL.momentum)
    assert cfg.recipe_from == "x recipe"
    # What the user set wins, field by field.
    cfg = resolve(RunConfig(rule="x", lr=0.1, activation="relu"), recipe, {"activation"})
    assert (cfg.optimizer, cfg.lr, cfg.activation) == ("sgd", 0.1, "relu")
    # A model that does not take the option is not given it.
    assert resolve(RunConfig(rule="x"), recipe, ()).activation is None
    # No recipe: the global default everywhere.
    cfg = resolve(RunConfig(), None)
    assert all(getattr(cfg, k) == getattr(GLOBAL, k) for k in TRAINING_FIELDS)
    assert cfg.recipe_from == "global default"


def test_run_uses_the_rule_recipe_and_config_toml_records_it(tmp_path):
    s = locallearn.train(rule="drtp", model="mlp", out=tmp_path / "r", **TINY)
    recipe = RULES.get("drtp").meta["recipe"]
    assert s["settings"]["lr"] == recipe.lr and s["settings"]["activation"] == "tanh"
    assert s["recipe_from"] == "drtp recipe"
    cfg = load_config_file(tmp_path / "r" / "config.toml")
    assert (cfg.lr, cfg.optimizer, cfg.activation, cfg.batch_size) == (
        recipe.lr,
        "adam",
        "tanh",
        100,
    )
    # A flag wins over the recipe, and the table shows what was used.
    s = locallearn.train(rule="drtp", model="mlp", lr=0.05, activation="relu", **TINY)
    assert (s["settings"]["lr"], s["settings"]["activation"]) == (0.05, "relu")


def test_resume_keeps_the_resolved_recipe(tmp_path):
    class Crash(Exception):
        pass

    def crash(record, cfg):
        if record["epoch"] == 1:
            raise Crash

    opts = dict(rule="ff", model="mlp", **{**TINY, "epochs": 3})
    clean = locallearn.train(out=tmp_path / "clean", **opts)
    with pytest.raises(Crash):
        locallearn.train(out=tmp_path / "crashed", on_epoch=crash, **opts)
    resumed = resume_run(tmp_path / "crashed")
    assert resumed["settings"] == clean["settings"]
    assert resumed["settings"]["lr_schedule"] == "cooldown"  # FF's recipe
    assert resumed["weights_sha256"] == clean["weights_sha256"]
    assert resumed["val_acc_curve"] == clean["val_acc_curve"]


def test_compare_uses_each_recipe_and_same_recipe_forces_one(capsys, tmp_path):
    args = ["compare", "--rules", "bp,drtp", "--model", "mlp", "--data", "mnist1d"]
    args += ["--train-limit", "300", "--epochs", "1", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "a"), "--json", str(tmp_path / "a.json")]) == 0
    out = capsys.readouterr().out
    assert "settings" in out.splitlines()[0]
    assert "adam 0.003 b100 tanh" in out and "adam 0.01 b100" in out
    rows = json.loads((tmp_path / "a.json").read_text())
    assert [r["settings"]["lr"] for r in rows] == [1e-2, 3e-3]
    assert main([*args, "--same-recipe", "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "tanh" not in out and out.count("adam 0.01 b100") == 2
    cfg = load_config_file(tmp_path / "b" / "drtp" / "config.toml")
    assert (cfg.lr, cfg.activation, cfg.recipe_from) == (1e-2, None, "same recipe (--same-recipe)")


def test_list_rules_shows_recipe_and_source(capsys):
    assert main(["list", "rules"]) == 0
    out = capsys.readouterr().out
    assert "recipe" in out and "source" in out
    ff = next(line for line in out.splitlines() if line.startswith("ff ") and "sgd" in line)
    assert "cooldown" in ff and "loeweX/Forward-Forward" in ff


def _labels(n_per_class, classes=4):
    return torch.arange(classes).repeat_interleave(n_per_class)


def test_validation_split_is_stratified_disjoint_and_fixed(digits_small):
    a = split_validation(digits_small, 0.2)
    b = split_validation(digits_small, 0.2)
    assert torch.equal(a.y_val, b.y_val) and torch.equal(a.x_val, b.x_val)  # fixed
    n = len(digits_small.y_train)
    assert len(a.y_val) == round(0.2 * n) and len(a.y_train) + len(a.y_val) == n
    full = np.bincount(digits_small.y_train.numpy(), minlength=10) * 0.2
    assert np.all(np.abs(np.bincount(a.y_val.numpy(), minlength=10) - full) <= 1)  # stratified
    rows = {tuple(r.tolist()) for r in a.x_train.flatten(1)}
    assert not any(tuple(r.tolist()) in rows for r in a.x_val.flatten(1))  # disjoint
    other = split_validation(digits_small, 0.2, seed=1)  # another data seed: another split
    assert not torch.equal(other.x_val, a.x_val)


def test_run_validates_per_epoch_and_tests_once(monkeypatch):
    from locallearn.engine import evaluation

    calls = []
    real = evaluation.evaluate

    def counting(rule, x, y, batch_size, predict=None):
        calls.append(x.shape[0])
        return real(rule, x, y, batch_size=batch_size, predict=predict)

    monkeypatch.setattr(evaluation, "evaluate", counting)
    s = locallearn.train(rule="bp", model="mlp", **{**TINY, "epochs": 3})
    assert s["val_size"] == 30 and s["train_size"] == 270
    assert calls.count(s["test_size"]) == 1, calls  # the test set: once, at the end
    assert calls.count(30) == 3  # validation every epoch
    assert len(s["val_acc_curve"]) == 3 and s["val_acc"] == s["val_acc_curve"][-1]
    assert "test_acc_curve" not in s and 0 <= s["test_acc"] <= 1
    assert s["eval_seconds"] > 0


def test_eval_every_and_val_split_zero():
    s = locallearn.train(rule="bp", model="mlp", eval_every=2, **{**TINY, "epochs": 3})
    assert s["val_acc_curve"][0] is None and s["val_acc_curve"][1] is not None
    assert s["val_acc_curve"][2] is not None  # the last epoch always
    s = locallearn.train(rule="bp", model="mlp", val_split=0.0, **TINY)
    assert s["val_acc"] is None and s["val_size"] == 0 and s["train_size"] == 300
    assert s["test_acc_curve"][-1] == s["test_acc"]  # the last epoch's pass, not a second


def test_keep_best_reports_the_best_validation_epoch(tmp_path):
    s = locallearn.train(rule="bp", model="mlp", keep_best=True, lr=0.05, **{**TINY, "epochs": 4})
    curve = s["val_acc_curve"]
    assert s["best_val_acc"] == max(curve) and curve[s["best_epoch"] - 1] == max(curve)
    assert 0 <= s["best_test_acc"] <= 1


def test_keep_best_at_the_last_epoch_tests_once(monkeypatch):
    from locallearn.engine import evaluation

    sizes = []
    real = evaluation.evaluate

    def counting(rule, x, y, batch_size, predict=None):
        sizes.append(x.shape[0])
        return real(rule, x, y, batch_size=batch_size, predict=predict)

    monkeypatch.setattr(evaluation, "evaluate", counting)
    s = locallearn.train(rule="bp", model="mlp", keep_best=True, **{**TINY, "epochs": 1})
    assert s["best_epoch"] == 1 and s["best_test_acc"] == s["test_acc"]
    assert sizes.count(s["test_size"]) == 1, sizes  # the kept weights are the run's own


def test_validation_errors(capsys):
    base = ["train", "--data", "mnist1d", "--train-limit", "300", "--epochs", "1", "--quiet"]
    assert main([*base, "--val-split", "1.5"]) == 2
    assert "--val-split must be a fraction in [0, 1)" in capsys.readouterr().err
    assert main([*base, "--val-split", "0", "--keep-best"]) == 2
    assert "--keep-best needs a validation split" in capsys.readouterr().err
    assert main([*base, "--seeds", "0,x"]) == 2
    assert "--seeds must be comma-separated integers" in capsys.readouterr().err
    assert main([*base, "--seeds", "1,1"]) == 2
    assert "--seeds must list distinct seeds" in capsys.readouterr().err


def test_compare_seeds_mean_std_every_seed_in_json_and_plot(capsys, tmp_path):
    code = main(
        [
            "compare",
            "--rules",
            "bp,greedy",
            "--data",
            "mnist1d",
            "--train-limit",
            "300",
            "--epochs",
            "2",
            "--seeds",
            "0,1,2",
            "--quiet",
            "--out",
            str(tmp_path / "c"),
            "--json",
            str(tmp_path / "c.json"),
            "--plot",
            str(tmp_path / "c.png"),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    rows = json.loads((tmp_path / "c.json").read_text())
    assert sorted((r["rule"], r["seed"]) for r in rows) == [
        (r, s) for r in ("bp", "greedy") for s in (0, 1, 2)
    ]
    bp = [r["test_acc"] for r in rows if r["rule"] == "bp"]
    mean, std = float(np.mean(bp)), float(np.std(bp, ddof=1))
    bp_line = next(line for line in out.splitlines() if line.startswith("bp "))
    assert f"{mean:.4f} ± {std:.4f}" in bp_line and "0,1,2" in bp_line
    assert (tmp_path / "c" / "greedy-s2" / "summary.json").exists()
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_train_seeds(capsys, tmp_path):
    base = ["train", "--data", "mnist1d", "--train-limit", "300", "--epochs", "1", "--quiet"]
    assert main([*base, "--seeds", "3,4", "--out", str(tmp_path / "t")]) == 0
    assert "3,4" in capsys.readouterr().out
    seeds = [
        json.loads((tmp_path / "t" / f"s{s}" / "summary.json").read_text())["seed"] for s in (3, 4)
    ]
    assert seeds == [3, 4]


@pytest.mark.parametrize("model", ["cnn1d", "cnn", "vgg11", "resnet20"])
def test_conv_models_take_tanh(model):
    shape = (1, 40) if model == "cnn1d" else (1, 8, 8)
    relu = build_model(model, shape, 10, width=4)
    tanh = build_model(model, shape, 10, width=4, activation="tanh")
    kinds = {type(m).__name__ for m in tanh.modules()}
    assert "Tanh" in kinds and "ReLU" not in kinds, kinds
    assert "ReLU" in {type(m).__name__ for m in relu.modules()}
    assert tanh(torch.randn(2, *shape)).shape == (2, 10)
    with pytest.raises(locallearn.errors.UsageError, match="relu, tanh"):
        build_model(model, shape, 10, width=4, activation="gelu")


def test_a_run_directory_from_before_recipes_resumes_as_it_trained(tmp_path):
    from locallearn.engine.run import load_run_config

    run_dir = tmp_path / "old"
    run_dir.mkdir()
    old = 'rule = "drtp"\nmodel = "mlp"\ndata = "mnist1d"\nepochs = 1\nbatch_size = 100\n'
    old += 'lr = 0.01\noptimizer = "adam"\nmomentum = 0.9\nweight_decay = 0.0\n'
    (run_dir / "config.toml").write_text(old + 'lr_schedule = "constant"\nseed = 0\n')
    cfg = load_run_config(run_dir / "config.toml")
    assert cfg.val_split == 0.0 and cfg.threads is not None
    from locallearn.engine.evaluation import resolve_run_config

    assert resolve_run_config(cfg).activation is None  # not switched to DRTP's tanh
