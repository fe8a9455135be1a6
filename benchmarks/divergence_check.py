"""What the once-per-epoch divergence check costs, beside the training it guards.

ResNet-32 (0.46M parameters), greedy K=4, batch 128 of random 3x32x32 inputs on CPU: the
median time of ``diverged_stage`` (the per-stage loss test and one isfinite reduction over
every block's weights and buffers) against the median time of one training step. A CIFAR
epoch is 391 such steps; the check runs once per epoch, so its share is check / (391 steps).

    flock /tmp/locallearn-bench.lock python benchmarks/divergence_check.py
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import command_line, machine, today  # noqa: E402

from locallearn.engine.divergence import diverged_stage  # noqa: E402
from locallearn.engine.loop import train_step  # noqa: E402
from locallearn.models import build_model  # noqa: E402
from locallearn.rules import build_rule  # noqa: E402

STEPS_PER_EPOCH = 391  # CIFAR-10, 50000 / 128


def main() -> None:
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    torch.manual_seed(0)
    shape = (3, 32, 32)
    rule = build_rule("greedy", build_model("resnet32", shape, 10), shape, 10, blocks=4)
    optimizers = [torch.optim.Adam(rule.stage_parameters(i), lr=1e-3) for i in range(rule.blocks)]
    x, y = torch.randn(128, *shape), torch.randint(0, 10, (128,))
    step_times, check_times = [], []
    for _ in range(6):
        start = time.perf_counter()
        losses = train_step(rule, optimizers, x, y)
        step_times.append(time.perf_counter() - start)
        means = [float(v) for v in losses]
        start = time.perf_counter()
        assert diverged_stage(rule, means) is None
        check_times.append(time.perf_counter() - start)
    step, check = statistics.median(step_times[1:]), statistics.median(check_times[1:])
    result = {
        "date": today(),
        "machine": machine(),
        "command": command_line(),
        "threads": torch.get_num_threads(),
        "uptime": os.popen("uptime").read().strip(),
        "step_seconds": step,
        "check_seconds": check,
        "check_share_of_epoch": check / (STEPS_PER_EPOCH * step),
    }
    out = Path(__file__).parent / "results" / "divergence_check.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
