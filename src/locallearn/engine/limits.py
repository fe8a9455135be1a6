"""Memory limits: a model too large for this machine is a usage error, not a crash.

``--width 2000000000`` would ask for tens of gigabytes of weights. Allocating them either
fails deep inside torch or, with memory overcommit, "succeeds" and then gets the process
killed while the weights are initialised. So the model is first built on the meta device
(shapes only, no memory) and its parameter bytes compared with the memory available.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from locallearn.errors import UsageError

# Weights, their gradients and Adam's two moments: four copies of every parameter.
COPIES = 4


def format_size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if n < 1024 or unit == "EiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n} EiB"  # pragma: no cover


def available_bytes(device: torch.device) -> int | None:
    """Memory this process could still get on ``device`` (None: unknown)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _meta_network(name: str, input_shape: tuple[int, ...], classes: int, **opts: Any) -> Any:
    from locallearn.models import build_model

    with torch.device("meta"):
        return build_model(name, input_shape, classes, **opts)


def check_rule_builds(cfg: Any, data: Any) -> None:
    """Raise the UsageError that building ``cfg``'s model and rule would raise, on the meta
    device (nothing allocated, nothing trained): ``compare`` checks every rule up front."""
    import warnings

    from locallearn.rules import build_rule

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the real build warns again
            network = _meta_network(
                cfg.model, data.input_shape, data.classes, **cfg.model_options()
            )
            with torch.device("meta"):
                build_rule(
                    cfg.rule,
                    network,
                    data.input_shape,
                    data.classes,
                    input_stats=(data.mean, data.std),
                    **cfg.rule_options(),
                )
    except UsageError:
        raise
    except Exception:
        return  # not buildable on meta: the real build reports its own errors


def model_bytes_on_meta(
    name: str, input_shape: tuple[int, ...], classes: int, **opts: Any
) -> int | None:
    """Parameter bytes of model ``name``, built without memory; None if it cannot be built
    on the meta device (then the real build reports its own errors)."""
    try:
        network = _meta_network(name, input_shape, classes, **opts)
    except UsageError:
        raise
    except (RuntimeError, TypeError, OverflowError) as error:
        if "overflow" in str(error).lower():  # one tensor alone has more than 2**63 bytes
            return 2**63
        return None
    except Exception:
        return None
    return sum(p.numel() * p.element_size() for p in network.parameters())


def check_model_fits(cfg: Any, data: Any, device: torch.device) -> None:
    """Refuse a model (of RunConfig ``cfg``, for Dataset ``data``) whose weights, gradients
    and optimizer state would not fit in the memory ``device`` has left."""
    name, options = cfg.model, cfg.model_options()
    weights = model_bytes_on_meta(name, data.input_shape, data.classes, **options)
    available = available_bytes(device)
    if weights is None or available is None or weights * COPIES <= available:
        return
    given = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in options.items() if v is not None)
    raise UsageError(
        f"model {name}{' with ' + given if given else ''} has {format_size(weights)} of "
        f"weights ({format_size(weights * COPIES)} with gradients and optimizer state), more "
        f"than the {format_size(available)} available on {device}; choose a smaller --width "
        "or --depth"
    )


_ALLOCATE = re.compile(r"(?:tried to allocate|allocate) ([\d.,]+) ?(bytes|[KMGT]i?B)", re.I)


def allocation_error(error: BaseException) -> UsageError | None:
    """The usage error for a failed allocation (CPU or CUDA), naming its size; None when
    ``error`` is something else."""
    text = str(error)
    if not (
        isinstance(error, torch.OutOfMemoryError | MemoryError)
        or "can't allocate memory" in text
        or "not enough memory" in text
    ):
        return None
    match = _ALLOCATE.search(text)
    size = ""
    if match:
        number, unit = match.groups()
        size = (
            f" of {format_size(float(number.replace(',', '')))}"
            if unit.lower() == "bytes"
            else f" of {number} {unit}"
        )
    return UsageError(
        f"out of memory: an allocation{size} failed while building or training the model; "
        "choose a smaller --width, --depth or --batch-size"
    )
