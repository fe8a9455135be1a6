"""Where dataset files live, and the error that says where we looked.

File-based datasets (MNIST-style idx files, CIFAR-10 batches) are the user's own copies; we
never download. When a file is missing the only useful message names the file and every
directory searched, so the user can move the file or point ``--data-dir`` elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from locallearn.errors import UsageError

DATA_ENV = "LOCALLEARN_DATA"
LOCATION_HINT = f"set the data location with --data-dir or ${DATA_ENV}"


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """The data root: the explicit argument, else $LOCALLEARN_DATA, else ~/.locallearn/data."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_ENV, "")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".locallearn" / "data"


def candidate_dirs(data_dir: Path, subdirs: Sequence[str]) -> list[Path]:
    """The dataset's own folders first, then the root itself (for ``--data-dir path/to/set``)."""
    dirs: list[Path] = []
    for sub in (*subdirs, ""):
        path = data_dir / sub if sub else data_dir
        if path not in dirs:
            dirs.append(path)
    return dirs


def _first_existing(directory: Path, names: Sequence[str]) -> Path | None:
    for name in names:
        path = directory / name
        if path.is_file():
            return path
    return None


def locate_files(
    dataset: str,
    data_dir: Path,
    subdirs: Sequence[str],
    files: Sequence[str],
    suffixes: Sequence[str] = ("",),
) -> dict[str, Path]:
    """Map each of ``files`` to its path, all taken from one directory.

    The first candidate directory holding any of the files is the dataset's directory and
    must hold all of them. Filling gaps from a later directory is refused on purpose: MNIST,
    Fashion-MNIST and KMNIST share file names, so mixing folders would silently mix datasets.
    """
    dirs = candidate_dirs(data_dir, subdirs)
    looked = "; ".join(str(d) for d in dirs)
    for directory in dirs:
        if directory.is_dir() and not os.access(directory, os.R_OK | os.X_OK):
            # Unreadable, its files would look absent; say what is wrong instead.
            raise UsageError(
                f"{dataset}: cannot read {directory}: permission denied; make it readable "
                f"(chmod) or {LOCATION_HINT}"
            )
        found = {f: _first_existing(directory, [f + s for s in suffixes]) for f in files}
        if not any(found.values()):
            continue
        missing = [f for f, path in found.items() if path is None]
        if missing:
            raise UsageError(
                f"{dataset}: {_alternatives(missing[0], suffixes)} is missing from {directory} "
                f"(which holds the other {dataset} files); looked in: {looked}; {LOCATION_HINT}"
            )
        return {f: path for f, path in found.items() if path is not None}
    wanted = ", ".join(_alternatives(f, suffixes) for f in files)
    raise UsageError(
        f"{dataset}: cannot find its files ({wanted}); looked in: {looked}; {LOCATION_HINT}"
    )


def _alternatives(name: str, suffixes: Sequence[str]) -> str:
    return " or ".join(name + s for s in suffixes)


def corrupt_file(dataset: str, path: Path, why: str) -> UsageError:
    """The error for a file that exists but cannot be what it claims to be."""
    return UsageError(f"{dataset}: {path} is corrupt or not the expected file: {why}")
