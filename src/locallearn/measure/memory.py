"""Exact activation-memory accounting: ``act_bytes_peak``.

Every tensor that autograd saves for backward passes through
``torch.autograd.graph.saved_tensors_hooks``. The meter wraps each one in a small handle
whose lifetime is the saved tensor's lifetime inside the graph: when autograd frees the saved
variable (after the node has run in backward, or when the graph is dropped), the handle dies
and its bytes are released. Bytes are counted per *storage*, once, however many views of it
are saved, and storages of parameters and buffers are excluded: they are weights, not
activations. The result is device independent and exact, which is why rules are compared on
it rather than on allocator or RSS figures.

Storage bytes are the storage's full size, so a saved view of a big tensor counts the big
tensor. The engine therefore feeds each step a freshly gathered batch, never a view into the
whole dataset.
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Iterable
from types import TracebackType

import torch

StorageKey = tuple[str, int, int]


def _storage_key(t: torch.Tensor) -> StorageKey:
    storage = t.untyped_storage()
    return (t.device.type, -1 if t.device.index is None else t.device.index, storage.data_ptr())


class _Held:
    """A saved tensor as autograd holds it while the meter is on."""

    __slots__ = ("tensor", "meter", "key")

    def __init__(self, tensor: torch.Tensor, meter: SavedTensorMeter, key: StorageKey) -> None:
        self.tensor = tensor
        self.meter = meter
        self.key = key

    def __del__(self) -> None:
        self.meter._release(self.key)


class SavedTensorMeter:
    """Context manager that tracks live bytes saved for backward and their peak.

    Use one meter across any number of steps: ``peak`` is the maximum over everything that
    ran inside it, ``current`` what is still held (0 once every graph is freed).

        meter = SavedTensorMeter(exclude=model.parameters())
        with meter:
            loss = model(x).sum(); loss.backward()
        meter.peak   # bytes
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self._excluded = {_storage_key(t) for t in exclude}
        self._live: dict[StorageKey, list[int]] = {}  # key -> [handles alive, storage bytes]
        self.current = 0
        self.peak = 0
        self.segments: list[int] = []  # peak of each span closed by mark()
        self._segment_peak = 0
        self._hooks: torch.autograd.graph.saved_tensors_hooks | None = None

    def mark(self) -> None:
        """Close a span: record its peak in ``segments`` and start the next one. The loop
        marks after each block, so ``segments[k]`` is what block k held at its peak."""
        self.segments.append(self._segment_peak)
        self._segment_peak = self.current

    def _pack(self, tensor: torch.Tensor) -> object:
        if tensor.layout != torch.strided or tensor.device.type == "meta":
            return tensor
        key = _storage_key(tensor)
        if key in self._excluded:
            return tensor
        entry = self._live.get(key)
        if entry is None:
            nbytes = tensor.untyped_storage().nbytes()
            self._live[key] = [1, nbytes]
            self.current += nbytes
            self.peak = max(self.peak, self.current)
            self._segment_peak = max(self._segment_peak, self.current)
        else:
            entry[0] += 1
        # Hold a detached alias (same storage): holding the tensor itself would make a saved
        # *output* reference its own grad_fn, a cycle that keeps a dropped graph alive until
        # the garbage collector runs. Backward formulas need the values, not the history.
        return _Held(tensor.detach(), self, key)

    @staticmethod
    def _unpack(packed: object) -> torch.Tensor:
        return packed.tensor if isinstance(packed, _Held) else packed  # type: ignore[return-value]

    def _release(self, key: StorageKey) -> None:
        entry = self._live.get(key)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] == 0:
            self.current -= entry[1]
            del self._live[key]

    def __enter__(self) -> SavedTensorMeter:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._hooks is not None
        self._hooks.__exit__(exc_type, exc, tb)
        self._hooks = None


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _status_kib(field: str) -> int | None:
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class RSSWindow:
    """The resident memory a stretch of work added: its peak minus the RSS when it began.

    On Linux the kernel's high-water mark is reset at the start (``/proc/self/clear_refs``,
    value 5), so a peak set earlier (reading the dataset) does not hide the work's own; where
    that is not available the process's peak so far is used, and ``exact`` is False.
    """

    def __init__(self) -> None:
        self.exact = False
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.exact = _status_kib("VmHWM") is not None
        except OSError:
            pass
        rss = _status_kib("VmRSS")
        self.base = rss * 1024 if rss is not None and self.exact else peak_rss_bytes()

    def added(self) -> int:
        """Bytes the peak rose above the starting RSS (0 if it never did)."""
        hwm = _status_kib("VmHWM") if self.exact else None
        peak = hwm * 1024 if hwm is not None else peak_rss_bytes()
        return max(0, peak - self.base)
