"""Evaluation on a BatchNorm-folded view of the network (engine/fold.py, engine/evaluation.py)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import locallearn
from locallearn.engine import evaluation
from locallearn.engine.fold import BatchNormFold
from locallearn.models import MODELS


def _scramble_batchnorms(network: nn.Module, seed: int = 0) -> None:
    """Statistics and affine weights far from the identity, as after training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in network.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)


@pytest.mark.parametrize(
    ("model", "shape"), [("resnet20", (1, 28, 28)), ("cnn", (1, 28, 28)), ("vgg11", (3, 32, 32))]
)
def test_folded_view_matches_the_network_and_leaves_it_alone(model, shape):
    torch.manual_seed(0)
    network = MODELS.get(model).build(shape, 10)
    _scramble_batchnorms(network)
    before = copy.deepcopy(network.state_dict())
    network.train()
    view = BatchNormFold.of(network)
    assert view is not None and network.training  # its mode is given back
    assert not any(isinstance(m, nn.BatchNorm2d) for m in view.module.modules())
    assert len(view.pairs) == sum(isinstance(m, nn.BatchNorm2d) for m in network.modules())
    network.eval()
    x = torch.randn(8, *shape)
    with torch.no_grad():
        ref, out = network(x), view.refresh()(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
    assert torch.equal(out.argmax(1), ref.argmax(1))
    after = network.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing written back
    assert all(p.requires_grad for p in network.parameters())


def test_refresh_follows_the_live_weights_and_a_replaced_layer_makes_it_stale():
    torch.manual_seed(0)
    network = MODELS.get("cnn").build((1, 8, 8), 10, width=4)
    view = BatchNormFold.of(network)
    assert view is not None
    # Training changes the weights and the statistics after the trace.
    opt = torch.optim.SGD(network.parameters(), lr=0.5)
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(network.train()(x), y).backward()
        opt.step()
    network.eval()
    with torch.no_grad():
        ref = network(x)
        assert not torch.allclose(view.module(x), ref, atol=1e-3)  # the old fold is stale
        torch.testing.assert_close(view.refresh()(x), ref, rtol=1e-4, atol=1e-5)
    assert not view.stale()
    network[0][0] = nn.Conv2d(1, 4, 3, padding=1, bias=False)
    assert view.stale()


class _Branchy(nn.Module):
    """A conv whose output feeds its BatchNorm and a second path, and a data-dependent
    branch when ``branch`` is set (fx cannot trace that)."""

    def __init__(self, branch: bool = False) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.conv2, self.bn2 = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.branch = branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.conv(x)
        h = torch.tanh(self.bn(z)) + z  # z is used twice: this pair must not fold
        if self.branch and h.sum() > 0:
            h = -h
        return self.bn2(self.conv2(h)).mean((2, 3))


def test_only_single_use_pairs_fold_and_untraceable_or_plain_networks_give_none():
    torch.manual_seed(0)
    net = _Branchy()
    _scramble_batchnorms(net)
    view = BatchNormFold.of(net)
    assert view is not None and [c for _, c, _ in view.pairs] == [net.conv2]
    x = torch.randn(4, 1, 6, 6)
    net.eval()  # the unfolded BatchNorm is the network's own: it follows the network's mode
    with torch.no_grad():
        torch.testing.assert_close(view.refresh()(x), net(x), rtol=1e-4, atol=1e-5)
    assert BatchNormFold.of(_Branchy(branch=True)) is None
    assert BatchNormFold.of(MODELS.get("mlp").build((1, 8, 8), 10)) is None


def _run(monkeypatch, fold: bool, **options):
    if not fold:
        monkeypatch.setattr(evaluation.BatchNormFold, "of", classmethod(lambda cls, n: None))
    return locallearn.train(**options)


@pytest.mark.parametrize("model", ["cnn", "resnet20"])
def test_a_run_evaluates_folded_with_the_same_accuracies(monkeypatch, model):
    options = dict(rule="bp", model=model, data="digits", epochs=2, seed=0, threads=1)
    if model == "resnet20":
        options.update(train_limit=300, width=4)
    folded = _run(monkeypatch, True, **options)
    with monkeypatch.context() as m:
        plain = _run(m, False, **options)
    assert folded["eval_folded"] and not plain["eval_folded"]
    assert folded["weights_sha256"] == plain["weights_sha256"]  # evaluation never trains
    for key in ("test_acc", "train_acc", "val_acc", "val_acc_curve"):
        assert folded[key] == plain[key], key


def test_a_rule_with_its_own_predict_is_not_folded():
    # greedy predicts with its network; FF's label sweep is its own predict.
    s = locallearn.train(rule="greedy", model="cnn", data="digits", epochs=1, width=4)
    assert s["eval_folded"]
    s = locallearn.train(rule="ff", model="mlp", data="digits", epochs=1, width=16)
    assert not s["eval_folded"]


class _Shift(nn.Module):
    """Adds ``shift`` (a Python float, baked into a trace) to class 0's score."""

    def __init__(self) -> None:
        super().__init__()
        self.shift = 0.0

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.shift * torch.eye(h.shape[1])[0]


def test_a_view_that_no_longer_agrees_is_dropped_for_the_rest_of_the_run(monkeypatch):
    def network() -> nn.Sequential:
        torch.manual_seed(0)
        conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3), _Shift())
        return nn.Sequential(conv, head)

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(120, 1, 6, 6, generator=g), torch.randint(0, 3, (120,), generator=g)
    x[y == 1] += 0.5

    def run(fold: bool) -> dict:
        net = network()

        def shift_after_first_epoch(record: dict, cfg: object) -> None:
            net[1][3].shift = 100.0  # every later prediction is class 0

        with monkeypatch.context() as m:
            return _run(m, fold, rule="bp", model=net, data=(x, y, x, y), epochs=2, seed=0,
                        threads=1, val_split=0.25, on_epoch=shift_after_first_epoch)  # fmt: skip

    folded, plain = run(True), run(False)
    assert folded["eval_folded"]  # the first epoch's pass ran on the view
    assert folded["val_acc_curve"] == plain["val_acc_curve"]
    assert folded["test_acc"] == plain["test_acc"] == int((y == 0).sum()) / len(y)
