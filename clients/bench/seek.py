"""The `seek` section: the Seekable Sockets microbenchmark (Douglas and Pai), over loopback TCP.

Strategy
--------
The paper's test: a sender sends messages of a fixed size S; the receiver repeatedly skips N
messages, takes the one it wants, then takes the N it skipped. Its non-seeking receiver first
copies the skipped messages out of the socket buffer into application memory; its seeking
receiver leaves them in place and seeks past them. The metric is the receiver's CPU time
(user + system), and the figure is the reduction seeking brings.

pipeparse's seekable buffer is that socket buffer moved to user space, so here:

* the sender is a separate process (`python -m pipeparse.clients.bench.seek`), pinned to other CPUs
  where possible, so its CPU time never counts;
* both receivers read the same TCP stream with `recv_into`, in the same chunk size, into a
  buffer of the same capacity; both hand each message to the same sink as a view (no copy);
* the *copying* receiver is what a library without seeking must do: parse in order from its
  buffer and copy each unexpected message into a preallocated pool (one `memcpy` each, no
  allocation), then deliver the pooled ones after the wanted one;
* the *seeking* receiver waits until a group is held, takes the wanted message with
  `SeekableBuffer.seek_recv` and then the skipped ones with `recv`, all views, no copy.

What to expect: the paper's socket buffer is in the kernel, so seeking saves a copy out of the
kernel plus a copy in user space. Here both receivers pay the kernel's copy (`recv_into`), and
seeking saves only the user-space `memcpy` of the skipped messages, against its per-message
bookkeeping in Python (hole list, views). It loses on small messages and gains on large ones.

The *kernel-seeking* receiver does what the paper's patched kernel did, with what stock Linux
has now (`pipeparse.KernelSeekableSocket`): it peeks the wanted message at its offset in the
kernel's receive queue (``SO_PEEK_OFF``), receives the skipped ones in one read, and the
wanted message's bytes, now a hole at the head, are dropped in the kernel uncopied
(``MSG_TRUNC``). Every byte is copied once, as in the in-order floor, but each group costs
three or four system calls (set the peek offset, peek, receive, discard) where the in-order
reads take 64 KiB a call: small messages pay for that, large ones gain the skipped copy.

Another receiver, the *in-order* floor, does the same reads and delivers every message in stream
order: no reordering receiver can beat it, so it shows how much of the copying receiver's time
reordering costs at all (``ceiling_pct``), which bounds what seeking can save.

CPU time is `time.thread_time()` around the receive loop only (connect, close and allocating
the buffers excluded), so a progress thread in this process doesn't count. Each run opens a
connection per repetition (as the paper does) and the two receivers alternate run by run; a
point's figure is the median over runs. Messages carry their sequence number in their first 8
bytes; every delivery order is checked after the clock stops, so a fast wrong receiver cannot
win.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from pipeparse import KernelSeekableSocket, KiB, MiB, SeekableBuffer
from pipeparse.clients.bench.procs import (
    available_cpus,
    can_pin,
    pinned,
    python_module,
    split_cpus,
)
from pipeparse.clients.bench.stats import Row, median, reduction_pct

__all__ = [
    "FULL_NS",
    "FULL_SIZES",
    "CopyReceiver",
    "InOrderReceiver",
    "KernelSeekReceiver",
    "SeekReceiver",
    "SeekSettings",
    "copy_receive",
    "delivery_order",
    "make_message",
    "receive_with",
    "run_seek_bench",
    "seek_receive",
]

FULL_NS = (2, 4, 8, 16)
FULL_SIZES = (10, 100, 1000, 1460, 4096, 16384, 65536)
HEADER = 8  # bytes of sequence number at the start of each message
RECV_CHUNK = 64 * KiB  # the most one recv_into asks for, both receivers
_REQUEST = struct.Struct("!II")  # count, size: what the receiver asks the sender for
_SEQ = struct.Struct("!Q")

Sink = Callable[[memoryview], None]  # gets each message as a view, valid during the call only


class RecvIntoSocket(Protocol):
    def recv_into(self, buffer: memoryview, nbytes: int = 0, /) -> int: ...


@dataclass(frozen=True, slots=True)
class SeekSettings:
    """How much to measure.

    Attributes:
        ns: the skip counts N.  sizes: the message sizes S, bytes.
        messages: messages per connection (the paper: 1000).
        connections: connections per run, for each receiver (the paper: 100 in one test).
        runs: runs per point; the figure is their median (the paper averaged 10 tests).
        The full run gives each receiver 50 connections of 1000 messages per point.
    """

    ns: tuple[int, ...] = FULL_NS
    sizes: tuple[int, ...] = FULL_SIZES
    messages: int = 1000
    connections: int = 10
    runs: int = 5

    def __post_init__(self) -> None:
        if not self.ns or min(self.ns) < 1:
            raise ValueError(f"N values must be at least 1, got {self.ns}")
        if not self.sizes or min(self.sizes) < HEADER:
            raise ValueError(f"message sizes must be at least {HEADER} bytes, got {self.sizes}")
        for name in ("messages", "connections", "runs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    @classmethod
    def quick(cls) -> SeekSettings:
        return cls(connections=1, runs=3)


# -- messages ------------------------------------------------------------------------------


def _pattern(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


def make_message(seq: int, size: int) -> bytes:
    """Message `seq` of `size` bytes: its sequence number, then a fixed pattern."""
    return _SEQ.pack(seq) + _pattern(size)[HEADER:]


def delivery_order(count: int, n: int) -> list[int]:
    """The order a receiver delivers `count` messages in when it skips `n` at a time.

    In groups of n + 1 (the last may be shorter): the last of the group, then the others.
    """
    order: list[int] = []
    done = 0
    while done < count:
        g = min(n + 1, count - done)
        order.append(done + g - 1)
        order.extend(range(done, done + g - 1))
        done += g
    return order


def buffer_capacity(n: int, size: int) -> int:
    """The receive buffer both receivers get: room for two groups, and at least 1 MiB."""
    return max(1 * MiB, 2 * (n + 1) * size + RECV_CHUNK)


# -- the two receivers ---------------------------------------------------------------------
# Each is a class so its buffers are allocated before the clock starts (zero-filling megabytes
# is not receiving), and a function that makes one and runs it, for one-off use and tests.


class _InOrderBuffer:
    """A library buffer read in order: `recv_into` fills it, a partial message at its end moves
    to the front when the next read would not fit. The copying and the in-order receivers
    share it, so they do exactly the same reads."""

    def __init__(self, size: int, capacity: int, chunk: int) -> None:
        if capacity < size:
            raise ValueError(f"capacity {capacity} cannot hold a {size}-byte message")
        self.size, self.capacity, self.chunk = size, capacity, chunk
        self.mv = memoryview(bytearray(capacity))

    def fill(self, sock: RecvIntoSocket, r: int, w: int, done: int, count: int) -> tuple[int, int]:
        """Read until a whole message is held from `r`; the new ``(r, w)``."""
        size, capacity, mv = self.size, self.capacity, self.mv
        while w - r < size:
            if r == w:
                r = w = 0
            want = min(capacity - (w - r), self.chunk)
            if capacity - w < want:  # compact: move the partial message to the front
                mv[: w - r] = mv[r:w]
                w -= r
                r = 0
            got = sock.recv_into(mv[w : w + want], want)
            if not got:
                raise EOFError(f"stream ended after {done} of {count} messages")
            w += got
        return r, w


class CopyReceiver(_InOrderBuffer):
    """The copying receiver: in-order parsing from a library buffer; skipped messages are
    copied into a preallocated pool and delivered after the wanted one."""

    def __init__(
        self, n: int, size: int, capacity: int | None = None, chunk: int = RECV_CHUNK
    ) -> None:
        super().__init__(size, buffer_capacity(n, size) if capacity is None else capacity, chunk)
        self.n = n
        self.pool = memoryview(bytearray(n * size))

    def receive(self, sock: RecvIntoSocket, count: int, sink: Sink) -> None:
        n, size, mv, pool, fill = self.n, self.size, self.mv, self.pool, self.fill
        r = w = 0  # parse position, write position
        done = 0
        while done < count:
            g = min(n + 1, count - done)
            for i in range(g):
                if w - r < size:
                    r, w = fill(sock, r, w, done + i, count)
                if i < g - 1:
                    pool[i * size : (i + 1) * size] = mv[r : r + size]
                else:
                    sink(mv[r : r + size])
                r += size
            for i in range(g - 1):
                sink(pool[i * size : (i + 1) * size])
            done += g


class SeekReceiver:
    """The seeking receiver: once a group is held, `seek_recv` past the skipped messages to the
    wanted one, then `recv` the skipped ones; every message a view into the buffer."""

    def __init__(
        self, n: int, size: int, capacity: int | None = None, chunk: int = RECV_CHUNK
    ) -> None:
        capacity = buffer_capacity(n, size) if capacity is None else capacity
        if capacity < (n + 1) * size:
            raise ValueError(f"capacity {capacity} cannot hold {n + 1} messages of {size} bytes")
        self.n, self.size, self.chunk = n, size, chunk
        self.buf = SeekableBuffer(capacity, min_block=capacity)  # allocated now, as the others

    def receive(self, sock: RecvIntoSocket, count: int, sink: Sink) -> None:
        n, size, chunk, buf = self.n, self.size, self.chunk, self.buf
        recv, recv_into, seek_recv = buf.recv, buf.recv_into, buf.seek_recv
        done = 0
        held = len(buf)  # kept here: a group takes exactly what it counts
        while done < count:
            g = min(n + 1, count - done)
            need = g * size
            while held < need:
                got = recv_into(sock, chunk)  # at most what is writable
                if not got:
                    raise EOFError(f"stream ended after {done} of {count} messages")
                held += got
            sink(seek_recv((g - 1) * size, size))
            for _ in range(g - 1):
                sink(recv(size))
            held -= need
            done += g


class InOrderReceiver(_InOrderBuffer):
    """The floor: the same reads and buffer, every message delivered in stream order, nothing
    reordered. No reordering receiver can cost less, so ``(copy - inorder) / copy`` bounds the
    reduction seeking could bring here."""

    def __init__(
        self, n: int, size: int, capacity: int | None = None, chunk: int = RECV_CHUNK
    ) -> None:
        super().__init__(size, buffer_capacity(n, size) if capacity is None else capacity, chunk)

    def receive(self, sock: RecvIntoSocket, count: int, sink: Sink) -> None:
        size, mv, fill = self.size, self.mv, self.fill
        r = w = 0
        for done in range(count):
            if w - r < size:
                r, w = fill(sock, r, w, done, count)
            sink(mv[r : r + size])
            r += size


class KernelSeekReceiver:
    """The kernel-seeking receiver: `seek_recv_into` the wanted message of a group straight
    out of the kernel's queue, then `recv_into` the skipped ones in one read; the hole the
    wanted message leaves is discarded in the kernel. Needs a real stream socket."""

    def __init__(
        self, n: int, size: int, capacity: int | None = None, chunk: int = RECV_CHUNK
    ) -> None:
        self.n, self.size = n, size
        self.wanted = memoryview(bytearray(size))
        self.skipped = memoryview(bytearray(n * size))

    def receive(self, sock: RecvIntoSocket, count: int, sink: Sink) -> None:
        if not isinstance(sock, socket.socket):
            raise TypeError("kernel seeking needs a socket")
        ks = KernelSeekableSocket(sock)
        n, size, wanted, skipped = self.n, self.size, self.wanted, self.skipped
        done = 0
        while done < count:
            g = min(n + 1, count - done)
            ks.seek_recv_into(wanted, (g - 1) * size)
            sink(wanted)
            have, need = 0, (g - 1) * size
            while have < need:  # stops at the wanted message's hole, then discards it
                got = ks.recv_into(skipped[have:need])
                if not got:
                    raise EOFError(f"stream ended after {done} of {count} messages")
                have += got
            for i in range(g - 1):
                sink(skipped[i * size : (i + 1) * size])
            done += g


def receive_with(
    kind: str,
    sock: RecvIntoSocket,
    count: int,
    size: int,
    n: int,
    sink: Sink,
    capacity: int | None = None,
    chunk: int = RECV_CHUNK,
) -> None:
    """Receive `count` messages with a fresh receiver of `kind` (a key of `RECEIVERS`)."""
    RECEIVERS[kind](n, size, capacity, chunk).receive(sock, count, sink)


copy_receive = functools.partial(receive_with, "copy")
seek_receive = functools.partial(receive_with, "seek")


RECEIVERS: dict[
    str,
    type[CopyReceiver] | type[SeekReceiver] | type[InOrderReceiver] | type[KernelSeekReceiver],
] = {
    "copy": CopyReceiver,
    "seek": SeekReceiver,
    "kernel": KernelSeekReceiver,
    "inorder": InOrderReceiver,
}


def kernel_seeking_unavailable() -> str | None:
    """Why this machine cannot seek in a TCP socket's queue, or None when it can."""
    with (
        socket.create_server(("127.0.0.1", 0)) as lsock,
        socket.create_connection(lsock.getsockname()),
    ):
        conn, _ = lsock.accept()
        with conn:
            try:
                KernelSeekableSocket(conn)
            except OSError as e:
                return str(e)
    return None


