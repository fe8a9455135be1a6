"""Forward-Forward, feedback alignment and DFA vs BP: accuracy and act_bytes_peak.

Three parts, each written to BENCHMARKS.md (section ``forward-only-ff-fa-dfa``) and to
benchmarks/results/forward_only_ff_fa_dfa.json as soon as it finishes:

1. memory: act_bytes_peak of one training step of the 3x1000 MLP on MNIST-shaped input at
   batch 100 (exact, from the saved-tensor meter; independent of training length);
2. mnist:  the 3x1000 MLP on a subset of MNIST (the sizes are flags: this machine cannot run
   the published 100 epochs on 60k images), seed 0;
3. mnist1d: MLP (2x100) for every rule (3 seeds) and the reference CNN (cnn1d) for bp and
   fa (first seed only).

    python benchmarks/forward_only_ff_fa_dfa.py                      # what BENCHMARKS.md shows
    python benchmarks/forward_only_ff_fa_dfa.py --mnist1d-epochs 1 --mnist-train 200 \\
        --mnist-test 200 --mnist-epochs 1 --ff-epochs 1 --seeds 0 --no-write   # smoke test
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import torch

import locallearn
from locallearn.data import load_dataset
from locallearn.engine.io import atomic_write_json
from locallearn.engine.loop import train_step
from locallearn.measure.memory import SavedTensorMeter
from locallearn.models import build_model
from locallearn.report import format_bytes, format_table
from locallearn.rules import build_rule

sys.path.insert(0, str(Path(__file__).parent))
from common import ROOT, command_line, machine, mean_std, replace_section, today  # noqa: E402

SECTION = "forward-only-ff-fa-dfa"
RESULTS = "benchmarks/results/forward_only_ff_fa_dfa.json"
RULES = ("bp", "fa", "dfa", "ff")
PUBLISHED = {
    "bp": "MNIST LeNet 0.91% err (biotorch)",
    "fa": "MNIST LeNet 1.7% err (biotorch)",
    "dfa": "MNIST LeNet 1.61% err (biotorch)",
    "ff": "MNIST 3x1000: 1.36% err (paper), 1.45% (careful reimpl., 100 epochs)",
}


def step_memory(rule: str) -> int:
    """act_bytes_peak of one step of the 3x1000 MLP, batch 100, 1x28x28 inputs."""
    torch.manual_seed(0)
    net = build_model("mlp", (1, 28, 28), 10, width=1000, depth=3)
    r = build_rule(rule, net, (1, 28, 28), 10)
    opts = [torch.optim.Adam(r.stage_parameters(i), lr=1e-3) for i in range(r.blocks)]
    frozen = [*r.network.parameters(), *r.network.buffers()]
    frozen += [*r.signal_modules().parameters(), *r.signal_modules().buffers()]
    meter = SavedTensorMeter(exclude=frozen)
    with meter:
        train_step(r, opts, torch.randn(100, 1, 28, 28), torch.randint(0, 10, (100,)), meter)
    return meter.peak


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--mnist1d-epochs", type=int, default=12)
    p.add_argument("--mnist-train", type=int, default=3000, help="MNIST training images")
    p.add_argument("--mnist-test", type=int, default=2000, help="MNIST test images")
    p.add_argument("--mnist-epochs", type=int, default=2, help="bp, fa, dfa on MNIST")
    p.add_argument("--ff-epochs", type=int, default=5, help="ff on MNIST")
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--render", action="store_true", help="rewrite the section from the JSON")
    p.add_argument("--resume", action="store_true", help="skip runs already in the JSON")
    p.add_argument("--mnist-rules", default="bp,ff,dfa,fa", help="MNIST part, in this order")
    args = p.parse_args()
    if args.render:
        saved = json.loads((ROOT / RESULTS).read_text())
        given = argparse.Namespace(**saved["args"]) if "args" in saved else p.parse_args([])
        replace_section(SECTION, render(saved, given))
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    out: dict[str, Any] = {"command": command_line(), "machine": machine(), "date": today()}
    if args.resume:  # keep the runs an interrupted invocation already recorded
        out = {**json.loads((ROOT / RESULTS).read_text()), **out}
    out["args"] = vars(args)

    def done(part: str, rule: str, model: str, seed: int) -> bool:
        return any(
            (s["rule"], s["model"], s["seed"]) == (rule, model, seed) for s in out.get(part, [])
        )

    def write() -> None:
        print(render(out, args), flush=True)
        if not args.no_write:
            atomic_write_json(ROOT / RESULTS, out)
            replace_section(SECTION, render(out, args))

    out["memory"] = {rule: step_memory(rule) for rule in RULES}
    write()

    out.setdefault("mnist", [])
    full = load_dataset("mnist", args.data_dir, train_limit=args.mnist_train)
    mnist = dataclasses.replace(
        full, x_test=full.x_test[: args.mnist_test], y_test=full.y_test[: args.mnist_test]
    )
    for rule in args.mnist_rules.split(","):
        if done("mnist", rule, "mlp", 0):
            continue
        epochs = args.ff_epochs if rule == "ff" else args.mnist_epochs
        s = locallearn.train(rule=rule, model="mlp", data=mnist, width=1000, depth=3,
                             epochs=epochs, seed=0, lr=1e-3, batch_size=100)  # fmt: skip
        out["mnist"].append(s)
        print(rule, "mnist", s["test_acc_curve"], flush=True)
        write()

    # Adam; lr 1e-2 is the MNIST-1D reference. FF stayed at chance with 1e-2 in a trial
    # (3,000 MNIST images, 12 epochs) and learned with 1e-3, so it uses 1e-3.
    out.setdefault("mnist1d", [])
    mnist1d = load_dataset("mnist1d")
    for rule, model in [(r, "mlp") for r in RULES] + [("bp", "cnn1d"), ("fa", "cnn1d")]:
        for seed in seeds if model == "mlp" else seeds[:1]:  # cnn1d: one seed (time)
            if done("mnist1d", rule, model, seed):
                continue
            lr = 1e-3 if rule == "ff" else 1e-2
            s = locallearn.train(rule=rule, model=model, data=mnist1d, seed=seed,
                                 epochs=args.mnist1d_epochs, lr=lr)  # fmt: skip
            out["mnist1d"].append(s)
            print(rule, model, seed, s["test_acc"], flush=True)
        write()


def render(out: dict[str, Any], args: argparse.Namespace) -> str:
    mem = out["memory"]
    lines = [
        f"Date {out['date']}; machine: {out['machine']}.",
        f"Command: `{out['command']}`",
        "",
        "**Memory** (one training step, `--model mlp --depth 3 --width 1000`, batch 100, "
        "1x28x28 input; exact saved-tensor bytes):",
        "",
        "```",
        format_table(
            ["rule", "act_bytes_peak", "bytes", "x BP"],
            [[r, format_bytes(mem[r]), mem[r], f"{mem[r] / mem['bp']:.3f}"] for r in RULES],
        ),
        "```",
        "",
        "Arithmetic. BP saves the 100x784 input (313,600 B), the three 100x1000 ReLU outputs "
        "(each also the next Linear's input: 1,200,000 B) and the cross-entropy's 4,804 B. "
        "FA saves the same. DFA holds one layer at a time: its input (<= 400,000 B) plus the "
        "100x10 error (4,000 B). FF's fused layer saves only its normalised input and two "
        "floats per row (it recomputes the ReLU output in backward), but a block sees 100 "
        "positives + 100 negatives in one backward: 200x1000x4 + 1,600 = 801,600 B = 0.528x "
        "BP. The 0.4x target is not met. Any exact FF update needs, at its backward, the "
        "inputs of every row it sums over; going below 800,000 B needs the positive and "
        "negative halves in two backward passes before one optimizer step (400,800 B = "
        "0.264x), which the one loop cannot do today: it zeroes a block's gradients after "
        "the block's forward, so a first backward inside the forward would be lost. A loop "
        "hook that runs a block in chunks (forward, signal, backward per chunk, then one "
        "step) would give it.",
    ]
    if out.get("mnist1d"):
        rows = []
        for rule, model in [(r, "mlp") for r in RULES] + [("bp", "cnn1d"), ("fa", "cnn1d")]:
            group = [s for s in out["mnist1d"] if s["rule"] == rule and s["model"] == model]
            if not group:
                continue
            acc, sd = mean_std([s["test_acc"] for s in group])
            bp = next(
                s["act_bytes_peak"] for s in out["mnist1d"] if s["rule"] == "bp"
                and s["model"] == model
            )  # fmt: skip
            rows.append([rule, model, len(group), f"{100 * acc:.1f} ± {100 * sd:.1f}",
                         f"{group[0]['act_bytes_peak'] / bp:.3f}",
                         f"{group[0]['epoch_seconds']:.2f}"])  # fmt: skip
        lines += [
            "",
            f"**MNIST-1D** (4000/1000, {args.mnist1d_epochs} epochs, batch 100, Adam lr 1e-2; "
            "ff lr 1e-3; mlp = 2x100 ReLU, cnn1d = reference CNN). Published (Greydanus 2020): "
            "MLP 68%, CNN 94% test accuracy.",
            "",
            "```",
            format_table(["rule", "model", "seeds", "test acc %", "act x BP", "s/epoch"], rows),
            "```",
        ]
    if out.get("mnist"):
        bp = next(s["act_bytes_peak"] for s in out["mnist"] if s["rule"] == "bp")
        rows = [
            [s["rule"], s["epochs"], f"{100 * (1 - s['test_acc']):.2f}",
             " ".join(f"{100 * a:.1f}" for a in s["test_acc_curve"]),
             f"{s['act_bytes_peak'] / bp:.3f}", f"{s['epoch_seconds']:.0f}", PUBLISHED[s["rule"]]]
            for s in out["mnist"]
        ]  # fmt: skip
        lines += [
            "",
            f"**MNIST, 3x1000 MLP** — CUT DOWN: first {args.mnist_train} training images, "
            f"first {args.mnist_test} test images, seed 0, Adam lr 1e-3, batch 100 (2 shared "
            "CPU cores: one full epoch of 60k takes 11 min for BP and 22 min for FF here). "
            "These errors are not comparable with the published full-data numbers. ff's "
            "sweep below 10% accuracy is not noise: early in training the true label's "
            "goodness in layers 2-3 (the sweep's layers) is *below* the wrong labels' (every "
            "layer is first pushed up towards its threshold; probably length normalisation "
            "then shrinks the image part of the true-label input); in a trial (3,000 images, "
            "2x300 MLP, same lr) it crossed chance between steps 150 and 180 and reached 66.5% "
            "at step 330. The published 1.36-1.45% needs ~60,000 steps; nothing here measures it.",
            "",
            "```",
            format_table(
                [
                    "rule",
                    "epochs",
                    "test err %",
                    "test acc % per epoch",
                    "act x BP",
                    "s/epoch",
                    "published",
                ],
                rows,
            ),
            "```",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
