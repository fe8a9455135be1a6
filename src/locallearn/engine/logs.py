"""``--log csv|tensorboard``: each epoch's record in standard formats, beside metrics.jsonl.

metrics.jsonl stays the record a run trusts; these are views of it for other tools. The CSV
is rewritten from the whole history every epoch (atomically, like metrics.jsonl), so a
resumed run's file holds every epoch once. TensorBoard event files are append-only: a resumed
run purges the events after its checkpoint's epoch (``purge_step``) before writing on.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from locallearn.engine.io import atomic_write_text
from locallearn.errors import UsageError, unknown_choice

LOG_KINDS = ("csv", "tensorboard")
CSV_FILE = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"
# Columns first in this order when a record has them; any other scalar follows, sorted.
_FIRST = ("epoch", "status", "train_loss", "train_acc", "val_acc", "test_acc", "lr")


def parse_log_kinds(value: str | None) -> list[str]:
    """``"csv,tensorboard"`` -> ["csv", "tensorboard"]; an unknown kind is a UsageError."""
    if not value:
        return []
    kinds = [k.strip() for k in value.split(",") if k.strip()]
    for kind in kinds:
        if kind not in LOG_KINDS:
            raise unknown_choice("--log", kind, LOG_KINDS)
    if "tensorboard" in kinds:
        _summary_writer_class()  # fail before training, not after the first epoch
    return list(dict.fromkeys(kinds))


def _summary_writer_class() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UsageError(
            "--log tensorboard needs the tensorboard package, which is not installed: "
            "pip install tensorboard (or pip install 'locallearn[tensorboard]'), or use --log csv"
        )
    return SummaryWriter


def flat_scalars(record: dict[str, Any]) -> dict[str, Any]:
    """One epoch record as flat name -> value: per-block losses as block_loss_1..K."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key == "block_losses" and isinstance(value, list):
            for i, loss in enumerate(value, start=1):
                out[f"block_loss_{i}"] = loss
        elif isinstance(value, bool | int | float | str) or value is None:
            out[key] = value
    return out


def csv_text(history: Sequence[dict[str, Any]]) -> str:
    rows = [flat_scalars(r) for r in history]
    names = {k for row in rows for k in row}
    columns = [c for c in _FIRST if c in names]
    blocks = sorted((k for k in names if k.startswith("block_loss_")), key=lambda k: int(k[11:]))
    columns += blocks + sorted(names - set(columns) - set(blocks))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
    return buffer.getvalue()


class EpochLogs:
    """The logs a run asked for; ``write`` after every epoch, ``close`` at the end."""

    def __init__(self, run_dir: Path | None, kinds: Sequence[str], start_epoch: int) -> None:
        self.run_dir = run_dir
        self.kinds = list(kinds) if run_dir is not None else []
        self._writer: Any = None
        if "tensorboard" in self.kinds and run_dir is not None:
            writer_class = _summary_writer_class()
            self._writer = writer_class(
                log_dir=str(run_dir / TENSORBOARD_DIR), purge_step=start_epoch + 1
            )

    def write(self, history: Sequence[dict[str, Any]]) -> None:
        if self.run_dir is None or not history:
            return
        if "csv" in self.kinds:
            atomic_write_text(self.run_dir / CSV_FILE, csv_text(history))
        if self._writer is not None:
            record = history[-1]
            step = int(record["epoch"])
            for key, value in flat_scalars(record).items():
                if key == "epoch" or isinstance(value, bool | str) or value is None:
                    continue
                if math.isfinite(float(value)):
                    self._writer.add_scalar(_tag(key), float(value), step)
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _tag(key: str) -> str:
    # Grouped as TensorBoard sections: accuracy, loss (per block), memory, time, lr.
    if key.endswith("_acc"):
        return f"accuracy/{key}"
    if key.startswith("block_loss_") or key.endswith("_loss"):
        return f"loss/{key}"
    if key.endswith("_bytes_peak") or key.endswith("_bytes"):
        return f"memory/{key}"
    if key.endswith("_seconds"):
        return f"time/{key}"
    return key
