"""Evaluation cost against training time: issue 11's resnet20 command, and the demo table.

    python benchmarks/eval_cost.py            # resnet20 on 4,000 MNIST images, 2 epochs
    python benchmarks/eval_cost.py --demo     # also regenerate the README's demo table

The resnet20 run is `locallearn train --model resnet20 --data mnist --data-dir ../shared/data
--train-limit 4000 --epochs 2` with its defaults (validation split 0.1, evaluation batch 100,
train accuracy on a fixed 1,000-sample subset, one test pass at the end). `eval_seconds` is
all evaluation per epoch (validation passes, the test pass and the train-accuracy subset,
divided by the epochs); `epoch_seconds` is training only. Their ratio is taken within one
run, so a loaded machine inflates both.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

# First, as the CLI does: locallearn sets OMP_WAIT_POLICY=PASSIVE only before torch loads
# (common imports torch), and spinning threads on a busy machine skew both timings.
import locallearn  # noqa: F401

sys.path.insert(0, str(Path(__file__).parent))
from common import ROOT, command_line, machine, replace_section, today  # noqa: E402

from locallearn.cli import main as cli  # noqa: E402
from locallearn.engine.io import atomic_write_json  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "eval_cost.json"
DATA = str(ROOT.parent / "shared" / "data")


def resnet_run(tmp: Path) -> dict:
    out = tmp / "rn.json"
    args = ["train", "--model", "resnet20", "--data", "mnist", "--data-dir", DATA]
    args += ["--train-limit", "4000", "--epochs", "2", "--quiet", "--out", str(tmp / "rn")]
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli([*args, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def side_by_side(tmp: Path, pairs: int) -> list[dict]:
    """The same command with the folded view off and on, alternated ``pairs`` times."""
    from unittest import mock

    from locallearn.engine.fold import BatchNormFold

    off = classmethod(lambda cls, network, channels_last=True: None)
    out = []
    for i in range(pairs):
        for folded in (False, True):
            with contextlib.ExitStack() as stack:
                if not folded:
                    stack.enter_context(mock.patch.object(BatchNormFold, "of", off))
                s = resnet_run(tmp / f"ab{i}{int(folded)}")
            out.append(
                dict(folded=s["eval_folded"], epoch_seconds=s["epoch_seconds"],
                     eval_seconds=s["eval_seconds"], test_acc=s["test_acc"],
                     ratio=s["eval_seconds"] / s["epoch_seconds"], load=os.getloadavg()[0])
            )  # fmt: skip
            print(json.dumps(out[-1]), flush=True)
    return out


def demo_table(tmp: Path) -> tuple[str, int]:
    """`make demo`'s command, and the table it prints."""
    buffer = io.StringIO()
    args = ["compare", "--rules", "bp,greedy", "--quiet", "--out", str(tmp / "demo")]
    args += ["--json", str(tmp / "demo.json")]
    with contextlib.redirect_stdout(buffer):
        assert cli(args) == 0
    threads = json.loads((tmp / "demo.json").read_text())[0]["threads"]
    return buffer.getvalue().rstrip(), threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo", action="store_true", help="also run make demo's compare")
    parser.add_argument("--report-only", action="store_true", help="report the saved JSON")
    parser.add_argument("--ab", type=int, default=0, help="also N pairs of runs, fold off/on")
    args = parser.parse_args()
    if args.report_only:
        saved = json.loads(RESULTS.read_text())
        row, demo, ab = saved["resnet20"], saved["demo"], saved.get("ab")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            s = resnet_run(Path(tmp))
            row = {k: s[k] for k in ("epoch_seconds", "eval_seconds", "threads", "test_acc")}
            row |= {"val_acc": s["val_acc"], "ratio": s["eval_seconds"] / s["epoch_seconds"]}
            row["eval_folded"] = s.get("eval_folded")
            row["load"] = os.getloadavg()[0]
            print(json.dumps(row), flush=True)
            demo = demo_table(Path(tmp)) if args.demo else None
            ab = side_by_side(Path(tmp), args.ab) if args.ab else None
        atomic_write_json(RESULTS, {"resnet20": row, "demo": demo, "ab": ab})
    command = command_line()
    if args.report_only:  # the command that made the saved figures
        command = "python benchmarks/eval_cost.py" + (" --demo" if demo else "")
        command += f" --ab {len(ab) // 2}" if ab else ""
    lines = [
        "## Evaluation cost: resnet20 on 4,000 MNIST images, 2 epochs (issue 11)",
        "",
        f"- command: `{command}` (under `flock /tmp/locallearn-bench.lock`), which "
        "runs `locallearn train --model resnet20 --data mnist --data-dir ../shared/data "
        "--train-limit 4000 --epochs 2` with its defaults",
        f"- machine: {machine()}; date: {today()}; run with {row['threads']} threads; load "
        f"average {row['load']:.1f} at the end (other jobs beside it)",
        "- before (issue 11's profile): 26 s of evaluation per epoch against 17.6 s of "
        "training (the test set every epoch at batch 1,000, again at the end, and a full "
        "train-set pass); then 0.43x (7.6 s training, 3.3 s evaluation per epoch, load 3.8) "
        "once the test set was evaluated once and validation took its place per epoch",
        "- now: evaluation on the BatchNorm-folded, channels_last view of the network "
        f"(`eval_folded`: {row.get('eval_folded')}); --keep-best reuses the test pass when "
        "the best epoch is the last",
        "",
        "| epoch_seconds (training) | eval_seconds (all evaluation, per epoch) | ratio | "
        "val acc | test acc |",
        "|---|---|---|---|---|",
        f"| {row['epoch_seconds']:.1f} | {row['eval_seconds']:.1f} | {row['ratio']:.2f}x | "
        f"{row['val_acc']:.4f} | {row['test_acc']:.4f} |",
        "",
        f"The issue's target is 0.25x{' (met)' if row['ratio'] <= 0.25 else ' (not met)'}. "
        "The images evaluated: 11,800 (test 10,000, validation 2 x 400, train-accuracy "
        "subset 1,000), against 7,200 trained (3,600 per epoch, 2 epochs); the one test pass "
        f"is about {row['ratio'] * 10_000 / 11_800:.2f}x of this run's training on its own, "
        f"the per-epoch validation about {row['ratio'] * 800 / 11_800:.2f}x. Per image, "
        f"evaluation now costs {row['ratio'] * 7_200 / 11_800:.2f} of a training step (a "
        "step is a forward and a backward, about three forwards); 0.25x would need "
        f"{0.25 * 7_200 / 11_800:.2f}, another "
        f"{row['ratio'] / 0.25:.2f}x off the forward, and the test pass alone "
        "takes most of the budget. No exact evaluation of all 10,000 test images found here "
        "gets there (section 'Evaluation speed'; TorchScript freezing bakes the weights in, "
        "so it would be re-scripted, 0.15-0.3 s for resnet20, before every pass). A longer or "
        "larger run amortises the test pass; "
        "`--eval-every` trims the validation passes. Timings on the shared 2-core machine "
        "are noisy; the ratio is taken within one run.",
        "",
        "Evaluation batch size: see 'Evaluation speed' (batch 50, 100, 250 side by side); "
        "batch 100 stays.",
    ]
    if ab:
        on = [r for r in ab if r["folded"]]
        off = [r for r in ab if not r["folded"]]

        def mean(rows: list[dict], key: str) -> float:
            return sum(r[key] for r in rows) / len(rows)

        lines += [
            "",
            "Side by side, the same command with the folded view off and on, alternated "
            "(same weights, same accuracies: evaluation never trains): ratio "
            f"{mean(off, 'ratio'):.2f}x unfolded, {mean(on, 'ratio'):.2f}x folded (means); "
            f"the fold takes evaluation from {mean(off, 'eval_seconds'):.1f} s to "
            f"{mean(on, 'eval_seconds'):.1f} s per epoch "
            f"({mean(on, 'eval_seconds') / mean(off, 'eval_seconds'):.2f}x), its trace and "
            "per-pass check included.",
            "",
            "| run | folded | epoch_seconds | eval_seconds | ratio | load |",
            "|---|---|---|---|---|---|",
            *(
                f"| {i + 1} | {r['folded']} | {r['epoch_seconds']:.1f} | "
                f"{r['eval_seconds']:.1f} | {r['ratio']:.2f}x | {r['load']:.1f} |"
                for i, r in enumerate(ab)
            ),
        ]
    if demo is not None:
        lines += [
            "",
            f"README demo table (`make demo`'s command, {demo[1]} thread(s)):",
            "",
            "```",
            demo[0],
            "```",
        ]
    text = "\n".join(lines)
    print(text)
    replace_section("eval-cost", text)


if __name__ == "__main__":
    main()
