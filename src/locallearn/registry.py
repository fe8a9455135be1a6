"""One registry pattern for rules, models and datasets.

An entry is a name, a builder, a one-line description, the options it accepts and free
metadata (shape and classes for a dataset, the paper for a rule). Registering a name twice is
an error; asking for an unknown name raises a UsageError that lists close matches and all
valid names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from locallearn.errors import UsageError, unknown_choice

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    build: Callable[..., T]
    description: str
    options: frozenset[str] = frozenset()
    aliases: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def flags(self) -> str:
        """The options as command-line flags, for listings and messages."""
        # Option names are RunConfig fields (ema_momentum); their flags use dashes.
        return ", ".join(f"--{o.replace('_', '-')}" for o in sorted(self.options)) or "no options"

    def given(self, options: dict[str, Any], kind: str) -> dict[str, Any]:
        """The options the caller set (not None). One this entry does not take is an error,
        never silently ignored."""
        given = {k: v for k, v in options.items() if v is not None}
        for key in given:
            if key not in self.options:
                raise UsageError(
                    f"--{key.replace('_', '-')} does not apply to {kind} {self.name!r} "
                    f"(it takes {self.flags})"
                )
        return given


class Registry(Generic[T]):
    """Name -> Entry, for one kind of thing ("rule", "model", "dataset")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._aliases: dict[str, str] = {}

    def register(
        self,
        name: str,
        *,
        description: str,
        options: Iterable[str] = (),
        aliases: Iterable[str] = (),
        **meta: Any,
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: register ``build`` under ``name`` (and ``aliases``)."""

        def decorate(build: Callable[..., T]) -> Callable[..., T]:
            for key in (name, *aliases):
                if key in self._entries or key in self._aliases:
                    raise ValueError(f"{self.kind} {key!r} is registered twice")
            entry = Entry(name, build, description, frozenset(options), tuple(aliases), dict(meta))
            self._entries[name] = entry
            for alias in aliases:
                self._aliases[alias] = name
            return build

        return decorate

    def get(self, name: str) -> Entry[T]:
        key = self._aliases.get(name, name)
        if key not in self._entries:
            raise unknown_choice(
                self.kind, name, self._entries, f"`locallearn list {self.kind}s` shows all"
            )
        return self._entries[key]

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._aliases

    def canonical(self, name: str) -> str:
        return self.get(name).name

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        return [self._entries[n] for n in self.names()]


__all__ = ["Entry", "Registry", "UsageError"]
