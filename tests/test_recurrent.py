"""Recurrent models: shapes, the sequence check, BPTT under bp."""

import pytest
import torch

import locallearn
from locallearn.data import as_sequences
from locallearn.errors import UsageError
from locallearn.models import build_model


@pytest.mark.parametrize("kind,cell", [("rnn", "RNN"), ("gru", "GRU"), ("lstm", "LSTM")])
def test_recurrent_models_are_layer_lists(kind, cell):
    net = build_model(kind, (40, 1), 10, width=16, depth=2)
    assert len(net) == 3  # two recurrent units and the readout
    assert [type(net[i].cell).__name__ for i in range(2)] == [cell, cell]
    assert (net[0].cell.input_size, net[1].cell.input_size, net[1].cell.hidden_size) == (1, 16, 16)
    assert net(torch.randn(5, 40, 1)).shape == (5, 10)
    assert net[0](torch.randn(5, 40, 1)).shape == (5, 40, 16)


def test_stepwise_forward_equals_the_fused_one():
    torch.manual_seed(0)
    for kind in ("rnn", "gru", "lstm"):
        unit = build_model(kind, (12, 3), 10, width=5)[0]
        x = torch.randn(4, 12, 3)
        fused = unit(x)
        unit.detach_state = True
        torch.testing.assert_close(unit(x), fused)


def test_bp_backpropagates_through_time():
    torch.manual_seed(0)
    net = build_model("gru", (10, 2), 10, width=6)
    x = torch.randn(3, 10, 2, requires_grad=True)
    (grad,) = torch.autograd.grad(net(x).sum(), x)
    assert grad[:, 0].abs().sum() > 0  # the first step is reached from the last-step readout


def test_non_sequence_input_suggests_as_sequence():
    with pytest.raises(UsageError, match="single step.*--as-sequence"):
        build_model("gru", (1, 40), 10)
    with pytest.raises(UsageError, match="rank 2.*--as-sequence"):
        build_model("lstm", (1, 8, 8), 10)


def test_images_as_rows(digits_small):
    seq = as_sequences(digits_small)
    assert seq.input_shape == (8, 8)
    summary = locallearn.train(rule="bp", model="rnn", data=seq, epochs=1, width=8)
    assert summary["blocks"] == 1 and summary["params"] == (8 * 8 + 8 * 8 + 2 * 8) + 8 * 10 + 10
