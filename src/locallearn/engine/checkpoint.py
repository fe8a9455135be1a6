"""Reading a checkpoint as data, with one-line messages for every way it can be wrong.

``torch.load(..., weights_only=True)`` already refuses code; this module turns its errors
(and those of a file that loads but is not ours) into messages that say what the file is
and what to do, and never suggest turning the safety off.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from locallearn.errors import UsageError

# Keys and types of a locallearn checkpoint (engine.run.Run._save_checkpoint).
REQUIRED = {"network": dict, "rule": dict, "optimizers": list, "rng": dict, "state": dict}
# Config fields recorded in the checkpoint: if config.toml disagrees, the files are from
# different runs (two writers, or a copied file).
IDENTITY = ("rule", "model", "data", "seed")


def _bad(path: Path, why: str) -> UsageError:
    return UsageError(
        f"checkpoint {path} {why}; it cannot be resumed or probed (train again with "
        "another --out, or restore the file from a backup)"
    )


def read_checkpoint(path: Path, map_location: torch.device | str, version: int) -> dict[str, Any]:
    """The checkpoint at ``path``, checked to be a locallearn checkpoint of ``version``."""
    if path.is_dir():
        raise _bad(path, "is a directory, not a file")
    try:
        size = path.stat().st_size
    except OSError as error:
        raise _bad(path, f"cannot be read ({error.strerror})") from None
    if size == 0:
        raise _bad(path, "is empty (0 bytes)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error):
            # weights_only refused a class or function: the file holds code, not data.
            raise _bad(path, "holds objects that a locallearn checkpoint never contains") from None
        raise _bad(path, "is not a readable checkpoint (not a torch file)") from None
    except OSError as error:
        raise _bad(path, f"cannot be read ({error.strerror or error})") from None
    except Exception as error:  # truncated zip, foreign format: torch raises many kinds
        raise _bad(path, f"is not a readable checkpoint ({_first_sentence(error)})") from None
    if not isinstance(ckpt, dict):
        raise _bad(path, f"holds a {type(ckpt).__name__}, not a locallearn checkpoint")
    if ckpt.get("version") != version:
        raise _bad(path, f"has version {ckpt.get('version')!r}, expected {version}")
    for key, kind in REQUIRED.items():
        if key not in ckpt:
            raise _bad(path, f"has no {key!r} entry")
        if not isinstance(ckpt[key], kind):
            raise _bad(
                path, f"has a {type(ckpt[key]).__name__} as {key!r}, expected {kind.__name__}"
            )
    if not isinstance(ckpt["rng"].get("torch"), torch.Tensor):
        raise _bad(path, "has no torch RNG state")
    return ckpt


def _first_sentence(error: BaseException) -> str:
    text = " ".join(str(error).split())
    first = text.split(". ")[0].rstrip(".")
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def identity(cfg: Any) -> dict[str, Any]:
    return {key: getattr(cfg, key) for key in IDENTITY}


def check_belongs(ckpt: dict[str, Any], cfg: Any, path: Path) -> None:
    """Refuse a checkpoint whose recorded identity differs from config.toml's."""
    recorded = ckpt.get("identity")
    if not isinstance(recorded, dict):
        return  # older checkpoints carry none; the weights' shapes are still checked on load
    for key in IDENTITY:
        if key in recorded and recorded[key] != getattr(cfg, key):
            raise mismatch(
                path,
                f"the checkpoint is of {key} {recorded[key]!r}, config.toml says "
                f"{getattr(cfg, key)!r}",
            )


def mismatch(path: Path, why: str) -> UsageError:
    return UsageError(
        f"{path.parent / 'config.toml'} and {path.name} come from different runs ({why}); "
        "the directory was written by two runs: train again with another --out"
    )
