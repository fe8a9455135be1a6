"""The Python API with a user's own network and tensors."""

import pytest
import torch
from torch import nn

import locallearn
from locallearn.errors import UsageError


def blobs(n=300, classes=3, dim=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g) * 3
    y = torch.randint(0, classes, (n,), generator=g)
    return centres[y] + torch.randn(n, dim, generator=g), y


def test_custom_sequential_and_tensors():
    x, y = blobs()
    net = nn.Sequential(
        nn.Sequential(nn.Linear(10, 32), nn.ReLU()),
        nn.Sequential(nn.Linear(32, 32), nn.ReLU()),
        nn.Linear(32, 3),
    )
    summary = locallearn.train(
        rule="greedy",
        model=net,
        data=(x[:200], y[:200], x[200:], y[200:]),
        blocks=3,
        epochs=5,
        lr=1e-2,
    )
    assert summary["model"] == "custom" and summary["data"] == "custom"
    assert summary["blocks"] == 3 and summary["test_acc"] > 0.9
    # The user's module was trained in place: its weights are the run's weights.
    from locallearn.measure import weights_sha256

    assert weights_sha256(net) == summary["weights_sha256"]


def test_compare_gives_every_rule_the_same_initial_weights():
    x, y = blobs()
    net = nn.Sequential(nn.Sequential(nn.Linear(10, 16), nn.ReLU()), nn.Linear(16, 3))
    start = [p.clone() for p in net.parameters()]
    rows = locallearn.compare(
        rules=["bp", "greedy"], model=net, data=(x, y, x, y), blocks=2, epochs=2
    )
    assert [r["rule"] for r in rows] == ["bp", "greedy"]
    assert all(torch.equal(a, b) for a, b in zip(start, net.parameters())), (
        "compare trains copies, leaving the caller's network as given"
    )


def test_compare_by_name_defaults_to_every_rule():
    rows = locallearn.compare(data="mnist1d", train_limit=200, epochs=1)
    applicable = locallearn.api.default_rules("cnn1d")  # every rule for the default model
    assert [r["rule"] for r in rows] == applicable and applicable[:1] == ["bp"]
    assert {"greedy", "drtp", "tpsgd"} <= set(applicable)
    assert next(r for r in rows if r["rule"] == "greedy")["blocks"] == 3  # greedy's default K


def test_api_errors():
    with pytest.raises(UsageError, match="custom model must be an nn.Sequential"):
        locallearn.train(model=nn.Linear(3, 3), data="digits")
    with pytest.raises(UsageError, match="unknown configuration key 'epoch'"):
        locallearn.train(epoch=3)


def test_a_new_run_never_overwrites_an_existing_one(tmp_path):
    options = dict(rule="bp", model="mlp", data="mnist1d", train_limit=200, epochs=1)
    locallearn.train(out=tmp_path / "run", **options)
    with pytest.raises(UsageError, match="already holds a run.*locallearn resume"):
        locallearn.train(out=tmp_path / "run", **options)
    # compare checks every rule's directory before it trains the first rule
    locallearn.train(out=tmp_path / "cmp" / "greedy", **dict(options, rule="greedy"))
    with pytest.raises(UsageError, match="already holds a run"):
        locallearn.compare(rules=["bp", "greedy"], out=tmp_path / "cmp", **options)
    assert not (tmp_path / "cmp" / "bp").exists()
