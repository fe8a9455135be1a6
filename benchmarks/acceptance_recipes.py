"""Issue 11's acceptance: every rule on MNIST 3x1000 at its own recipe, with no other option.

    python benchmarks/acceptance_recipes.py                # run the command, then report
    python benchmarks/acceptance_recipes.py --report-only  # report the JSON already there

The command (run as a subprocess, exactly as a user types it, plus its output paths):

    locallearn compare --data mnist --data-dir ../shared/data --train-limit 20000 \\
        --model mlp --depth 3 --width 1000 --epochs 3 --rules bp,drtp,tpsgd,ff,fa,dfa --seed 0
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import ROOT, command_line, machine, replace_section, today  # noqa: E402

from locallearn.report.table import settings_text  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "issue11_acceptance.json"
COMMAND = (
    "compare --data mnist --data-dir ../shared/data --train-limit 20000 --model mlp --depth 3 "
    "--width 1000 --epochs 3 --rules bp,drtp,tpsgd,ff,fa,dfa --seed 0"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    if not args.report_only:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "locallearn", *COMMAND.split()]
            cmd += ["--quiet", "--out", str(Path(tmp) / "c"), "--json", str(RESULTS)]
            subprocess.run(cmd, cwd=ROOT, check=True, timeout=3 * 3600)
    rows = json.loads(RESULTS.read_text())
    lines = [
        "## Every rule at its own recipe: MNIST 3x1000, 3 epochs (issue 11's acceptance)",
        "",
        f"- command: `locallearn {COMMAND}` (and `--out`, `--json`); report by `{command_line()}`",
        f"- machine: {machine()}; date: {today()}; default threads (the run records "
        f"{rows[0].get('threads')}); other jobs beside it, so s/epoch are inflated",
        "- 20,000-image stratified subset, 10% of it (2,000) the validation split, 18,000 "
        "trained on; full 10,000-image test set evaluated once at the end",
        "",
        "| rule | settings (its recipe) | val acc | test acc | act_bytes_peak | s/epoch |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['rule']} | {settings_text(r)} | {r['val_acc']:.4f} | {r['test_acc']:.4f} | "
            f"{r['act_bytes_peak']:,} | {r['epoch_seconds']:.1f} |"
        )
    worst = min(rows, key=lambda r: r["test_acc"])
    lines += [
        "",
        f"Lowest test accuracy: {worst['rule']} {worst['test_acc']:.4f} (the issue asks >= 0.8 "
        "for every rule). Before recipes, the same rules at the shared Adam lr 1e-2 gave drtp "
        "0.101, tpsgd 0.098, ff 0.109 (issue 11, 10,000 images, 2 epochs).",
    ]
    text = "\n".join(lines)
    print(text)
    replace_section("issue11-acceptance", text)


if __name__ == "__main__":
    main()
