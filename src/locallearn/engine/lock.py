"""One writer per run directory: ``RUN_DIR/.lock``, flock'ed for the life of train/resume.

The file holds the writer's pid as text. The lock is ``fcntl.flock(LOCK_EX | LOCK_NB)``:
the kernel drops it when the process dies (SIGKILL included), so a stale file never blocks
a later run. A reader asks "is it running?" with ``is_running``: a non-blocking lock taken
and released at once. The file itself is left in place (removing it would let a process that
opened it before the removal lock a file nobody else sees).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from locallearn.errors import UsageError

LOCK_NAME = ".lock"


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "another process"


def is_running(run_dir: str | Path) -> bool:
    """Whether a train/resume process holds the run directory now."""
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def remove_stale_temporaries(run_dir: Path) -> None:
    """Delete ``.NAME.*.tmp`` files that a kill during an atomic write left behind; only
    the lock holder calls this, so no live write is among them."""
    for tmp in run_dir.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


class RunDirLock:
    """Exclusive, re-entrant (within this object) lock on a run directory."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None
        self._depth = 0

    def acquire(self) -> None:
        if self._depth:
            self._depth += 1
            return
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            raise UsageError(
                f"cannot write the run directory {self.run_dir}: {error.strerror}; "
                "choose another --out"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UsageError(
                f"{self.run_dir} is in use by another locallearn run ({_holder(self.path)}); "
                "wait for it to finish, or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd, self._depth = fd, 1
        remove_stale_temporaries(self.run_dir)

    def release(self) -> None:
        if not self._depth:
            return
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
