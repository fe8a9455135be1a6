"""Threads on a busy machine: greedy cnn1d on MNIST-1D, idle vs one busy process beside it.

Each variant runs `locallearn train` in a fresh process (so OpenMP starts with that
variant's settings), once on the machine as it is and once beside a busy process this script
starts (a Python loop spinning on one core); the figure is seconds per epoch and the ratio
busy / idle. Variants: the defaults; --threads 2 with OpenMP's own default waits (what
runs did before this change), with threads that always spin (ACTIVE) and with threads that
sleep (PASSIVE); --threads 1.

    python benchmarks/busy_threads.py [--epochs 3] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import ROOT, command_line, machine, replace_section, today  # noqa: E402

from locallearn.engine.io import atomic_write_json  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "busy_threads.json"
VARIANTS = {
    "defaults": ({}, []),
    # OMP_WAIT_POLICY empty: locallearn leaves it alone and OpenMP keeps its own default
    # (spin a while, then sleep): the behaviour before this benchmark's change.
    "--threads 2, OpenMP's default waits (before)": ({"OMP_WAIT_POLICY": ""}, ["--threads", "2"]),
    "--threads 2, spinning waits (ACTIVE)": ({"OMP_WAIT_POLICY": "ACTIVE"}, ["--threads", "2"]),
    "--threads 2, sleeping waits (PASSIVE)": ({"OMP_WAIT_POLICY": "PASSIVE"}, ["--threads", "2"]),
    "--threads 1": ({}, ["--threads", "1"]),
}


def epoch_seconds(env: dict[str, str], flags: list[str], epochs: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "summary.json"
        cmd = [sys.executable, "-m", "locallearn", "train", "--rule", "greedy", "--model"]
        cmd += ["cnn1d", "--data", "mnist1d", "--epochs", str(epochs), "--quiet"]
        cmd += ["--out", str(Path(tmp) / "run"), "--json", str(out), *flags]
        base = {
            k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")
        }
        subprocess.run(cmd, env={**base, **env}, check=True, timeout=900, capture_output=True)
        s = json.loads(out.read_text())
        return s["epoch_seconds"], s["threads"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="runs per cell; the median")
    args = parser.parse_args()
    rows = []
    for name, (env, flags) in VARIANTS.items():
        cells = {}
        for state in ("idle", "busy"):
            busy = None
            if state == "busy":
                busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                time.sleep(0.5)
            try:
                runs = [epoch_seconds(env, flags, args.epochs) for _ in range(args.repeats)]
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
            cells[state] = sorted(r[0] for r in runs)[len(runs) // 2]
            cells["threads"] = runs[0][1]
        cells["ratio"] = cells["busy"] / cells["idle"]
        rows.append({"variant": name, **cells, "load": os.getloadavg()[0]})
        print(json.dumps(rows[-1]), flush=True)
    atomic_write_json(RESULTS, rows)
    lines = [
        "## Threads on a busy machine: greedy cnn1d on MNIST-1D (issue 11)",
        "",
        f"- command: `{command_line()}` (under `flock /tmp/locallearn-bench.lock`)",
        f"- machine: {machine()}; date: {today()}; 1-minute load average at the end of each "
        "row in the table: other helpers' jobs ran beside it, so 'idle' is the machine as it "
        "was, not a quiet one",
        "- busy: one Python process spinning on one core, started by the script",
        f"- seconds per epoch, median of {args.repeats} runs of {args.epochs} epochs each, "
        "fresh process per run; raw: `benchmarks/results/busy_threads.json`",
        "",
        "| variant | threads | idle s/epoch | busy s/epoch | busy / idle | load |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['threads']} | {r['idle']:.3f} | {r['busy']:.3f} | "
            f"{r['ratio']:.2f}x | {r['load']:.1f} |"
        )
    text = "\n".join(lines)
    print(text)
    replace_section("busy-threads", text)


if __name__ == "__main__":
    main()
