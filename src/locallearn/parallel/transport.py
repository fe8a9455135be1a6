"""Messages between neighbouring workers: (detached activation, targets, ...) forward only.

A message is a short list of tensors packed into one byte buffer: a fixed header (dtype,
shape, offset of each tensor) and the tensors' bytes, each at a 64-byte aligned offset, so
the receiver's tensors are views of the buffer (no copy out). Two transports:

* ``ShmSender``/``ShmReceiver`` (same host, CPU): a ring of ``slots`` buffers in a shared
  memory file (``/dev/shm``) that both processes map, and a FIFO that carries one byte per
  message. The sender copies the message into the next free slot and writes the byte; the
  receiver blocks in ``select`` on the FIFO, then reads the slot in place. Only the kernel
  sees the FIFO; the network stack never does. A slot is free again once the receiver has
  finished with its message: it counts the messages it is done with in the mapped file and
  the sender reads that counter before it reuses a slot (flow control; no message goes
  backwards). A dead sender closes the FIFO, which the receiver sees at once as end of file.
* ``DistSender``/``DistReceiver`` (any host, gloo or NCCL): ``isend``/``irecv`` of
  fixed-size buffers; the receiver keeps ``slots`` receives posted ahead (prefetch), the
  sender keeps at most ``slots`` sends in flight. Fixed size: the first message's size,
  sent once, so the receiver can post buffers before the messages exist.

Both count what they cost: ``seconds`` blocked (sender: waiting for a free slot; receiver:
waiting for input) and ``bytes`` sent.
"""

from __future__ import annotations

import errno
import os
import select
import time
from collections import deque
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

HEADER_BYTES = 512
MAX_TENSORS = 6
MAX_DIMS = 6
ALIGN = 64
CONTROL_BYTES = 128  # ring file: [capacity, slots, ...] then the consumed counter at byte 64
DTYPES = (
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
)
POLL_SECONDS = 0.5  # how often a blocked side checks that its peer is still alive


class PeerLost(RuntimeError):
    """The neighbouring worker died or fell silent: the job cannot go on."""


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def message_bytes(tensors: Sequence[torch.Tensor]) -> int:
    """Size of the packed message (header included)."""
    return HEADER_BYTES + sum(_align(t.numel() * t.element_size()) for t in tensors)


def pack(buffer: torch.Tensor, tensors: Sequence[torch.Tensor]) -> int:
    """Write ``tensors`` into the uint8 ``buffer``; returns the bytes used."""
    if len(tensors) > MAX_TENSORS:
        raise ValueError(f"a message holds at most {MAX_TENSORS} tensors, got {len(tensors)}")
    header, offset = [len(tensors)], HEADER_BYTES
    for t in tensors:
        if t.dim() > MAX_DIMS:
            raise ValueError(f"a message tensor has at most {MAX_DIMS} dims, got {t.dim()}")
        nbytes = t.numel() * t.element_size()
        shape = list(t.shape) + [0] * (MAX_DIMS - t.dim())
        header += [DTYPES.index(t.dtype), t.dim(), *shape, offset, nbytes]
        offset += _align(nbytes)
    if offset > buffer.numel():
        raise RuntimeError(
            f"a message of {offset} bytes does not fit the {buffer.numel()}-byte slot sized "
            "by the first message (messages must not grow during a run)"
        )
    head = torch.tensor(header, dtype=torch.int64)
    buffer[: head.numel() * 8].copy_(head.view(torch.uint8), non_blocking=True)
    for t, start in zip(tensors, header[1 + 2 + MAX_DIMS :: 4 + MAX_DIMS]):
        flat = t.detach().contiguous().reshape(-1).view(torch.uint8)
        buffer[start : start + flat.numel()].copy_(flat)
    return offset


def unpack(buffer: torch.Tensor) -> list[torch.Tensor]:
    """The tensors of a packed message, as views of ``buffer``."""
    head = buffer[:HEADER_BYTES].cpu().view(torch.int64).tolist()
    out, pos = [], 1
    for _ in range(head[0]):
        code, ndim = head[pos], head[pos + 1]
        shape = head[pos + 2 : pos + 2 + ndim]
        start, nbytes = head[pos + 2 + MAX_DIMS], head[pos + 3 + MAX_DIMS]
        out.append(buffer[start : start + nbytes].view(DTYPES[code]).view(shape))
        pos += 4 + MAX_DIMS
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Counters:
    def __init__(self) -> None:
        self.seconds = 0.0
        self.bytes = 0
        self.messages = 0


