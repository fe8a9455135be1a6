"""A small on-disk cache of generated arrays, so generated datasets cost time only once.

Files are written to a temporary name and renamed into place, so a crash or a concurrent run
never leaves a half-written cache that a later run would trust; a file that does not read back
cleanly is treated as absent and regenerated.
"""

from __future__ import annotations

import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

CACHE_ENV = "LOCALLEARN_CACHE"

Arrays = dict[str, np.ndarray]


def cache_dir() -> Path:
    """$LOCALLEARN_CACHE, else ~/.cache/locallearn (created on first write, not here)."""
    env = os.environ.get(CACHE_ENV, "")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "locallearn"


def cached_arrays(name: str, keys: Sequence[str], make: Callable[[], Arrays]) -> Arrays:
    """Return the arrays cached as ``<cache_dir>/<name>.npz``, calling ``make`` on a miss.

    ``name`` should carry every input that changes the result (a version, the arguments), so a
    stale file is never read for a different request.
    """
    path = cache_dir() / f"{name}.npz"
    arrays = _read(path, keys)
    if arrays is None:
        arrays = make()
        _write(path, arrays)
    return arrays


def _read(path: Path, keys: Sequence[str]) -> Arrays | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            # Reading every array forces the zip CRC checks, catching truncated files.
            arrays = {key: np.array(npz[key]) for key in keys}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    return arrays if _consistent(arrays) else None


def _consistent(arrays: Arrays) -> bool:
    """Each ``x<suffix>`` has as many rows as its ``y<suffix>``."""
    for key, x in arrays.items():
        if key.startswith("x"):
            y = arrays.get("y" + key[1:])
            if y is not None and len(x) != len(y):
                return False
    return True


def _write(path: Path, arrays: Arrays) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp")
    except OSError as error:
        # A read-only home must not stop a run; it only loses the speed-up.
        warnings.warn(f"cannot write cache {path}: {error}", stacklevel=3)
        return
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        Path(tmp).chmod(0o644)  # mkstemp makes 0600; a shared cache dir should stay readable
        Path(tmp).replace(path)  # atomic on POSIX and Windows: readers never see a partial file
    except OSError as error:
        warnings.warn(f"cannot write cache {path}: {error}", stacklevel=3)
        Path(tmp).unlink(missing_ok=True)
