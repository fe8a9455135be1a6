"""Parameter counts and a reproducibility digest of weights."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch
from torch import nn


def count_params(params: Iterable[torch.Tensor]) -> int:
    """Number of scalars, counting a tensor shared between modules once."""
    seen: dict[int, int] = {}
    for p in params:
        seen[id(p)] = p.numel()
    return sum(seen.values())


def weights_sha256(module: nn.Module) -> str:
    """SHA-256 over every entry of the state dict (name, dtype, shape and raw bytes), in order.

    Two runs that end with bit-identical weights give the same digest on any machine.
    """
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()