# -- same host: shared memory ring + FIFO --------------------------------------------------
class ShmReceiver(Counters):
    def __init__(self, fifo: Path, ring: Path, peer: str, peer_pid: int, timeout: float) -> None:
        super().__init__()
        self.ring_path, self.peer, self.peer_pid, self.timeout = ring, peer, peer_pid, timeout
        self.fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        self.ring: torch.Tensor | None = None
        self.control: torch.Tensor | None = None
        self.capacity = self.slots = 0
        self.received = self.done = 0

    def _wait_byte(self) -> None:
        waited = 0.0
        while True:
            ready, _, _ = select.select([self.fd], [], [], POLL_SECONDS)
            if ready:
                try:
                    byte = os.read(self.fd, 1)
                except BlockingIOError:
                    continue
                if byte:
                    return
                raise PeerLost(f"{self.peer} closed its channel (it died or stopped)")
            waited += POLL_SECONDS
            if not _alive(self.peer_pid):
                raise PeerLost(f"{self.peer} (pid {self.peer_pid}) died")
            if waited >= self.timeout:
                raise PeerLost(f"{self.peer} sent nothing for {waited:.0f} s (--worker-timeout)")

    def recv(self) -> list[torch.Tensor]:
        start = time.perf_counter()
        self._wait_byte()
        self.seconds += time.perf_counter() - start
        if self.ring is None:
            with open(self.ring_path, "rb") as f:
                capacity, slots = torch.frombuffer(bytearray(f.read(16)), dtype=torch.int64)
            self.capacity, self.slots = int(capacity), int(slots)
            size = CONTROL_BYTES + self.capacity * self.slots
            self.ring = torch.from_file(
                str(self.ring_path), shared=True, size=size, dtype=torch.uint8
            )
            os.unlink(self.ring_path)  # the mapping lives on; nothing is left behind
            self.control = self.ring[:CONTROL_BYTES].view(torch.int64)
        slot = self.received % self.slots
        self.received += 1
        begin = CONTROL_BYTES + slot * self.capacity
        return unpack(self.ring[begin : begin + self.capacity])

    def release(self) -> None:
        """The last message's tensors are no longer used: its slot may be overwritten."""
        assert self.control is not None
        self.done += 1
        self.control[8] = self.done

    def close(self) -> None:
        os.close(self.fd)


