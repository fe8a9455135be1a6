"""What every rule produces: stages of (block, signal), and the hooks the loop calls."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from locallearn.models.gnn import bind_graph
from locallearn.registry import Registry


class Signal(nn.Module):
    """A block's local objective: (block output h, labels y) -> scalar loss.

    Its parameters (heads, decoders) are auxiliary: trained with the block, never part of
    the network that predicts.
    """

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


def supervised_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The task loss: cross-entropy for class indices, mean squared error for float targets
    (a regression dataset's ``y`` is float, its network has one output per target)."""
    if y.is_floating_point():
        return F.mse_loss(out.reshape(y.shape), y)
    return F.cross_entropy(out, y)


class TaskLoss(Signal):
    """The task loss of the block's own output (cross-entropy, or MSE for regression): the
    signal of the network's last block."""

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return supervised_loss(h, y)


class HeadLoss(Signal):
    """The task loss of an auxiliary head on the block's output (DGL)."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return supervised_loss(self.head(h), y)


@dataclass
class Stage:
    """One block of the network and the signal it learns from."""

    block: nn.Module
    signal: Signal


class Rule:
    """A network cut into stages, plus the hooks the one training loop calls.

    Subclasses override hooks only when they need them (MAN's EMA update after each step, a
    goodness rule's negative pass); the loop itself never changes.
    """

    # Stages of a few tiny tensors step faster with a fused optimizer (see make_optimizer).
    fused_optimizer = False

    def __init__(self, network: nn.Sequential, stages: list[Stage], cuts: list[int]) -> None:
        self.network = network
        self.stages = stages
        self.cuts = cuts

    # -- what the loop needs -------------------------------------------------------------
    def begin_epoch(self, epoch: int, epochs: int) -> None:
        """Called before epoch ``epoch`` (0-based) of ``epochs``: schedules live here."""

    def begin_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The first block's input and the targets every signal sees, for batch (x, y).

        A rule that needs more than the batch (Forward-Forward's positive and negative data,
        DFA's output error from a gradient-free forward pass) prepares it here.
        """
        return x, y

    def trains(self, stage_index: int) -> bool:
        """Whether stage ``stage_index`` learns in this step; a resting stage only runs
        forward, without a graph (a layer-after-layer schedule)."""
        return True

    def chunks(self, stage_index: int, h: torch.Tensor, target: Any) -> Iterable[tuple[Any, Any]]:
        """The parts (input, targets) in which stage ``stage_index`` learns from this batch.

        Each part runs forward and backward before the next one starts, and the stage takes
        one optimizer step on the sum of the parts' gradients: the same step as one loss over
        the whole batch when the signal scales each part's loss accordingly, with only one
        part's graph alive at a time. The parts' outputs, concatenated, feed the next stage.
        A generator may prepare each part only when the loop asks for it. Default: the whole
        batch as one part.
        """
        return ((h, target),)

    def set_grads(
        self, stage_index: int, h: torch.Tensor, target: Any
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Learn from one part without the loop's backward: a rule that estimates its
        stage's gradients itself (forward gradients) adds them to the parameters' ``.grad``
        here and returns (the stage's output on ``h``, detached; the part's loss). Default
        None: the loop runs the block forward and the signal's loss backward."""
        return None

    def join(self, stage_index: int, outputs: list[torch.Tensor]) -> torch.Tensor:
        """The next stage's input from the outputs of stage ``stage_index``'s parts: one part
        as it is, several concatenated along the batch (parts of rows, as ``chunks`` cuts by
        default); a rule that cuts otherwise (time steps) joins accordingly."""
        if len(outputs) == 1:
            return outputs[0]
        return torch.cat([o.detach() for o in outputs])

    def rest(self, stage_index: int, h: torch.Tensor) -> torch.Tensor:
        """The next stage's input when stage ``stage_index`` rests (``trains`` is False): its
        output, computed without a graph. A rule whose stages all read the same input
        (GBNN's rounds) hands ``h`` on unchanged, at no cost."""
        with torch.no_grad():
            return self.stages[stage_index].block(h)

    def after_step(self, stage_index: int) -> None:
        """Called after the optimizer step of stage ``stage_index``."""

    def epoch_batches(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator
    ) -> Iterable[tuple[torch.Tensor, torch.Tensor]] | None:
        """The (input, target) batches of one epoch over the training set (x, y), called
        after ``begin_epoch``; None (the default) is the engine's shuffled pass over (x, y).
        GBNN trains each round on its own subsample against its residuals."""
        return None

    def extra_summary(self, x_test: torch.Tensor, y_test: torch.Tensor) -> dict[str, Any]:
        """Keys a rule adds to the run summary (GBNN: the score after each round)."""
        return {}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores for ``x``: the last block's output."""
        return self.network(x)

    def bind_graph(self, graph: Any) -> None:
        """A graph dataset's structure (``data.graph.Graph``), given once before training:
        the network's graph layers convolve over its edges. A rule that adds nodes or
        edges (virtual class nodes) binds its own graph instead."""
        bind_graph(self.network, graph.edge_index, graph.num_nodes)

    # -- bookkeeping ----------------------------------------------------------------------
    @property
    def blocks(self) -> int:
        return len(self.stages)

    def signal_modules(self) -> nn.ModuleList:
        return nn.ModuleList(stage.signal for stage in self.stages)

    def aux_parameters(self) -> Iterator[nn.Parameter]:
        return self.signal_modules().parameters()

    def stage_parameters(self, index: int) -> list[nn.Parameter]:
        stage = self.stages[index]
        return [*stage.block.parameters(), *stage.signal.parameters()]

    def train(self, mode: bool = True) -> None:
        self.network.train(mode)
        self.signal_modules().train(mode)

    def to(self, device: torch.device | str) -> Rule:
        self.network.to(device)
        self.signal_modules().to(device)
        return self

    def state_dict(self) -> dict[str, Any]:
        """Everything but the network's weights that a checkpoint must restore."""
        return {"signals": self.signal_modules().state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.signal_modules().load_state_dict(state["signals"])


# Builders: (network, *, input_shape, classes, blocks, **rule options) -> Rule.
# Entry meta: ``paper`` (str); ``tasks`` (the dataset tasks it trains on; default
# classification only: a rule whose signal is built on class labels cannot regress);
# ``own_network`` (the rule builds its network itself and is handed an empty one; GBNN).
# A rule's default K is its builder's default for ``blocks``.
RULES: Registry[Rule] = Registry("rule")
