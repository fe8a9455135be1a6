"""Predicted throughput of a pipelined run, from measured stage times and message sizes.

An event simulation of the schedule that the workers run (worker.py): worker w starts batch
t when it has finished batch t-1 and batch t's message has arrived; it computes for its
stages' summed time, spends ``copy_seconds_per_byte`` per byte packing its output, and hands
the message to its link, which carries one message at a time in ``latency + bytes /
bandwidth`` while the worker goes on (sends are non-blocking, receives are posted ahead).
At most ``slots`` messages wait on a link; a fuller link blocks the sender. Every epoch
starts empty (the pipeline fills, then drains before evaluation), as in the real run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from locallearn.parallel.placement import balance


def simulate(
    stage_seconds: Sequence[float],
    message_bytes: Sequence[int],
    workers: int,
    *,
    steps: int,
    batch_size: int,
    bandwidth: float,
    latency: float,
    copy_seconds_per_byte: float = 0.0,
    slots: int = 4,
    placement: Sequence[range] | None = None,
) -> dict[str, Any]:
    """One epoch of ``steps`` batches on ``workers`` workers (bandwidth in bytes/s, latency
    in s). Returns seconds, samples_per_second, speedup over one worker (the stages back to
    back, no messages), efficiency (speedup / workers) and each worker's idle fraction."""
    if workers > len(stage_seconds):
        raise ValueError(f"{workers} workers need at least {workers} stages")
    groups = list(placement) if placement is not None else balance(stage_seconds, workers)
    compute = [sum(stage_seconds[i] for i in g) for g in groups]
    out_bytes = [message_bytes[g[-1]] for g in groups]
    link_time = [latency + b / bandwidth for b in out_bytes]
    pack = [b * copy_seconds_per_byte for b in out_bytes]
    free = [0.0] * workers  # when each worker is free again
    link_free = [0.0] * workers  # when each worker's outgoing link is free again
    arrivals: list[list[float]] = [[0.0] * steps for _ in range(workers)]
    taken: list[list[float]] = [[0.0] * steps for _ in range(workers)]  # receiver start times
    busy = [0.0] * workers
    for t in range(steps):
        for w in range(workers):
            start = max(free[w], arrivals[w][t] if w else 0.0)
            taken[w][t] = start
            done = start + compute[w]
            busy[w] += compute[w]
            if w < workers - 1:
                done += pack[w]
                if t >= slots:  # the ring is full until the receiver took batch t - slots
                    done = max(done, taken[w + 1][t - slots])
                begin = max(done, link_free[w])
                link_free[w] = begin + link_time[w]
                arrivals[w + 1][t] = link_free[w]
            free[w] = done
    seconds = max(free)
    single = steps * sum(stage_seconds)
    speedup = single / seconds if seconds else 0.0
    return {
        "workers": workers,
        "placement": [[g.start, g.stop] for g in groups],
        "seconds": seconds,
        "samples_per_second": steps * batch_size / seconds if seconds else 0.0,
        "speedup": speedup,
        "efficiency": speedup / workers,
        "idle_fraction": [1.0 - b / seconds for b in busy],
        "period_seconds": max(max(compute[w] + pack[w], link_time[w]) for w in range(workers)),
    }


HOST_LATENCY = 50e-6  # a FIFO wake-up between two processes on one host, order of magnitude


def copy_seconds_per_byte(nbytes: int, repeats: int = 21) -> float:
    """Measured cost of packing a message of ``nbytes`` (the sender's one copy)."""
    import time

    import torch

    from locallearn.parallel import transport

    t = torch.randn(max(1, nbytes // 4))
    buffer = torch.empty(transport.message_bytes([t]), dtype=torch.uint8)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        transport.pack(buffer, [t])
        times.append(time.perf_counter() - start)
    return sorted(times)[repeats // 2] / max(1, nbytes)


def predict_pipeline(
    cfg: Any,
    input_shape: Sequence[int],
    classes: int,
    workers: int,
    *,
    bandwidth: float | None = None,
    latency: float | None = None,
    steps: int = 100,
) -> dict[str, Any]:
    """``locallearn measure --workers W``: measure each stage of ``cfg``'s rule on a random
    batch (as placement does) and simulate an epoch of ``steps`` batches on ``workers``
    workers. ``bandwidth`` None: workers on one host, shared memory (no link time)."""
    import torch

    from locallearn.config import validate
    from locallearn.engine.evaluation import resolve_run_config
    from locallearn.engine.run import make_optimizer
    from locallearn.errors import UsageError
    from locallearn.measure.step import PIXEL_MEAN, PIXEL_STD, random_batch
    from locallearn.models import build_model
    from locallearn.parallel.placement import check_rule, measure_stages, parse_placement
    from locallearn.rules import build_rule

    cfg = resolve_run_config(cfg)  # the rule's recipe: batch size, optimizer
    validate(cfg)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    if bandwidth is not None and not bandwidth > 0:
        raise UsageError(f"--bandwidth must be a positive number of bytes/s, got {bandwidth}")
    if latency is not None and latency < 0:
        raise UsageError(f"--latency must be >= 0 seconds, got {latency}")
    if steps < 1:
        raise UsageError(f"--epoch-steps must be at least 1, got {steps}")
    shape = tuple(int(d) for d in input_shape)
    torch.manual_seed(cfg.seed)
    network = build_model(cfg.model, shape, classes, **cfg.model_options())
    stats = ((PIXEL_MEAN,) * shape[0], (PIXEL_STD,) * shape[0])
    rule = build_rule(cfg.rule, network, shape, classes, input_stats=stats, **cfg.rule_options())
    check_rule(cfg.rule, rule, workers, cfg.rule_options())
    placement = parse_placement(cfg.placement, workers, rule.blocks) if cfg.placement else None
    x, y = random_batch(shape, classes, cfg.batch_size, torch.Generator().manual_seed(cfg.seed))
    seconds, nbytes = measure_stages(rule, lambda p: make_optimizer(cfg, p), x, y)
    copy = copy_seconds_per_byte(max(nbytes))
    link = (1e15, HOST_LATENCY) if bandwidth is None else (bandwidth, latency or 0.0)
    sim = simulate(
        seconds,
        nbytes,
        workers,
        steps=steps,
        batch_size=cfg.batch_size,
        bandwidth=link[0],
        latency=HOST_LATENCY if latency is None else latency,
        copy_seconds_per_byte=copy,
        placement=placement,
    )
    return {
        "rule": cfg.rule,
        "model": cfg.model,
        "blocks": rule.blocks,
        "stage_seconds": seconds,
        "message_bytes": nbytes,
        "copy_seconds_per_byte": copy,
        "bandwidth": bandwidth,
        "latency": HOST_LATENCY if latency is None else latency,
        **sim,
    }
