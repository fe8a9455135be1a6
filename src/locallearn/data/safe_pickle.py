"""Read pickle-based data formats without running code from them.

A pickle is a program: every class or function it names is imported and called while it
loads, so a crafted "dataset" file can run anything (``os.system`` is one opcode away).
The formats we read as pickles (CIFAR python batches, Planetoid graph files) only ever hold
plain containers, NumPy arrays and, for Planetoid, SciPy sparse matrices, so each format
gets an allow-list of the (module, name) pairs its files name, and the unpickler refuses
every other one before importing it. Plain containers (dict, list, tuple, bytes, str, int,
float) are opcodes, not names, and need no entry.

    from locallearn.data.safe_pickle import CIFAR_TYPES, safe_load
    batch = safe_load(path, CIFAR_TYPES, encoding="bytes", dataset="cifar10")

A refused name is a ``UsageError`` naming the file and the name; a damaged file is one too.
"""

from __future__ import annotations

import _compat_pickle
import importlib
import io
import pickle
from collections.abc import Collection
from pathlib import Path
from typing import IO, Any

from locallearn.errors import UsageError

Allowed = Collection[tuple[str, str]]

# What NumPy writes for an ndarray: its reconstructor, the class, its dtype, and (protocol 2
# from Python 3) _codecs.encode, which turns the latin-1 text of the raw buffer into bytes.
# Old files name numpy.core, NumPy 2 writes numpy._core: both spellings are listed.
NUMPY_TYPES: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)
# CIFAR-10/100 python batches and CIFAR-100's meta: a dict of bytes keys to an ndarray of
# uint8 pixels, lists of ints (labels), bytes (file names) and a bytes batch label.
CIFAR_TYPES: frozenset[tuple[str, str]] = NUMPY_TYPES
# Planetoid (ind.<name>.x/tx/allx/y/ty/ally/graph): SciPy CSR feature matrices, NumPy label
# arrays, and the graph as a collections.defaultdict(list) of adjacency lists.
PLANETOID_TYPES: frozenset[tuple[str, str]] = NUMPY_TYPES | {
    ("scipy.sparse.csr", "csr_matrix"),
    ("scipy.sparse._csr", "csr_matrix"),
    ("collections", "defaultdict"),
    ("builtins", "list"),
}

# Modules renamed since the files were written; the old spelling is what is allow-listed,
# the new one is what gets imported (the old ones warn or are gone).
_MOVED = {
    "numpy.core.multiarray": "numpy._core.multiarray",
    "scipy.sparse.csr": "scipy.sparse._csr",
}

# A damaged pickle fails in many ways depending on where the damage is; all mean "corrupt".
_CORRUPT = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    ImportError,
    IndexError,
    KeyError,
    OverflowError,
    MemoryError,
    UnicodeDecodeError,
)


class RefusedType(pickle.UnpicklingError):
    """The file names a class or function outside the format's allow-list."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.module, self.name = module, name


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], allowed: Allowed, encoding: str) -> None:
        super().__init__(file, encoding=encoding)
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 pickles name Python 2 modules (__builtin__.list); translate them the way
        # pickle's own fix_imports does, so the allow-list speaks Python 3 only. (The keys
        # are Python 2 names only, so a Python 3 pickle is unaffected.)
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) not in self._allowed:
            raise RefusedType(module, name)
        target = _MOVED.get(module, module)
        try:
            return getattr(importlib.import_module(target), name)
        except (ImportError, AttributeError):
            return getattr(importlib.import_module(module), name)


def safe_load(
    source: str | Path | IO[bytes] | bytes,
    allowed: Allowed,
    *,
    encoding: str = "ASCII",
    dataset: str = "data",
    path: str | Path | None = None,
) -> Any:
    """Unpickle ``source`` (a path, an open binary file or bytes), admitting only the
    (module, name) pairs in ``allowed``.

    ``encoding`` is pickle's (how Python 2 ``str`` objects are decoded: "bytes" for CIFAR,
    "latin1" for NumPy arrays written by Python 2). ``dataset`` and ``path`` only shape the
    messages. Raises ``UsageError`` for a refused name (naming it and the file), for a file
    that cannot be read, and for one that is not a valid pickle.
    """
    if isinstance(source, str | Path):
        path = Path(source)
        try:
            with path.open("rb") as f:
                return safe_load(f, allowed, encoding=encoding, dataset=dataset, path=path)
        except IsADirectoryError:
            raise UsageError(f"{dataset}: {path} is a directory, expected a file") from None
        except OSError as error:  # permission denied, I/O error: say which file, not why Python
            raise UsageError(f"{dataset}: cannot read {path}: {error.strerror}") from None
    where = str(path) if path is not None else getattr(source, "name", "<bytes>")
    file = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        return _RestrictedUnpickler(file, allowed, encoding).load()
    except RefusedType as refused:
        raise UsageError(
            f"{dataset}: {where} refers to {refused.module}.{refused.name}, which a {dataset} "
            "file never holds; refused to load it (a pickle runs the code it names, so this "
            "file is not a genuine one: delete it and get the dataset from its source)"
        ) from None
    except _CORRUPT as error:
        raise UsageError(
            f"{dataset}: {where} is corrupt or not the expected file: cannot read it as a "
            f"pickle ({type(error).__name__}: {error})"
        ) from None