class ShmSender(Counters):
    def __init__(
        self, fifo: Path, ring: Path, peer: str, peer_pid: int, slots: int, timeout: float
    ) -> None:
        super().__init__()
        self.ring_path, self.peer, self.peer_pid = ring, peer, peer_pid
        self.slots, self.timeout = slots, timeout
        self.fd = os.open(fifo, os.O_WRONLY)
        self.ring: torch.Tensor | None = None
        self.control: torch.Tensor | None = None
        self.capacity = 0
        self.sent = 0

    def _create(self, nbytes: int) -> None:
        self.capacity = -(-nbytes // 4096) * 4096
        size = CONTROL_BYTES + self.capacity * self.slots
        tmp = self.ring_path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(torch.tensor([self.capacity, self.slots], dtype=torch.int64).numpy().tobytes())
            f.truncate(size)
        self.ring = torch.from_file(str(tmp), shared=True, size=size, dtype=torch.uint8)
        self.control = self.ring[:CONTROL_BYTES].view(torch.int64)
        os.replace(tmp, self.ring_path)  # the receiver never sees a half-made file

    def _wait_taken(self, limit: int) -> None:
        """Wait until at most ``limit`` sent messages are still in the receiver's hands."""
        assert self.control is not None
        waited, pause = 0.0, 1e-4
        while self.sent - int(self.control[8]) > limit:
            time.sleep(pause)
            waited += pause
            pause = min(pause * 2, 2e-3)
            if waited >= POLL_SECONDS and not _alive(self.peer_pid):
                raise PeerLost(f"{self.peer} (pid {self.peer_pid}) died")
            if waited >= self.timeout:
                raise PeerLost(f"{self.peer} took nothing for {waited:.0f} s (--worker-timeout)")

    def send(self, tensors: Sequence[torch.Tensor]) -> None:
        if self.ring is None:
            self._create(message_bytes(tensors))
        assert self.ring is not None
        start = time.perf_counter()
        self._wait_taken(self.slots - 1)
        self.seconds += time.perf_counter() - start
        slot = self.sent % self.slots
        begin = CONTROL_BYTES + slot * self.capacity
        self.bytes += pack(self.ring[begin : begin + self.capacity], tensors)
        self.sent += 1
        self.messages += 1
        try:
            os.write(self.fd, b"m")
        except BrokenPipeError:
            raise PeerLost(f"{self.peer} closed its channel (it died or stopped)")

    def flush(self) -> None:
        """Wait until the receiver is done with every message (the end of an epoch)."""
        if self.ring is None:
            return
        self._wait_taken(0)  # the pipeline's drain: not counted as blocked sending

    def close(self) -> None:
        os.close(self.fd)


# -- any host: torch.distributed point to point --------------------------------------------
class DistSender(Counters):
    def __init__(self, dst: int, device: torch.device, slots: int, timeout: float) -> None:
        super().__init__()
        self.dst, self.device, self.slots = dst, device, slots
        self.timeout = timedelta(seconds=timeout)
        self.capacity = 0
        self.inflight: deque[tuple[dist.Work, torch.Tensor]] = deque()

    def send(self, tensors: Sequence[torch.Tensor]) -> None:
        if not self.capacity:
            self.capacity = message_bytes(tensors)
            size = torch.tensor([self.capacity], dtype=torch.int64, device=self.device)
            dist.send(size, self.dst)
        start = time.perf_counter()
        while len(self.inflight) >= self.slots:
            self.inflight.popleft()[0].wait(self.timeout)
        self.seconds += time.perf_counter() - start
        buffer = torch.empty(self.capacity, dtype=torch.uint8, device=self.device)
        self.bytes += pack(buffer, tensors)
        self.messages += 1
        self.inflight.append((dist.isend(buffer, self.dst), buffer))

    def flush(self) -> None:
        while self.inflight:  # the pipeline's drain: not counted as blocked sending
            self.inflight.popleft()[0].wait(self.timeout)

    def close(self) -> None:
        self.inflight.clear()


class DistReceiver(Counters):
    def __init__(self, src: int, device: torch.device, slots: int, timeout: float) -> None:
        super().__init__()
        self.src, self.device, self.slots = src, device, slots
        self.timeout = timedelta(seconds=timeout)
        self.capacity = 0
        self.remaining = 0  # messages still to come that no receive is posted for
        self.posted: deque[tuple[dist.Work, torch.Tensor]] = deque()

    def expect(self, messages: int) -> None:
        """The number of messages still to come in this run: receives are posted ahead, but
        never for a message that will not be sent."""
        self.remaining = messages - len(self.posted)

    def _post(self) -> None:
        while self.remaining > 0 and len(self.posted) < self.slots:
            buffer = torch.empty(self.capacity, dtype=torch.uint8, device=self.device)
            self.posted.append((dist.irecv(buffer, self.src), buffer))
            self.remaining -= 1

    def recv(self) -> list[torch.Tensor]:
        start = time.perf_counter()
        if not self.capacity:
            size = torch.zeros(1, dtype=torch.int64, device=self.device)
            dist.irecv(size, self.src).wait(self.timeout)
            self.capacity = int(size.item())
        self._post()
        if not self.posted:
            raise RuntimeError("received more messages than were announced")
        work, buffer = self.posted.popleft()
        work.wait(self.timeout)
        self.seconds += time.perf_counter() - start
        self._post()  # the next receives are in flight while this message is used
        return unpack(buffer)

    def release(self) -> None:
        pass

    def close(self) -> None:
        self.posted.clear()


def shm_dir() -> Path:
    shm = Path("/dev/shm")
    return (
        shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(os.environ.get("TMPDIR", "/tmp"))
    )


def make_fifo(path: Path) -> None:
    try:
        os.mkfifo(path, 0o600)
    except OSError as err:
        if err.errno != errno.EEXIST:
            raise
