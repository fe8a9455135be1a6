"""Errors that the command line turns into a one-line message and exit status 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UsageError(Exception):
    """A mistake in what the user asked for (a bad name, value or file), not a bug.

    The CLI prints the message without a traceback and exits with status 2, so the message
    must say what was given, what is allowed and, where it helps, how to fix it.
    """


def unknown_choice(kind: str, value: object, choices: Iterable[str], hint: str = "") -> UsageError:
    """Build the error for a value outside a closed set, naming close matches first."""
    choices = sorted(choices)
    close = difflib.get_close_matches(str(value), choices, n=3, cutoff=0.5)
    message = f"unknown {kind} {value!r}"
    if close:
        message += f" (did you mean {', '.join(repr(c) for c in close)}?)"
    message += f"; valid choices: {', '.join(choices)}"
    if hint:
        message += f". {hint}"
    return UsageError(message)


class Diverged(Exception):
    """Training produced a non-finite (or exploded) loss or parameter.

    Not a usage error and not a bug: the hyperparameters made this run blow up. The CLI
    prints the message and exits with status 3; the run directory keeps the last good
    checkpoint and records the epoch as diverged in metrics.jsonl.
    """

    def __init__(self, message: str, *, epoch: int, block: int, lr: float) -> None:
        super().__init__(message)
        self.epoch, self.block, self.lr = epoch, block, lr
