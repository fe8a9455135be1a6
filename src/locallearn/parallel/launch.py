"""``--workers W`` on one machine: start W worker processes, watch them, stop them together.

Each worker is ``python -m locallearn`` with the same arguments and torchrun's environment
variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, ...), so it joins the job exactly as
under ``torchrun``. Only worker 1 shows progress and prints the result. The launcher polls
its workers every 0.1 s: when one dies, the others are stopped at once (SIGTERM, then
SIGKILL after a grace period) and one line names the dead worker. Workers ask the kernel to
kill them if the launcher itself dies (PR_SET_PDEATHSIG), so none is ever left behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from locallearn.config import RunConfig
from locallearn.errors import UsageError

POLL_SECONDS = 0.1
GRACE_SECONDS = 5.0
EXIT_PEER_LOST = 4  # a worker that stopped because another one died (cli.EXIT_PEER_LOST)


def free_port(port: int | None) -> int:
    """``port`` if it can be bound on 127.0.0.1 (a UsageError if not), else a free one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port or 0))
        except OSError as err:
            raise UsageError(
                f"--port {port} cannot be used on 127.0.0.1 ({err.strerror}); pass another "
                "--port, or leave it out to let locallearn pick a free one"
            )
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _stop(procs: Sequence[subprocess.Popen[bytes]], first: int = signal.SIGTERM) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(first)
    deadline = time.monotonic() + GRACE_SECONDS
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def launch(
    argv: Sequence[str], workers: int, run_dir: Path, *, command: str, port: int | None = None
) -> int:
    """Run ``locallearn ARGV`` as ``workers`` processes of one job; returns the exit status."""
    master = free_port(port)
    env = dict(os.environ)
    env.update(
        WORLD_SIZE=str(workers),
        LOCAL_WORLD_SIZE=str(workers),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(master),
        LOCALLEARN_LAUNCHER="1",
        LOCALLEARN_JOB=uuid.uuid4().hex[:12],
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for rank in range(workers):
            child = [sys.executable, "-m", "locallearn", *argv]
            if rank > 0:
                child.append("--quiet")
            procs.append(
                subprocess.Popen(
                    child,
                    env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                    stdout=None if rank == 0 else subprocess.DEVNULL,
                    preexec_fn=_die_with_parent,
                )
            )
        while True:
            codes = [p.poll() for p in procs]
            failed = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                # The cause, not a worker that stopped because of it.
                rank, code = min(failed, key=lambda f: (f[1] == EXIT_PEER_LOST, f[0]))
                _stop(procs)
                if code in (2, 3):  # a usage error or divergence: worker 1 has said it
                    return code
                print(
                    f"locallearn {command}: worker {rank + 1} of {workers} (pid "
                    f"{procs[rank].pid}) {_describe(code)}; the other workers were stopped; "
                    f"continue with `locallearn resume {run_dir}`",
                    file=sys.stderr,
                    flush=True,
                )
                return 1
            if all(c == 0 for c in codes):
                return 0
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        # Ctrl-C at a terminal reached the workers too: give them a moment to stop by
        # themselves, then stop the rest (a SIGINT to the launcher alone reaches only it).
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and any(p.poll() is None for p in procs):
            time.sleep(POLL_SECONDS)
        _stop(procs)
        print(
            f"locallearn {command}: interrupted; all {workers} workers stopped; continue with "
            f"`locallearn resume {run_dir}`",
            file=sys.stderr,
        )
        return 130
    finally:
        _stop(procs, signal.SIGKILL)


def preflight(cfg: RunConfig, run_dir: Path, *, resume: bool) -> None:
    """Refuse here, in one process and with one message, what the workers would refuse:
    a rule that cannot run on workers, more workers than stages, a bad placement, too few
    GPUs, an occupied run directory."""
    from locallearn.engine.lock import RunDirLock
    from locallearn.engine.run import Run, check_fresh_run_dir
    from locallearn.parallel.placement import check_rule, parse_placement
    from locallearn.parallel.worker import TRANSPORTS, Job, job_config

    workers = cfg.workers or 1
    job_config(cfg, Job(rank=0, world=workers, local_rank=0, local_world=workers))
    if not resume:
        check_fresh_run_dir(run_dir)
    if run_dir.exists():  # another run writing there (worker 1 takes this lock itself)
        lock = RunDirLock(run_dir)
        lock.acquire()
        lock.release()
    if cfg.transport == "shm" and cfg.device.startswith("cuda"):
        raise UsageError("--transport shm carries CPU tensors; use --transport dist with CUDA")
    assert (cfg.transport or "auto") in TRANSPORTS
    run = Run(cfg.replace(device="cpu", amp=False, channels_last=False))
    check_rule(cfg.rule, run.rule, workers, cfg.rule_options())
    if cfg.placement is not None:
        parse_placement(cfg.placement, workers, run.rule.blocks)
