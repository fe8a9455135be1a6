"""Layer-after-layer schedules: one position of the network learns at a time.

A rule with this schedule has ``positions`` layers that learn in order; stage ``i`` belongs
to position ``stage_position(i)`` (a readout stage may learn together with the last layer).
Without early stopping the epochs are split as evenly as possible: position
``epoch * positions // epochs`` learns in epoch ``epoch``. With ``--patience`` the engine
(``engine.layerwise.LayerEarlyStopping``) moves ``current`` on instead, once the validation
accuracy has not improved for that many epochs, after restoring the position's best state.
"""

from __future__ import annotations

from typing import Any

from locallearn.errors import UsageError


class LayerAfterLayer:
    """Mixin for a ``Rule``: ``current`` learns, every other stage rests (forward only)."""

    layer_after_layer = True
    current = 0  # the position that learns now
    early_stopping = False  # set by the engine when --patience moves ``current`` on

    @property
    def positions(self) -> int:
        return len(self.stages)  # type: ignore[attr-defined]

    def stage_position(self, stage_index: int) -> int:
        return min(stage_index, self.positions - 1)

    def begin_epoch(self, epoch: int, epochs: int) -> None:
        if self.early_stopping:
            return
        if epochs < self.positions:
            raise UsageError(
                f"this rule trains {self.positions} layers one after another; --epochs {epochs} "
                f"leaves some untrained (give at least {self.positions}, or --patience)"
            )
        self.current = epoch * self.positions // epochs

    def trains(self, stage_index: int) -> bool:
        return self.stage_position(stage_index) == self.current

    def learned_positions(self) -> int:
        """How many positions have learned (or are learning) so far: what predicts."""
        return self.current + 1

    def position_state(self, position: int) -> list[dict[str, Any]]:
        """State dicts of the stages at ``position`` (block, then signal, per stage)."""
        out = []
        for i, stage in enumerate(self.stages):  # type: ignore[attr-defined]
            if self.stage_position(i) == position:
                out += [stage.block.state_dict(), stage.signal.state_dict()]
        return out

    def load_position_state(self, position: int, state: list[dict[str, Any]]) -> None:
        parts = iter(state)
        for i, stage in enumerate(self.stages):  # type: ignore[attr-defined]
            if self.stage_position(i) == position:
                stage.block.load_state_dict(next(parts))
                stage.signal.load_state_dict(next(parts))