# -- the sender process --------------------------------------------------------------------


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        part = conn.recv(n - len(data))
        if not part:
            raise EOFError("peer closed")
        data += part
    return data


def _send_messages(conn: socket.socket, count: int, size: int) -> None:
    per_batch = max(1, (256 * KiB) // size)
    template = _pattern(size) * per_batch
    seq = 0
    while seq < count:
        k = min(per_batch, count - seq)
        batch = bytearray(template[: k * size])
        for j in range(k):
            _SEQ.pack_into(batch, j * size, seq + j)
        conn.sendall(batch)
        seq += k


def sender_main() -> int:
    """The sender: listen on loopback, print the port, then serve one request per connection
    (count and size), until a request for zero messages."""
    with socket.create_server(("127.0.0.1", 0)) as lsock:
        print(lsock.getsockname()[1], flush=True)
        while True:
            conn, _ = lsock.accept()
            with conn:
                count, size = _REQUEST.unpack(_recv_exact(conn, _REQUEST.size))
                if count == 0:
                    return 0
                _send_messages(conn, count, size)
                conn.shutdown(socket.SHUT_WR)
                while conn.recv(4096):
                    pass


@contextlib.contextmanager
def sender_process(cpus: set[int] | None) -> Iterator[int]:
    """Start the sender (pinned to `cpus` when given); yields its port; stops it after."""
    proc = subprocess.Popen(
        python_module("pipeparse.clients.bench.seek"),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        if cpus and can_pin():
            os.sched_setaffinity(proc.pid, cpus)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"seek sender did not start (said {line!r})")
        port = int(line)
        yield port
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(_REQUEST.pack(0, 0))
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


# -- measuring -----------------------------------------------------------------------------


def measure_connection(port: int, receiver: str, count: int, size: int, n: int) -> float:
    """One connection: ask for `count` messages, receive them with `receiver`; returns the
    receiver's CPU seconds. Raises `AssertionError` if the delivery order is wrong."""
    seqs: list[int] = []
    append = seqs.append
    from_bytes = int.from_bytes

    def sink(m: memoryview) -> None:
        append(from_bytes(m[:HEADER], "big"))

    rx = RECEIVERS[receiver](n, size)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(_REQUEST.pack(count, size))
        t0 = time.thread_time()
        rx.receive(sock, count, sink)
        cpu = time.thread_time() - t0
    expected = list(range(count)) if receiver == "inorder" else delivery_order(count, n)
    if seqs != expected:
        raise AssertionError(f"{receiver} receiver delivered messages out of order (n={n})")
    return cpu


def seek_row(
    n: int,
    size: int,
    copy_runs: Sequence[float],
    seek_runs: Sequence[float],
    inorder_runs: Sequence[float] | None = None,
    kernel_runs: Sequence[float] | None = None,
) -> Row:
    """A `seek` row from the per-run CPU seconds of each receiver (medians).

    With the in-order floor's runs, the row also holds ``inorder_cpu_s`` and ``ceiling_pct``:
    the reduction a seeking receiver of zero overhead would reach. With the kernel-seeking
    receiver's runs, ``kernel_cpu_s`` and ``kernel_reduction_pct`` (against copying too).
    """
    copy_cpu = median(copy_runs)
    seek_cpu = median(seek_runs)
    row: Row = {
        "n": n,
        "size": size,
        "copy_cpu_s": round(copy_cpu, 6),
        "seek_cpu_s": round(seek_cpu, 6),
        "reduction_pct": round(reduction_pct(copy_cpu, seek_cpu), 2),
    }
    if inorder_runs:
        floor = median(inorder_runs)
        row["inorder_cpu_s"] = round(floor, 6)
        row["ceiling_pct"] = round(reduction_pct(copy_cpu, floor), 2)
    if kernel_runs:
        kernel = median(kernel_runs)
        row["kernel_cpu_s"] = round(kernel, 6)
        row["kernel_reduction_pct"] = round(reduction_pct(copy_cpu, kernel), 2)
    return row


def run_seek_bench(settings: SeekSettings, step: Callable[[str], None] | None = None) -> list[Row]:
    """Run the whole grid; `step(label)` is called after each (n, size) point.

    The kernel-seeking receiver runs where the kernel allows it (rows then have its columns).
    """
    mine, peer = split_cpus(available_cpus())
    receivers = ["copy", "seek", "inorder"]
    if kernel_seeking_unavailable() is None:
        receivers.append("kernel")
    rows: list[Row] = []
    with sender_process(peer if peer != mine else None) as port, pinned(mine):
        for n in settings.ns:
            for size in settings.sizes:
                runs: dict[str, list[float]] = {name: [] for name in receivers}
                for r in range(settings.runs):
                    k = r % len(receivers)  # each receiver takes every position in turn
                    for receiver in [*receivers[k:], *receivers[:k]]:
                        runs[receiver].append(
                            sum(
                                measure_connection(port, receiver, settings.messages, size, n)
                                for _ in range(settings.connections)
                            )
                        )
                rows.append(
                    seek_row(
                        n, size, runs["copy"], runs["seek"], runs["inorder"], runs.get("kernel")
                    )
                )
                if step is not None:
                    step(f"n={n} size={size}")
    return rows


if __name__ == "__main__":
    raise SystemExit(sender_main())
