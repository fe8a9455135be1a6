"""Which worker runs which stages, and which rules can run on workers at all.

Placement: worker w runs a contiguous range of stages, so a message only ever goes from
worker w to worker w+1. Balanced placement minimises the slowest worker's time per batch
(the pipeline's period), from each stage's measured step time: rank 0 runs a deep copy of
the rule (its updates and BatchNorm statistics are thrown away, the global RNG is restored)
for one untimed and three timed steps on the first training batch, and takes each stage's
median of the three (forward, local loss, backward and optimizer step of that stage alone).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from locallearn.engine.loop import train_stages
from locallearn.errors import UsageError
from locallearn.rules import RULES, Rule

# Rules whose local signal reads state that lives on another worker, with the reason.
REFUSED = {
    "man": "block i's signal holds an EMA copy of block i+1's first unit, updated from that "
    "block's current weights after every step, so each step would need the next worker's "
    "weights (a message backwards)",
    "gbnn": "each round fits the residual of every earlier round's prediction on the whole "
    "training set and picks its own batches, so each round needs every worker's learners",
    "dfa": "every step begins with a forward pass through all layers to get the output "
    "error that each layer learns from, so worker 1 would need every worker's weights",
    "noprop": "every block learns with the shared output layer and label embedding (Algorithm "
    "1 steps them with each block's loss), so each worker would need the others' copies",
}
ONE_BLOCK = {
    "bp": "trains the whole network as one block",
    "fa": "trains the whole network as one block (only its backward pass differs from bp)",
}


def worker_support() -> list[tuple[str, bool, str]]:
    """(rule, runs on several workers, why not / note) for every registered rule."""
    rows = []
    for name in RULES.names():
        if name in REFUSED:
            rows.append((name, False, REFUSED[name]))
        elif name in ONE_BLOCK:
            rows.append((name, False, ONE_BLOCK[name] + ": nothing to spread"))
        elif name == "ff":
            rows.append(
                (name, True, "with --ff-readout sweep (the linear readout reads all layers)")
            )
        elif name == "monoforward":
            rows.append((name, True, "with --mf-readout last or output (sum reads all layers)"))
        else:
            rows.append((name, True, ""))
    return rows


def check_rule(rule_name: str, rule: Rule, workers: int, options: dict[str, Any]) -> None:
    """Refuse a rule that cannot be spread over ``workers`` workers, saying why."""
    if workers == 1:
        return
    fix = "run it with --workers 1"
    if rule_name in REFUSED:
        raise UsageError(f"rule {rule_name!r} cannot run on workers: {REFUSED[rule_name]}; {fix}")
    if rule_name == "ff" and options.get("ff_readout") == "linear":
        raise UsageError(
            "rule 'ff' with --ff-readout linear cannot run on workers: the readout stage learns "
            "from the activities of every layer, which live on other workers; use "
            f"--ff-readout sweep or {fix}"
        )
    if RULES.canonical(rule_name) == "monoforward" and options.get("mf_readout") == "sum":
        raise UsageError(
            "rule 'monoforward' with --mf-readout sum cannot run on workers: it predicts from "
            "the goodness of every layer, and the layers live on other workers; use "
            f"--mf-readout last or {fix}"
        )
    if workers > rule.blocks:
        why = f" (rule {rule_name!r} {ONE_BLOCK[rule_name]})" if rule_name in ONE_BLOCK else ""
        raise UsageError(
            f"--workers {workers} needs at least {workers} stages, but this run has "
            f"{rule.blocks}{why}; use --workers {rule.blocks} or fewer, or more --blocks"
        )


def parse_placement(placement: Sequence[int] | None, workers: int, stages: int) -> list[range]:
    """``--placement s2,...,sW`` (the first stage of workers 2..W, 0-based) as the ranges of
    stages of workers 1..W; a bad value is a UsageError that says what is allowed."""
    assert placement is not None
    starts = list(placement)
    example = ",".join(str(i) for i in range(1, workers))
    if len(starts) != workers - 1:
        raise UsageError(
            f"--placement gives the first stage of workers 2..{workers}: {workers - 1} "
            f"number(s) for --workers {workers}, got {len(starts)} ({','.join(map(str, starts))})"
            f"; e.g. --placement {example}"
        )
    bounds = [0, *starts, stages]
    if any(not 0 < s < stages for s in starts) or any(a >= b for a, b in zip(bounds, bounds[1:])):
        raise UsageError(
            f"--placement {','.join(map(str, starts))}: the first stages of workers 2..{workers} "
            f"must increase strictly within 1..{stages - 1} (stages count from 0; this run has "
            f"{stages}), so every worker gets at least one; e.g. --placement {example}"
        )
    return [range(a, b) for a, b in zip(bounds, bounds[1:])]


def balance(seconds: Sequence[float], workers: int) -> list[range]:
    """Contiguous groups of stages, one per worker, minimising the largest group's total
    time (exact, by dynamic programming over the cut points); ties go to the earliest cut."""
    k = len(seconds)
    prefix = [0.0]
    for s in seconds:
        prefix.append(prefix[-1] + s)
    inf = float("inf")
    # best[w][i]: the smallest possible max group time for the first i stages on w workers.
    best = [[inf] * (k + 1) for _ in range(workers + 1)]
    cut = [[0] * (k + 1) for _ in range(workers + 1)]
    best[0][0] = 0.0
    for w in range(1, workers + 1):
        for i in range(w, k + 1):
            for j in range(w - 1, i):
                value = max(best[w - 1][j], prefix[i] - prefix[j])
                if value < best[w][i] - 1e-12:
                    best[w][i], cut[w][i] = value, j
    bounds, i = [k], k
    for w in range(workers, 0, -1):
        i = cut[w][i]
        bounds.append(i)
    bounds.reverse()
    return [range(a, b) for a, b in zip(bounds, bounds[1:])]


def measure_stages(
    rule: Rule,
    make_optimizer: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer],
    x: torch.Tensor,
    y: torch.Tensor,
    repeats: int = 3,
) -> tuple[list[float], list[int]]:
    """Each stage's median step time on (x, y) and the bytes of its output message (the
    output plus the labels): measured on a copy, so the run itself is untouched."""
    rng = torch.get_rng_state()
    try:
        trial = copy.deepcopy(rule)
        optimizers = [make_optimizer(trial.stage_parameters(i)) for i in range(trial.blocks)]
        trial.train(True)
        times: list[list[float]] = [[] for _ in range(trial.blocks)]
        out_bytes = [0] * trial.blocks
        for repeat in range(repeats + 1):
            h, target = trial.begin_step(x, y)
            for i in range(trial.blocks):
                start = time.perf_counter()
                _, h = train_stages(trial, optimizers, h, target, range(i, i + 1))
                if h.device.type == "cuda":
                    torch.cuda.synchronize(h.device)
                if repeat:
                    times[i].append(time.perf_counter() - start)
                out_bytes[i] = h.numel() * h.element_size() + y.numel() * y.element_size()
        return [statistics.median(t) for t in times], out_bytes
    finally:
        torch.set_rng_state(rng)
