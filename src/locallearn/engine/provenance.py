"""Where a run came from: the exact command and the machine, in ``RUN_DIR/command.json``.

The file is written once when a run starts (beside config.toml) and gains one entry in
``resumed`` each time the run is continued, so a report can show the command that made the
run and every command that extended it. The CLI sets the command it is running; a run
started from Python records the interpreter's argv and says it came through the API.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from locallearn import __version__
from locallearn.engine.io import atomic_write_json

COMMAND_FILE = "command.json"
_command: list[str] | None = None


def set_command(argv: Sequence[str] | None) -> None:
    """The command line of this process as the user typed it (the CLI calls this)."""
    global _command
    _command = list(argv) if argv is not None else None


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _cpu_name() -> str:
    # /proc/cpuinfo names the model on Linux; platform.processor() is often empty there.
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """CPU, GPU, thread count and versions: what a timing in a report depends on."""
    info: dict[str, Any] = {
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "gpu": None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "locallearn": __version__,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def command_record(device: str = "cpu") -> dict[str, Any]:
    if _command is not None:
        argv, via = _command, "cli"
    else:
        argv, via = [sys.executable, *sys.argv], "python api"
    return {"argv": argv, "via": via, "cwd": os.getcwd(), "at": _utc_now()}


def write_started(run_dir: Path, device: str) -> None:
    """A new run: its command, start time and machine."""
    record = command_record(device)
    atomic_write_json(
        run_dir / COMMAND_FILE,
        {**record, "started": record["at"], "machine": machine_info(device), "resumed": []},
    )


def write_resumed(run_dir: Path, device: str) -> None:
    """A continued run: one more entry in ``resumed`` (a missing or damaged file starts over:
    runs made before this file existed have none)."""
    path = run_dir / COMMAND_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {"argv": None, "started": None, "machine": None, "resumed": []}
    data.setdefault("resumed", []).append(
        {**command_record(device), "machine": machine_info(device)}
    )
    atomic_write_json(path, data)


def read_command(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(run_dir) / COMMAND_FILE).read_text())
    except (OSError, ValueError):
        return None
