"""MAN, the Momentum Auxiliary Network, on top of greedy local learning or InfoPro.

Su, Cai, Zhu, He, Xu, Guan & Si, "Momentum Auxiliary Network for Supervised Local Learning"
(ECCV 2024). Facts checked against the official code (JunhaoSu0/MAN,
``Exp on CIFAR-SVHN-STL/networks/resnetInfoPro_MAN.py`` and ``train.py``):

* for the boundary after block i, the auxiliary net starts with two copies of the *first
  layer of block i+1*: EMA_i, whose parameters never get a gradient and follow
  theta_EMA <- m * theta_EMA + (1 - m) * theta_next after every step, and LB_i, the
  "learnable bias", trained with block i's loss; the host's usual head (and, for InfoPro,
  decoder) then runs on EMA_i(h) + LB_i(h); the input gradient flows through both into
  block i;
* the EMA averages parameters only; the copy's BatchNorm running statistics are its own,
  updated by its own forward passes (the official update loops over ``parameters()``);
* the official update runs right after block i's backward and before any optimizer step of
  that iteration, so it reads block i+1's weights as they were after the previous step. Our
  ``after_step(i)`` runs before stage i+1 steps, which reads the same weights.

Where we differ, on purpose: the official code deep-copies the next layer and then its
network-wide init loop re-draws every convolution, so EMA_i and LB_i both start as fresh
random layers. Here EMA_i starts as an exact copy of theta_next (an EMA's usual start, and
what the deep copy meant to do); LB_i starts fresh (``reset_parameters`` on every
sub-module), as in the official code. The official ``--momentum`` defaults to 1.0, which
freezes the EMA at its random start; our default m = 0.995 is the paper's.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from locallearn.errors import UsageError, unknown_choice
from locallearn.models.base import output_shape
from locallearn.recipe import Recipe
from locallearn.rules.base import RULES, HeadLoss, Rule, Signal, Stage, TaskLoss
from locallearn.rules.cutting import resolve_cuts, slice_blocks
from locallearn.rules.heads import make_head
from locallearn.rules.infopro import (
    InputImage,
    check_image_input,
    check_task_loss,
    infopro_signal,
    resolve_weights,
    widest_channels,
)

HOSTS = ("greedy", "infopro")


def fresh_copy(module: nn.Module) -> nn.Module:
    """A module of the same architecture with newly drawn parameters (and reset buffers)."""
    new = copy.deepcopy(module)
    for sub in new.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()
        reset_stats = getattr(sub, "reset_running_stats", None)
        if callable(reset_stats):
            reset_stats()
    return new


class MomentumSignal(Signal):
    """The host's signal applied to EMA(h) + LB(h)."""

    def __init__(self, ema: nn.Module, lb: nn.Module, host: Signal) -> None:
        super().__init__()
        self.ema = ema
        self.lb = lb
        self.host = host
        for p in self.ema.parameters():
            p.requires_grad_(False)

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.host(self.ema(h) + self.lb(h), y)


class MomentumAuxiliary(Rule):
    r"""Block :math:`i < K` minimises the host's local loss :math:`\ell(E_i(h_i) + B_i(h_i), y)`
    over the block, :math:`B_i` (LB) and the host's head, where :math:`E_i` is a gradient-free
    copy of the first unit of block :math:`i+1` updated after every step as
    :math:`\theta_{E_i} \leftarrow m\,\theta_{E_i} + (1-m)\,\theta_{i+1}` (Su et al. 2024).
    Block :math:`K` minimises the task loss. The EMA copies are auxiliary modules:
    checkpointed with the signals, never in an optimizer.
    """

    def __init__(
        self,
        network: nn.Sequential,
        stages: list[Stage],
        cuts: list[int],
        momentum: float,
        image: InputImage | None,
    ) -> None:
        super().__init__(network, stages, cuts)
        self.momentum = momentum
        self.image = image
        # (EMA parameters, the next unit's parameters), per boundary, in matching order.
        self._pairs: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []
        for i, cut in enumerate(cuts):
            signal = stages[i].signal
            assert isinstance(signal, MomentumSignal)
            self._pairs.append((list(signal.ema.parameters()), list(network[cut].parameters())))

    def begin_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.image is not None:
            self.image.update(x)
        return x, y

    def stage_parameters(self, index: int) -> list[nn.Parameter]:
        # The EMA copy lives in the signal (so it moves and checkpoints with it) but must
        # never be in an optimizer: only what takes a gradient is handed out.
        return [p for p in super().stage_parameters(index) if p.requires_grad]

    @torch.no_grad()
    def after_step(self, stage_index: int) -> None:
        if stage_index >= len(self._pairs):
            return
        ema, current = self._pairs[stage_index]
        # m * ema + (1 - m) * theta == ema + (1 - m) * (theta - ema): one batched lerp.
        torch._foreach_lerp_(ema, [p.detach() for p in current], 1.0 - self.momentum)

    def state_dict(self) -> dict[str, Any]:
        # The EMA copies (parameters and BN buffers) are in the signals' state; the momentum
        # is recorded so that a checkpoint from another m is refused rather than mixed.
        return {**super().state_dict(), "ema_momentum": self.momentum}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("ema_momentum", self.momentum)
        if float(saved) != self.momentum:
            raise UsageError(
                f"this checkpoint was trained with --ema-momentum {saved}, not {self.momentum}"
            )
        super().load_state_dict(state)


