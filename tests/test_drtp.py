"""DRTP and the shared projection machinery (rules/projection.py)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import locallearn
from isolation_helpers import RecordingSignal
from locallearn.data import Dataset
from locallearn.engine.loop import train_step
from locallearn.errors import UsageError
from locallearn.models import build_model
from locallearn.rules import build_rule
from locallearn.rules.projection import (
    LocalLayer,
    LocalTarget,
    fixed_projection,
    local_value,
    split_layers,
)


def fake_mnist(n_train: int = 100, n_test: int = 100) -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_train + n_test, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n_train + n_test,), generator=g)
    return Dataset("fake-mnist", x[:n_train], y[:n_train], x[n_train:], y[n_train:], 10)


def test_fixed_projection_is_he_uniform():
    torch.manual_seed(0)
    b = fixed_projection(10, (1000,))
    assert b.shape == (10, 1000)
    bound = math.sqrt(6 / 1000)
    assert b.abs().max() <= bound and b.abs().max() > 0.95 * bound
    conv = fixed_projection(10, (8, 5, 5))
    assert conv.shape == (10, 8, 5, 5) and conv.abs().max() <= math.sqrt(6 / 200)


def test_split_layers_puts_pooling_after_the_signal():
    net = build_model("cnn", (1, 8, 8), 10, width=4, depth=2)
    layers, owners = split_layers(net)
    kinds = [[type(m).__name__ for m in layer] for layer in layers]
    # The signal of layer 2 is applied after its ReLU, before the max-pool, which opens the
    # output layer (Frenkel et al. 2021, conv blocks: conv, activation, signal, pool).
    assert kinds == [
        ["Conv2d", "BatchNorm2d", "ReLU"],
        ["Conv2d", "BatchNorm2d", "ReLU"],
        ["MaxPool2d", "AdaptiveAvgPool2d", "Flatten", "Linear"],
    ]
    assert owners == [0, 1, 2]
    mlp_layers, _ = split_layers(build_model("mlp", (1, 40), 10, depth=2))
    assert [[type(m).__name__ for m in layer] for layer in mlp_layers] == [
        ["Flatten", "Linear", "ReLU"],
        ["Linear", "ReLU"],
        ["Linear"],
    ]


def test_drtp_stages_and_projection_shapes():
    torch.manual_seed(0)
    rule = build_rule("drtp", build_model("cnn1d", (1, 40), 10), (1, 40), 10)
    shapes = [tuple(s.signal.projection.shape) for s in rule.stages[:-1]]
    assert shapes == [(10, 25, 19), (10, 25, 10), (10, 25, 5)]  # (classes, C, L) before pooling
    assert rule.blocks == 4 and all(s.block.compact for s in rule.stages[:-1])
    with pytest.raises(UsageError, match="--blocks does not apply to rule 'drtp'"):
        build_rule("drtp", build_model("mlp", (1, 40), 10), (1, 40), 10, blocks=2)
    with pytest.raises(UsageError, match="at least one hidden layer"):
        single = nn.Sequential(nn.Sequential(nn.Flatten(), nn.Linear(40, 10)))
        build_rule("drtp", single, (1, 40), 10)


def _layer_grads(layer, kind, x, y, proj, compact):
    target = LocalTarget(kind, proj)
    block = LocalLayer(layer, target)
    if not compact:
        block.affine = None  # force the plain-autograd path
    target.labels = y
    block.zero_grad()
    block(x)
    target(None, y).backward()
    return [p.grad.clone() for p in block.parameters()]


@pytest.mark.parametrize("kind", ["drtp", "mse", "l1", "ce"])
@pytest.mark.parametrize(
    "make,shape",
    [
        (lambda: nn.Sequential(nn.Flatten(), nn.Linear(12, 7), nn.ReLU()), (1, 12)),
        (lambda: nn.Sequential(nn.Linear(12, 7), nn.Tanh()), (12,)),
        (lambda: nn.Sequential(nn.Conv1d(2, 3, 3, stride=2, padding=1), nn.ReLU()), (2, 9)),
        (
            lambda: nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(2, 3, 3, padding=1), nn.Sigmoid()),
            (2, 6, 6),
        ),
    ],
)
def test_compact_update_equals_autograd_of_the_local_loss(kind, make, shape):
    torch.manual_seed(0)
    layer = make()
    x, y = torch.randn(5, *shape), torch.tensor([0, 3, 3, 1, 2])
    with torch.no_grad():
        out = layer(x)
    proj = fixed_projection(4, tuple(out.shape[1:]))
    fast = _layer_grads(layer, kind, x, y, proj, compact=True)
    slow = _layer_grads(layer, kind, x, y, proj, compact=False)
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b)


def test_drtp_update_by_hand():
    torch.manual_seed(0)
    lin = nn.Linear(3, 2)
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
    b = torch.tensor([[1.0, -2.0], [0.5, 3.0]])  # (classes, units)
    grads = _layer_grads(nn.Sequential(lin, nn.ReLU()), "drtp", x, y, b, compact=True)
    z = x @ lin.weight.T + lin.bias
    delta = b[y] * (z > 0)  # (B^T y*) * f'(z), summed over the batch as in the reference
    torch.testing.assert_close(grads[0], delta.T @ x)
    torch.testing.assert_close(grads[1], delta.sum(0))
    assert local_value("drtp", torch.ones(4, 2), y, b).item() == pytest.approx(b[y].sum().item())


def test_drtp_sign_convention_on_a_tanh_layer():
    # Paper: delta_k = (B_k^T y*) * f'(a_k), W_k -= lr * delta_k h_{k-1}^T. One SGD step on
    # a tanh layer therefore moves each sample's output against its projected label: the
    # pseudo-loss sum_n <h_n, B[y_n]> goes down, and for one sample and one unit the weight
    # change is -lr * B[y, j] * (1 - h_j^2) * x.
    torch.manual_seed(0)
    lin = nn.Linear(3, 2)
    x, y = torch.randn(1, 3), torch.tensor([1])
    b = torch.tensor([[1.0, -2.0], [0.5, -3.0]])
    layer = nn.Sequential(lin, nn.Tanh())
    with torch.no_grad():
        h0 = layer(x)
    w0 = lin.weight.detach().clone()
    grads = _layer_grads(layer, "drtp", x, y, b, compact=True)
    lr = 0.01
    expected = -lr * (b[1] * (1 - h0[0] ** 2))[:, None] * x
    torch.testing.assert_close(-lr * grads[0], expected)
    with torch.no_grad():
        lin.weight -= lr * grads[0]
        lin.bias -= lr * grads[1]
        h1 = layer(x)
    assert h1[0, 0] < h0[0, 0] and h1[0, 1] > h0[0, 1]  # away from B[y] = (0.5, -3)
    assert (h1 * b[y]).sum() < (h0 * b[y]).sum()
    assert not torch.equal(lin.weight, w0)


def test_mlp_activation_option():
    net = build_model("mlp", (1, 40), 10, depth=2, activation="tanh")
    acts = [type(m).__name__ for m in net.modules() if not isinstance(m, (nn.Sequential,))]
    assert acts == ["Flatten", "Linear", "Tanh", "Linear", "Tanh", "Linear"]
    relu = build_model("mlp", (1, 40), 10, depth=2)
    assert sum(isinstance(m, nn.ReLU) for m in relu.modules()) == 2  # default unchanged
    with pytest.raises(UsageError, match="unknown --activation 'sigmoid'.*relu, tanh"):
        build_model("mlp", (1, 40), 10, activation="sigmoid")
    # The conv models take it too (tests/test_recipe.py); the local nets do not.
    with pytest.raises(UsageError, match="--activation does not apply to model 'lcn1d'"):
        build_model("lcn1d", (1, 40), 10, activation="tanh")
    layers, _ = split_layers(net)
    assert [type(layer[-1]).__name__ for layer in layers] == ["Tanh", "Tanh", "Linear"]


def test_drtp_learns_on_a_tanh_mlp(digits_small):
    # The paper's setting (tanh hidden units, sigmoid + BCE output). With ReLU the same run
    # ends at 0.38 test acc and its BCE grows (0.52 -> 1.46): the pseudo-loss is unbounded.
    s = locallearn.train(
        rule="drtp", model="mlp", data=digits_small, epochs=8, seed=0, activation="tanh", lr=1e-2
    )  # lr 1e-2: the setting these figures were measured at (the recipe's 1e-3 is for MNIST)
    losses = s["train_loss_curve"]
    assert losses[-1] < 0.5 * losses[0], losses  # measured 0.555 -> 0.107
    assert s["test_acc"] > 0.7, s["val_acc_curve"]  # measured 0.87; chance 0.1


def test_drtp_output_layer_learns_bce_on_sigmoid():
    rule = build_rule("drtp", build_model("mlp", (1, 40), 10), (1, 40), 10)
    h, y = torch.randn(3, 10), torch.tensor([1, 2, 3])
    expected = F.binary_cross_entropy(torch.sigmoid(h), F.one_hot(y, 10).float())
    torch.testing.assert_close(rule.stages[-1].signal(h, y), expected)


@pytest.mark.parametrize("rule_name", ["drtp", "tpsgd"])
@pytest.mark.parametrize("model,shape", [("mlp", (1, 40)), ("cnn1d", (1, 40)), ("cnn", (1, 8, 8))])
def test_no_graph_spans_two_layers(rule_name, model, shape):
    torch.manual_seed(0)
    rule = build_rule(rule_name, build_model(model, shape, 10), shape, 10)
    log = []
    for i, stage in enumerate(rule.stages):
        stage.signal = RecordingSignal(stage.signal, log, i)
    opts = [torch.optim.SGD(rule.stage_parameters(i), lr=0.1) for i in range(rule.blocks)]
    train_step(rule, opts, torch.randn(6, *shape), torch.randint(0, 10, (6,)))
    assert [i for i, _, _ in log] == list(range(rule.blocks))
    for i, leaves, _ in log:
        own = {id(p) for p in rule.stage_parameters(i)}
        assert leaves == own, f"stage {i}: its loss reaches weights of another layer"


def test_drtp_memory_is_input_plus_mask_and_below_0_4_bp():
    # 3x1000 MLP, batch 100, MNIST-sized input (784). BP saves the flattened input and the
    # three ReLU outputs (each also the next linear's input): 313,600 + 3 x 400,000, plus
    # the log-softmax (4,000), the labels (800) and a 4-byte scalar (the total weight) of the
    # cross-entropy.
    data = fake_mnist()
    kw = dict(model="mlp", data=data, depth=3, width=1000, epochs=1, batch_size=100)
    kw["activation"] = "relu"  # set: DRTP's recipe would otherwise make it tanh
    kw["val_split"] = 0.0  # one full batch of 100: the byte counts below are for it
    bp = locallearn.train(rule="bp", **kw)
    assert bp["act_bytes_peak"] == 313_600 + 3 * 400_000 + 4_000 + 800 + 4
    drtp = locallearn.train(rule="drtp", **kw)
    # hidden layer: its input (float) + bool mask z > 0 (100 x 1000 bytes) + labels (800);
    # output layer: its input + the logits and one-hot target of BCE (4,000 each).
    assert drtp["block_act_bytes"] == [
        313_600 + 100_000 + 800,
        400_000 + 100_000 + 800,
        400_000 + 100_000 + 800,
        400_000 + 4_000 + 4_000,
    ]
    assert drtp["act_bytes_peak"] <= 0.4 * bp["act_bytes_peak"]


def test_compound_units_are_refused():
    net = build_model("resnet20", (3, 32, 32), 10, width=4)
    with pytest.raises(UsageError, match="plain layer stacks.*compound unit 'BasicBlock'"):
        build_rule("drtp", net, (3, 32, 32), 10)


@pytest.mark.parametrize("rule_name", ["drtp", "tpsgd"])
def test_relu_hidden_units_draw_a_warning_tanh_does_not(rule_name):
    import warnings

    with pytest.warns(UserWarning, match="ReLU hidden units.*--activation tanh"):
        build_rule(rule_name, build_model("mlp", (1, 40), 10), (1, 40), 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_rule(rule_name, build_model("mlp", (1, 40), 10, activation="tanh"), (1, 40), 10)
