"""tpSGD: local losses against fixed random targets, memory, recurrent layers without BPTT."""

import pytest
import torch

import locallearn
from locallearn.data import as_sequences
from locallearn.engine.loop import train_step
from locallearn.errors import UsageError
from locallearn.measure.memory import SavedTensorMeter
from locallearn.models import build_model
from locallearn.rules import build_rule
from locallearn.rules.projection import local_grad, local_value
from test_drtp import fake_mnist


def test_local_losses_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.5, 2.0]])
    proj = torch.tensor([[1.0, 1.0], [0.0, -1.0]])  # (classes, units); t = proj[y]
    y = torch.tensor([1, 0])  # t = [[0, -1], [1, 1]]
    assert local_value("mse", a, y, proj).item() == pytest.approx((1 + 1 + 0.25 + 1) / 4)
    assert local_value("l1", a, y, proj).item() == pytest.approx((1 + 1 + 0.5 + 1) / 4)
    soft_t = torch.tensor([[0.0, -1.0], [1.0, 1.0]]).softmax(1)
    ce = -(soft_t * a.log_softmax(1)).sum(1).mean()
    assert local_value("ce", a, y, proj).item() == pytest.approx(ce.item())


@pytest.mark.parametrize("kind", ["drtp", "mse", "l1", "ce"])
def test_closed_form_gradients_match_autograd(kind):
    torch.manual_seed(0)
    a = torch.randn(4, 3, 6, requires_grad=True)  # a sequence: 3 steps of 6 units
    proj, y = torch.randn(5, 6), torch.tensor([0, 4, 2, 2])
    (expected,) = torch.autograd.grad(local_value(kind, a, y, proj), a)
    torch.testing.assert_close(local_grad(kind, a.detach(), y, proj), expected)


def test_local_loss_option_and_errors():
    net = build_model("mlp", (1, 40), 10)
    rule = build_rule("tpsgd", net, (1, 40), 10, local_loss="l1")
    assert [s.signal.kind for s in rule.stages] == ["l1", "l1", "l1"]
    with pytest.raises(UsageError, match="unknown --local-loss 'l2'.*valid choices: ce, l1, mse"):
        build_rule("tpsgd", net, (1, 40), 10, local_loss="l2")
    with pytest.raises(UsageError, match="--local-loss does not apply to rule 'drtp'"):
        build_rule("drtp", net, (1, 40), 10, local_loss="mse")


def test_projections_are_fixed_and_checkpointed(mnist1d_small):
    torch.manual_seed(0)
    rule = build_rule("tpsgd", build_model("mlp", (1, 40), 10), (1, 40), 10)
    before = [s.signal.projection.clone() for s in rule.stages[:-1]]
    state = rule.state_dict()
    summary = locallearn.train(rule="tpsgd", model="mlp", data=mnist1d_small, epochs=1)
    assert summary["blocks"] == 3
    assert all(torch.equal(b, state["signals"][f"{i}.projection"]) for i, b in enumerate(before))


@pytest.mark.parametrize("local_loss", ["mse", "l1", "ce"])
def test_tpsgd_memory_is_the_layer_input_and_below_0_4_bp(local_loss):
    data = fake_mnist()
    kw = dict(model="mlp", data=data, depth=3, width=1000, epochs=1, batch_size=100)
    kw["activation"] = "relu"  # set: tpSGD's recipe would otherwise make it tanh
    kw["val_split"] = 0.0  # one full batch of 100: the byte counts below are for it
    bp = locallearn.train(rule="bp", **kw)
    tp = locallearn.train(rule="tpsgd", local_loss=local_loss, **kw)
    # hidden layer: its input and the labels only (the pre-activation is recomputed in
    # backward); output layer: its input, plus the loss's own small tensors (<= 8,804 B).
    hidden = [313_600 + 800, 400_000 + 800, 400_000 + 800]
    assert tp["block_act_bytes"][:3] == hidden
    assert 400_000 < tp["block_act_bytes"][3] <= 400_000 + 8_804
    assert tp["act_bytes_peak"] <= 0.4 * bp["act_bytes_peak"]


