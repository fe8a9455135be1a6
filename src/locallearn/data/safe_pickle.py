"""A restricted unpickler: a pickle may build only the types its format is known to hold.

A pickle names the callables that rebuild its objects (``GLOBAL module name``) and the
stock unpickler imports and calls whatever it names, so a hostile file can run any code
(``os.system``). ``safe_load`` resolves a name only if it is on the caller's allow-list of
(module, name) pairs and refuses anything else before it is imported, with a UsageError
naming the file and the refused type. Each reader passes the short list of its format
(Planetoid: numpy arrays, scipy CSR matrices, a defaultdict of lists).

Python 2 pickles name builtins ``__builtin__``; the stock unpickler maps such names to
their Python 3 homes, and the allow-list is checked on the names as written in the file.
"""

from __future__ import annotations

import pickle
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import IO, Any

from locallearn.errors import UsageError

# The exceptions a damaged (not hostile) pickle raises, depending on where the damage is.
UNPICKLE_ERRORS = (
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
)


# (module, name) pairs as the file spells them; a mapping also gives the object each one
# resolves to, for names a library has since moved (numpy.core -> numpy._core).
Allowed = Collection[tuple[str, str]] | Mapping[tuple[str, str], Any]


class RefusedType(pickle.UnpicklingError):
    """The pickle names a type outside the allow-list."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], allowed: Allowed, **kw: Any) -> None:
        super().__init__(file, **kw)
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._allowed:
            raise RefusedType(f"{module}.{name}")
        if isinstance(self._allowed, Mapping):
            return self._allowed[(module, name)]
        return super().find_class(module, name)


def safe_load(
    path: str | Path,
    allowed: Allowed,
    encoding: str = "latin1",
    label: str = "",
) -> Any:
    """Unpickle ``path``, admitting only the (module, name) pairs in ``allowed``.

    A refused type or an unreadable file is a UsageError that names the file (prefixed by
    ``label``, the dataset); nothing the file names outside the list is imported or called.
    ``encoding`` decodes Python 2 ``str`` objects (latin1 keeps numpy buffers byte-exact).
    """
    path = Path(path)
    prefix = f"{label}: " if label else ""
    try:
        with path.open("rb") as f:
            return _RestrictedUnpickler(f, allowed, encoding=encoding).load()
    except RefusedType as refused:
        raise UsageError(
            f"{prefix}{path} asks to load {refused}, which this format never holds; refusing "
            f"to unpickle it (allowed: {', '.join(sorted(f'{m}.{n}' for m, n in allowed))})"
        ) from None
    except OSError as error:
        raise UsageError(f"{prefix}cannot read {path}: {error}") from None
    except UNPICKLE_ERRORS as error:
        raise UsageError(
            f"{prefix}{path} is corrupt or not the expected file: cannot read it as a pickle "
            f"({type(error).__name__}: {error})"
        ) from None