@RULES.register(
    "man",
    description="Momentum Auxiliary Network: EMA of the next block's first unit + learnable "
    "bias before the host's head (--host greedy|infopro)",
    options=(
        "blocks",
        "cuts",
        "host",
        "ema_momentum",
        "head",
        "recon_weight",
        "task_weight",
        "task_loss",
    ),
    paper="Su et al., ECCV 2024",
    recipe=Recipe(
        source="shared with BP, as in the paper (local and end-to-end networks trained with one "
        "recipe): the global default"
    ),
    # What the paper evaluates (2-D image CNNs): drives `compare` and the test matrix only;
    # `train --rule man` also runs on other models (tests/test_man.py trains an MLP).
    families=("conv",),
    ranks=(3,),
    input_stats=True,
)
def build_man(
    network: nn.Sequential,
    *,
    input_shape: tuple[int, ...],
    classes: int,
    blocks: int = 4,
    cuts: Sequence[int] | None = None,
    host: str = "greedy",
    ema_momentum: float = 0.995,
    head: str | None = None,
    recon_weight: Sequence[float] | None = None,
    task_weight: Sequence[float] | None = None,
    task_loss: str | None = None,
    input_stats: tuple[Sequence[float], Sequence[float]] | None = None,
) -> MomentumAuxiliary:
    if host not in HOSTS:
        raise unknown_choice("MAN host", host, HOSTS)
    if not 0.0 <= ema_momentum <= 1.0:
        raise UsageError(f"--ema-momentum must be in [0, 1], got {ema_momentum}")
    infopro_only = {
        "recon-weight": recon_weight,
        "task-weight": task_weight,
        "task-loss": task_loss,
    }
    if host == "greedy":
        for flag, value in infopro_only.items():
            if value is not None:
                raise UsageError(f"--{flag} applies to --host infopro only (the host is greedy)")
    elif head is not None:
        raise UsageError("--head applies to --host greedy only (InfoPro has its own head)")

    image: InputImage | None = None
    if host == "infopro":
        check_image_input("man --host infopro", input_shape)
        check_task_loss(task_loss or "ce")
        weights = resolve_weights(blocks, recon_weight, task_weight)
        mean, std = input_stats if input_stats is not None else ((0.0,), (1.0,))
        image = InputImage(mean, std)
        widest = widest_channels(network, input_shape)

    cut_points = resolve_cuts(network, input_shape, blocks, cuts)
    parts = slice_blocks(network, cut_points)
    stages, shape = [], tuple(input_shape)
    for k, block in enumerate(parts):
        shape = output_shape(block, shape)
        if k == len(parts) - 1:
            stages.append(Stage(block, TaskLoss()))
            continue
        nxt = network[cut_points[k]]
        aux_shape = output_shape(nxt, shape)  # the host's head sees the next unit's output
        if host == "greedy" and cut_points[k] == len(network) - 1 and aux_shape == (classes,):
            # The next unit is the network's output unit: EMA + LB already give class scores,
            # and a head on top would only be a second classifier. Cross-entropy on them.
            inner: Signal = TaskLoss()
        elif host == "greedy":
            inner = HeadLoss(make_head(head or "auto", aux_shape, classes))
        else:
            assert image is not None
            inner = infopro_signal(
                aux_shape, input_shape, classes, widest, weights[k], image, task_loss or "ce"
            )
        stages.append(Stage(block, MomentumSignal(copy.deepcopy(nxt), fresh_copy(nxt), inner)))
    return MomentumAuxiliary(network, stages, cut_points, ema_momentum, image)
