"""Recurrent networks over sequences (length, features): Elman RNN, GRU and LSTM.

Each is a layer list: ``--depth`` recurrent units that output the state of every step, then a
readout unit (the last step's state, a linear layer). With ``bp`` the whole list trains by
backpropagation through time; a layer-wise rule (``tpsgd``) sets ``detach_state`` on the
recurrent units, which then cut the graph between steps.
"""

from __future__ import annotations

import torch
from torch import nn

from locallearn.errors import UsageError
from locallearn.models.base import MODELS

CELLS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
SEQUENCE_HINT = (
    "pass --as-sequence to feed signals as steps (MNIST-1D: 40 steps of 1 feature) and "
    "images row by row"
)


def _detached(state: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor | tuple:
    if isinstance(state, tuple):  # LSTM: (h, c)
        return tuple(s.detach() for s in state)
    return state.detach()


class Recurrent(nn.Module):
    """(N, L, F) -> (N, L, H): the hidden state at every step (h_t; for the LSTM, h_t).

    ``detach_state`` False: one fused call, gradients flow through time (BPTT).
    ``detach_state`` True and grad enabled: step by step with the state detached between
    steps, so the graph of step t reaches only x_t and the weights.
    """

    includes_activation = True  # the cell's nonlinearity is inside: the layer ends here
    sequence_output = True  # one state per step: a per-step signal has shape (H,)

    def __init__(self, kind: str, features: int, hidden: int) -> None:
        super().__init__()
        self.kind = kind
        self.cell = CELLS[kind](features, hidden, batch_first=True)
        self.detach_state = False
        self._streaming = False
        self._carry: torch.Tensor | tuple[torch.Tensor, ...] | None = None

    def begin_stream(self) -> None:
        """From now on each call continues the sequence from the previous call's (detached)
        state: a sequence fed a step at a time, each step's graph freed before the next."""
        self._streaming, self._carry = True, None

    def end_stream(self) -> None:
        self._streaming, self._carry = False, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._streaming:
            out, state = self.cell(x, self._carry)
            self._carry = _detached(state)
            return out
        if not (self.detach_state and torch.is_grad_enabled()):
            out, _ = self.cell(x)
            return out
        state = None
        steps = []
        for t in range(x.shape[1]):
            out, state = self.cell(x[:, t : t + 1], state)
            steps.append(out)
            state = _detached(state)
        return torch.cat(steps, dim=1)


class LastStep(nn.Module):
    """(N, L, H) -> (N, H): the state after the last step."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A copy, not a view: a layer that saves its input would otherwise keep the whole
        # sequence's storage alive (what tpSGD's readout layer would then hold).
        return x[:, -1].contiguous()


def _build(
    kind: str, input_shape: tuple[int, ...], classes: int, width: int, depth: int
) -> nn.Sequential:
    length, features = input_shape
    if length < 2:
        raise UsageError(
            f"model {kind!r} reads sequences (length, features), but got inputs of shape "
            f"{length}x{features}: a single step. {SEQUENCE_HINT[0].upper()}{SEQUENCE_HINT[1:]}"
        )
    units: list[nn.Module] = []
    for i in range(depth):
        units.append(Recurrent(kind, features if i == 0 else width, width))
    units.append(nn.Sequential(LastStep(), nn.Linear(width, classes)))
    return nn.Sequential(*units)


def _register(kind: str, description: str) -> None:
    @MODELS.register(
        kind,
        description=description,
        options=("width", "depth"),
        family="recurrent",
        ranks=(2,),
        input_hint=SEQUENCE_HINT,
    )
    def build(
        input_shape: tuple[int, ...], classes: int, width: int = 64, depth: int = 1
    ) -> nn.Sequential:
        return _build(kind, input_shape, classes, width, depth)


_register(
    "rnn", "Elman RNN (tanh): --depth layers of --width units, linear readout of the last step"
)
_register("gru", "GRU: --depth layers of --width units, linear readout of the last step")
_register("lstm", "LSTM: --depth layers of --width units, linear readout of the last step")
