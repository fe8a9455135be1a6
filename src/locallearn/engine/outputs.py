"""Output paths checked before training: an hour of work must not end in "cannot write".

Each check looks at what is there now (a file where a folder is wanted, a device file, a
read-only or unwritable folder) and names the flag, the path and the fix. Nothing is
created: a run that later stops on another user error leaves no empty folder behind.
"""

from __future__ import annotations

import os
from pathlib import Path

from locallearn.engine.lock import LOCK_NAME, is_running
from locallearn.errors import UsageError

# matplotlib's savefig formats (Agg, PDF, PS, SVG, PGF backends); checked without importing
# matplotlib, which takes a second.
PLOT_FORMATS = (
    "eps", "jpeg", "jpg", "pdf", "pgf", "png", "ps", "raw", "rgba", "svg", "svgz", "tif",
    "tiff", "webp",
)  # fmt: skip


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _unwritable(directory: Path) -> str | None:
    """Why files cannot be created in ``directory`` (an existing path), or None."""
    if not directory.is_dir():
        return f"{directory} is a file, not a folder"
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return f"{directory} is on a read-only filesystem"
    except OSError:
        pass
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"{directory} is not writable (permission denied)"
    return None


def check_out_dir(path: str | Path, flag: str = "--out") -> Path:
    """``path`` can be (or already is) a run directory this process may write."""
    if str(path).strip() == "":
        raise UsageError(f"{flag} is empty; give a folder name, or leave {flag} out for runs/...")
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{flag} {path} is a file, not a folder; choose another {flag}")
        why = _unwritable(path)
        if why is None and is_running(path):
            lock = path / LOCK_NAME
            pid = lock.read_text().strip() if lock.is_file() else "?"
            why = f"{path} is in use by another locallearn run (pid {pid})"
    else:
        why = _unwritable(_existing_ancestor(path))
    if why is not None:
        raise UsageError(f"{flag} {path}: {why}; choose another {flag}")
    return path


def check_out_file(path: str | Path, flag: str) -> None:
    """A file ``flag`` will write later (atomically: a temporary file in its folder, renamed);
    ``-`` (standard output) is always fine."""
    if str(path) == "-":
        return
    if str(path).strip() == "":
        raise UsageError(f"{flag} is empty; give a file name (or - for standard output)")
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder; give a file name inside it")
    if path.exists() and not path.is_file():
        # Renaming over a device file (/dev/null) would replace it, not write to it.
        raise UsageError(f"{flag} {path} is not a regular file; give a file name")
    why = _unwritable(_existing_ancestor(path.parent))
    if why is not None:
        raise UsageError(f"{flag} {path}: {why}; choose another path")


def check_plot_file(path: str | Path, flag: str = "--plot") -> None:
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in PLOT_FORMATS:
        raise UsageError(
            f"{flag} {path}: unknown figure format {suffix or '(no extension)'!r}; end the "
            f"name with one of .{', .'.join(PLOT_FORMATS)} (e.g. .png)"
        )
    check_out_file(path, flag)
