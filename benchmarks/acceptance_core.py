"""Runs the core issue's acceptance commands verbatim and records their tables.

1. BP vs greedy (K=3) on MNIST-1D with the reference CNN, 60 epochs, seed 0: BP must reach
   >= 0.89 test accuracy and greedy must be within 5 points of BP.
2. A 4x512 MLP cut into 4 greedy blocks: greedy act_bytes_peak must be <= 0.6x BP's.

    python benchmarks/acceptance_core.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import command_line, machine, replace_section, today  # noqa: E402

COMMANDS = [
    "locallearn compare --data mnist1d --model cnn1d --rules bp,greedy --blocks 3 --epochs 60 "
    "--seed 0 --json {json}",
    "locallearn compare --data mnist1d --model mlp --depth 4 --width 512 --rules bp,greedy "
    "--blocks 4 --epochs 2 --json {json}",
]


def run(template: str, workdir: Path, index: int) -> tuple[str, list[dict], str]:
    out_json = workdir / f"acceptance{index}.json"
    argv = template.format(json=out_json).split()
    argv = [
        sys.executable,
        "-m",
        "locallearn.cli",
        *argv[1:],
        "--quiet",
        "--out",
        str(workdir / f"runs{index}"),
    ]
    result = subprocess.run(argv, capture_output=True, text=True, check=True)
    return template.format(json="out.json"), json.loads(out_json.read_text()), result.stdout


def main() -> None:
    checks, sections = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, template in enumerate(COMMANDS):
            command, rows, table = run(template, Path(tmp), i)
            sections.append(f"`{command}`\n\n```\n{table.rstrip()}\n```")
            bp, greedy = rows
            if i == 0:
                gap = greedy["test_acc"] - bp["test_acc"]
                checks.append(
                    f"BP test acc {bp['test_acc']:.4f} (>= 0.89: "
                    f"{'yes' if bp['test_acc'] >= 0.89 else 'NO'}); "
                    f"greedy {greedy['test_acc']:.4f}, {100 * gap:+.1f} points vs BP "
                    f"(within 5: {'yes' if gap >= -0.05 else 'NO'})"
                )
            else:
                ratio = greedy["act_bytes_peak"] / bp["act_bytes_peak"]
                checks.append(
                    f"greedy act_bytes_peak = {ratio:.3f} x BP (<= 0.6: "
                    f"{'yes' if ratio <= 0.6 else 'NO'})"
                )
            print(table)
    body = "\n".join(
        [
            "## Core acceptance commands (issue: core engine)",
            "",
            f"- script: `{command_line()}` (runs each command below through the CLI, with "
            "`--quiet` and a temporary `--out`)",
            f"- machine: {machine()}",
            f"- date: {today()}",
            *(f"- {c}" for c in checks),
            "",
            "\n\n".join(sections),
        ]
    )
    replace_section("core-acceptance", body)


if __name__ == "__main__":
    main()
