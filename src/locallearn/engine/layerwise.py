"""``--patience``: early stopping of each layer of a layer-after-layer schedule.

As ForwardGNN trains (Park et al., ICLR 2024, sec. 4; their scripts: validation every 2
epochs, patience 100, at most 1,000 epochs a layer): the layer that learns stops once the
validation accuracy of the network so far has not improved for ``patience`` epochs, or after
``max_epochs``; its best state (by validation accuracy) is restored and the next layer starts
from it. We validate every epoch (an epoch is one full-graph step, and validation is one
forward pass); the first of equal accuracies counts as the best. After the last layer stops
the run is finished.
"""

from __future__ import annotations

import copy
from typing import Any

from locallearn.errors import UsageError
from locallearn.rules.base import Rule


class LayerEarlyStopping:
    """Drives ``rule.current`` from validation accuracy; its state is checkpointed."""

    def __init__(self, rule: Rule, patience: int, max_epochs: int) -> None:
        if not getattr(rule, "layer_after_layer", False):
            raise UsageError(
                "--patience applies to rules that train layer after layer (sf, ff on graphs, "
                "ff --ff-schedule greedy); this rule trains its blocks together"
            )
        self.rule = rule
        rule.early_stopping = True  # type: ignore[attr-defined]
        self.patience = patience
        self.max_epochs = max_epochs
        self.best = -1.0
        self.waited = 0
        self.epochs = 0  # epochs the current layer has learned
        self.best_state: list[dict[str, Any]] | None = None
        self.finished = False
        self.stopped_at: list[int] = []  # epochs each finished layer trained

    @property
    def total_epochs(self) -> int:
        """The most epochs the run can take: every layer to its limit."""
        return self.max_epochs * self.rule.positions  # type: ignore[attr-defined]

    def update(self, val_acc: float) -> bool:
        """After an epoch of the current layer; returns True once the last layer stopped."""
        rule: Any = self.rule
        self.epochs += 1
        if val_acc > self.best:
            self.best, self.waited = val_acc, 0
            self.best_state = copy.deepcopy(rule.position_state(rule.current))
        else:
            self.waited += 1
        if self.waited < self.patience and self.epochs < self.max_epochs:
            return False
        if self.best_state is not None:
            rule.load_position_state(rule.current, self.best_state)
        self.stopped_at.append(self.epochs)
        if rule.current + 1 >= rule.positions:
            self.finished = True
            return True
        rule.current += 1
        self.best, self.waited, self.epochs, self.best_state = -1.0, 0, 0, None
        return False

    def state_dict(self) -> dict[str, Any]:
        return {
            "current": self.rule.current,  # type: ignore[attr-defined]
            "best": self.best,
            "waited": self.waited,
            "epochs": self.epochs,
            "best_state": self.best_state,
            "finished": self.finished,
            "stopped_at": list(self.stopped_at),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rule.current = state["current"]  # type: ignore[attr-defined]
        self.best, self.waited, self.epochs = state["best"], state["waited"], state["epochs"]
        self.best_state = state["best_state"]
        self.finished = state["finished"]
        self.stopped_at = list(state["stopped_at"])
