"""Shared by benchmark scripts: machine description and writing results into BENCHMARKS.md."""

from __future__ import annotations  # noqa: I001  (locallearn must load before torch, below)

import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

# locallearn before torch, as the CLI: it sets OMP_WAIT_POLICY=PASSIVE, which only takes
# effect before torch loads; spinning OpenMP threads would skew timings on a busy machine.
import locallearn  # noqa: F401
import torch

from locallearn.engine.io import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}"
    )


def command_line() -> str:
    return "python " + " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])


def today() -> str:
    return time.strftime("%Y-%m-%d")


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def replace_section(name: str, body: str) -> None:
    """Put ``body`` between the markers of section ``name`` in BENCHMARKS.md (appended if
    the section does not exist yet), leaving every other section as it was."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    text = (
        pattern.sub(lambda _: block, text)
        if pattern.search(text)
        else f"{text.rstrip()}\n\n{block}\n"
    )
    atomic_write_text(BENCHMARKS_MD, text)