def test_recurrent_layers_train_without_bptt(mnist1d_small):
    seq = as_sequences(mnist1d_small)
    torch.manual_seed(0)
    net = build_model("gru", seq.input_shape, 10, width=8)
    rule = build_rule("tpsgd", net, seq.input_shape, 10)
    assert net[0].detach_state  # set by the rule
    x = seq.x_train[:4].clone().requires_grad_(True)
    out = rule.stages[0].block.layer(x)  # (N, L, H): the state of every step
    # The last step's state reaches the input of the last step only, not earlier steps.
    (grad,) = torch.autograd.grad(out[:, -1].sum(), x)
    assert grad[:, -1].abs().sum() > 0 and grad[:, :-1].abs().sum() == 0
    summary = locallearn.train(rule="tpsgd", model="gru", data=seq, epochs=1, width=8)
    assert summary["blocks"] == 2


def test_tpsgd_learns_on_a_tanh_mlp(digits_small):
    # Targets P y* are zero-mean: a tanh unit can reach them, a ReLU unit cannot reach the
    # negative ones (measured on this run with ReLU: 0.10 test acc, mse 0.100 -> 0.090).
    s = locallearn.train(
        rule="tpsgd", model="mlp", data=digits_small, epochs=8, seed=0, activation="tanh", lr=1e-2
    )  # lr 1e-2: the setting these figures were measured at (the recipe's 1e-4 is for MNIST)
    losses = s["train_loss_curve"]
    assert losses[-1] < 0.6 * losses[0], losses  # measured 0.104 -> 0.048
    assert s["test_acc"] > 0.7, s["val_acc_curve"]  # measured 0.87; chance 0.1


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_recurrent_layers_learn_step_by_step_with_the_whole_sequence_gradient(kind):
    """The loop feeds a recurrent layer one step at a time (forward, backward, next step)
    and steps once: the same gradient as the step-averaged loss over the sequence with the
    state detached, holding one step's activations instead of all of them."""
    torch.manual_seed(0)
    x, y = torch.randn(5, 12, 3), torch.randint(0, 10, (5,))
    rules = []
    for _ in range(2):
        torch.manual_seed(1)
        net = build_model(kind, (12, 3), 10, width=6, depth=2)
        rules.append(build_rule("tpsgd", net, (12, 3), 10))
    streamed, whole = rules
    # reference: each recurrent layer on the whole sequence (state detached), mean loss
    h = x
    for index in range(2):
        layer = whole.stages[index].block.layer
        a = layer(h)
        proj = whole.targets[index].projection
        local_value("mse", a, y, proj).backward()
        h = a.detach()
    opts = [torch.optim.SGD(streamed.stage_parameters(i), lr=0.0) for i in range(3)]
    meter = SavedTensorMeter(exclude=[*streamed.network.parameters(), *streamed.network.buffers(),
                                      *streamed.signal_modules().buffers()])  # fmt: skip
    with meter:
        train_step(streamed, opts, x, y, meter)
    for index in range(2):
        got = [p.grad for p in streamed.stages[index].block.parameters()]
        want = [p.grad for p in whole.stages[index].block.parameters()]
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w)
        assert streamed.streams[index]._carry is None  # the stream is closed after the step
    # one step of a 6-unit layer holds far less than 12 steps would
    bp = build_rule("bp", build_model(kind, (12, 3), 10, width=6, depth=2), (12, 3), 10)
    bp_meter = SavedTensorMeter(exclude=[*bp.network.parameters()])
    with bp_meter:
        train_step(bp, [torch.optim.SGD(bp.stage_parameters(0), lr=0.0)], x, y, bp_meter)
    assert max(meter.segments[:2]) * 4 < min(bp_meter.segments)
