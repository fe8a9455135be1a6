"""Ways to make evaluation cheaper, side by side: resnet20's forward over the MNIST test set.

Each variant runs one full pass over the 10,000 test images (no subsampling), the variants
interleaved round after round so a change in the machine's load hits them all alike; the
figure is each variant's best round divided by the baseline's best round (the evaluator as
it was: ``torch.no_grad``, batch 100, the run's thread count). The network is a resnet20
trained for 30 steps on MNIST so its BatchNorm statistics are not the identity; every
variant's predictions are compared with the baseline's (argmax agreement, largest logit
difference).

    flock /tmp/locallearn-bench.lock python benchmarks/eval_speed.py
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

# First, as the CLI: locallearn sets OMP_WAIT_POLICY=PASSIVE only before torch loads.
import locallearn  # noqa: F401

sys.path.insert(0, str(Path(__file__).parent))
import torch  # noqa: E402
from common import ROOT, command_line, machine, replace_section, today  # noqa: E402
from torch import nn  # noqa: E402

from locallearn.data import load_dataset  # noqa: E402
from locallearn.engine.io import atomic_write_json  # noqa: E402
from locallearn.models import MODELS  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "eval_speed.json"
DATA = str(ROOT.parent / "shared" / "data")


def trained_resnet(x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    torch.manual_seed(0)
    net = MODELS.get("resnet20").build(tuple(x.shape[1:]), 10)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    net.train()
    for step in range(30):
        xb, yb = x[step * 100 : step * 100 + 100], y[step * 100 : step * 100 + 100]
        opt.zero_grad()
        nn.functional.cross_entropy(net(xb), yb).backward()
        opt.step()
    return net.eval()


def folded(net: nn.Module) -> nn.Module:
    from locallearn.engine.fold import BatchNormFold

    view = BatchNormFold.of(net)
    assert view is not None
    return view.refresh()


def forward_pass(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    batch: int,
    context: Callable = torch.no_grad,
    prepare: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    outs = []
    with context():
        for i in range(0, x.shape[0], batch):
            out = fn(prepare(x[i : i + batch]))
            outs.append(out.to_dense() if out.is_mkldnn else out)
    return time.perf_counter() - start, torch.cat(outs)


def variants(net: nn.Module, threads: int) -> dict[str, Callable[[torch.Tensor], tuple]]:
    fold = folded(net)
    inplace = copy.deepcopy(fold)
    for m in inplace.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = True  # safe here: after the fold each ReLU's input feeds nothing else
    cl = copy.deepcopy(fold).to(memory_format=torch.channels_last)
    cl_plain = copy.deepcopy(net).to(memory_format=torch.channels_last)
    out: dict[str, Callable[[torch.Tensor], tuple]] = {
        "baseline (no_grad, batch 100)": lambda x: forward_pass(net, x, 100),
        "inference_mode": lambda x: forward_pass(net, x, 100, torch.inference_mode),
        "BN folded": lambda x: forward_pass(fold, x, 100, torch.inference_mode),
        "BN folded + in-place ReLU": lambda x: forward_pass(inplace, x, 100, torch.inference_mode),
        "BN folded, no_grad": lambda x: forward_pass(fold, x, 100),
        "BN folded, batch 50": lambda x: forward_pass(fold, x, 50, torch.inference_mode),
        "BN folded, batch 250": lambda x: forward_pass(fold, x, 250, torch.inference_mode),
        "BN folded, batch 500": lambda x: forward_pass(fold, x, 500, torch.inference_mode),
        "channels_last": lambda x: forward_pass(
            cl_plain,
            x,
            100,
            torch.inference_mode,
            lambda t: t.contiguous(memory_format=torch.channels_last),
        ),
        "BN folded + channels_last": lambda x: forward_pass(
            cl,
            x,
            100,
            torch.inference_mode,
            lambda t: t.contiguous(memory_format=torch.channels_last),
        ),
    }
    try:
        frozen = torch.jit.optimize_for_inference(
            torch.jit.freeze(torch.jit.script(copy.deepcopy(net).eval()))
        )
        out["TorchScript freeze + optimize_for_inference"] = lambda x: forward_pass(
            frozen, x, 100, torch.inference_mode
        )
    except Exception as e:  # recorded, not fatal: the other variants still compare
        print(f"torchscript: {type(e).__name__}: {e}", file=sys.stderr)
    if threads > 1:

        def one_thread(x: torch.Tensor) -> tuple:
            torch.set_num_threads(1)
            try:
                return forward_pass(fold, x, 100, torch.inference_mode)
            finally:
                torch.set_num_threads(threads)

        out["BN folded, 1 thread"] = one_thread
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="test images (smoke test)")
    args = parser.parse_args()
    data = load_dataset("mnist", data_dir=DATA)
    x, y = data.x_test, data.y_test
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    net = trained_resnet(data.x_train, data.y_train)
    threads = torch.get_num_threads()
    runs = variants(net, threads)
    best: dict[str, float] = {}
    outputs: dict[str, torch.Tensor] = {}
    for fn in runs.values():  # warm-up, not timed: first-call costs (oneDNN primitives, JIT)
        fn(x[:300])
    for _ in range(args.rounds):
        for name, fn in runs.items():
            seconds, logits = fn(x)
            best[name] = min(best.get(name, float("inf")), seconds)
            outputs[name] = logits
            print(f"{name}: {seconds:.2f} s", flush=True)
    ref = outputs["baseline (no_grad, batch 100)"]
    base = best["baseline (no_grad, batch 100)"]
    rows = []
    for name in runs:
        agree = float((outputs[name].argmax(1) == ref.argmax(1)).float().mean())
        diff = float((outputs[name] - ref).abs().max())
        acc = float((outputs[name].argmax(1) == y).float().mean())
        rows.append(
            dict(name=name, seconds=best[name], ratio=best[name] / base, agree=agree,
                 max_logit_diff=diff, acc=acc)
        )  # fmt: skip
    load = os.getloadavg()
    atomic_write_json(RESULTS, {"threads": threads, "images": int(x.shape[0]), "rows": rows,
                                "load": load})  # fmt: skip
    lines = [
        "## Evaluation speed: ways to run resnet20's test pass cheaper (issue 11)",
        "",
        f"- command: `{command_line()}` (under `flock /tmp/locallearn-bench.lock`)",
        f"- machine: {machine()}; date: {today()}; {threads} threads; load average "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end",
        f"- one pass over {x.shape[0]:,} MNIST test images per variant and round, "
        f"{args.rounds} rounds interleaved, best round each; 'vs baseline' divides by the "
        "baseline's best round (after one untimed warm-up pass each). Agreement: the "
        "fraction of images whose predicted class is the baseline's; max |diff|: the largest "
        "logit difference from the baseline.",
        f"- raw results: `{RESULTS.relative_to(ROOT)}`",
        "",
        "| variant | seconds | vs baseline | agreement | max abs diff | acc |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['seconds']:.2f} | {r['ratio']:.2f}x | {r['agree']:.4f} | "
            f"{r['max_logit_diff']:.1e} | {r['acc']:.4f} |"
        )
    text = "\n".join(lines)
    print(text)
    replace_section("eval-speed", text)


if __name__ == "__main__":
    main()
