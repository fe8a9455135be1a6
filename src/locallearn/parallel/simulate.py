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
