"""KernelSeekableSocket: the paper's seekable socket on a real TCP socket, through SO_PEEK_OFF.

Strategy
--------
The kernel's receive queue is the buffer: bytes stay there until they are consumed, so nothing
is copied into user space ahead of time. Offsets mean what they mean in `SeekableBuffer`:
relative to the *head* (the first byte not consumed), hole bytes included, so an offset names
the same byte until it is taken, whatever is taken around it.

- `seek_recv(offset, n)` peeks `n` bytes at `offset`: ``SO_PEEK_OFF`` sets where the next
  ``recv(MSG_PEEK)`` reads, and the bytes are copied once, into the returned buffer. The range
  becomes a *hole*: taken, but still in the kernel's queue. Holes coalesce with their
  neighbours, and a hole that reaches the head is discarded at once.
- `recv(n)` consumes up to `n` bytes at the head, up to the next hole.
- Discarding is ``recv(MSG_TRUNC)``: on TCP the kernel drops the bytes without copying them.

The kernel moves the peek offset itself: forward by what a peek read, back by what a receive
consumed. `_peek_off` mirrors it, so a seek that reads where the last one stopped (a batch taken
in order) saves the ``setsockopt`` call.

Flow control: TCP opens its receive window as a reader *consumes*, not as it peeks, and a
sender sends nothing while the window is below one segment (64 KiB on loopback). A reader that
waits to peek bytes the window has not let in waits forever. So the socket's ``SO_RCVBUF`` is
raised to `rcvbuf` (1 MiB by default; measured on loopback: with the kernel's usual cap of
208 KiB, messages of 1 KiB to 64 KiB taken in groups of 3 to 17 stalled within 0.5 MiB, with
1 MiB none did) and seeks should stay well inside it.

Blocking and non-blocking use: on a blocking socket (or one with a timeout), `seek_recv` waits
until all `n` bytes at `offset` have arrived, and `recv` waits for at least one byte, as
``socket.recv`` does. On a non-blocking socket both raise `BlockingIOError` when the bytes
are not there yet; `seek_recv` then takes nothing (a hole is recorded only once all `n` bytes
were read), so it can be called again when the socket is readable.

Requirements: Linux, a connected ``SOCK_STREAM`` socket, and a kernel whose TCP supports
``SO_PEEK_OFF`` (added in 2024; Unix stream sockets have had it longer). Construction fails with
an `OSError` that says which is missing.
"""

from __future__ import annotations

import errno
import socket
import sys
from bisect import bisect_right

__all__ = ["KernelSeekableSocket"]

# Linux's value; Python's socket module does not name it.
SO_PEEK_OFF: int = getattr(socket, "SO_PEEK_OFF", 42)
_DISCARD_CHUNK = 64 * 1024  # bytes per MSG_TRUNC call (Python wants a buffer of that size)
DEFAULT_RCVBUF = 1024 * 1024  # see "Flow control"


class KernelSeekableSocket:
    """A connected stream socket whose receive queue can be taken from at any offset.

    Args:
        sock: a connected ``SOCK_STREAM`` socket (TCP or Unix). Its other uses (``send``,
            ``close``) stay with the caller; receive only through this object.
        rcvbuf: raise the socket's ``SO_RCVBUF`` to at least this many bytes (the kernel caps
            it at ``net.core.rmem_max``); None leaves it. See "Flow control" above.

    Raises:
        ValueError: `sock` is not a stream socket.
        OSError: the platform or kernel has no ``SO_PEEK_OFF`` for this socket.
    """

    __slots__ = ("_discard", "_head", "_holes", "_peek_off", "sock")

    def __init__(self, sock: socket.socket, *, rcvbuf: int | None = DEFAULT_RCVBUF) -> None:
        if sock.type != socket.SOCK_STREAM:
            raise ValueError(f"a stream socket is needed (SOCK_STREAM), got {sock.type!r}")
        if not sys.platform.startswith("linux"):
            raise OSError(
                errno.EOPNOTSUPP, f"SO_PEEK_OFF is a Linux socket option (this is {sys.platform})"
            )
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, 0)
        except OSError as e:
            raise OSError(
                e.errno,
                f"this kernel has no SO_PEEK_OFF for {sock.family.name} stream sockets"
                f" ({e.strerror}); TCP support was added to Linux in 2024",
            ) from None
        if rcvbuf is not None and sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock = sock
        self._head = 0  # absolute offset of the first byte not consumed from the kernel
        self._holes: list[list[int]] = []  # taken ranges still queued: sorted, apart, > head
        self._peek_off = 0  # the kernel's peek offset, relative to the head
        self._discard = memoryview(bytearray(_DISCARD_CHUNK))

    @property
    def head(self) -> int:
        """Absolute offset of the first byte not yet received or discarded."""
        return self._head

    @property
    def holes(self) -> list[tuple[int, int]]:
        """The taken ranges still in the kernel's queue, as absolute ``(start, end)``."""
        return [(s, e) for s, e in self._holes]

    def fileno(self) -> int:
        return self.sock.fileno()

    # -- taking -------------------------------------------------------------------------------

    def seek_recv(self, offset: int, n: int) -> memoryview:
        """Take `n` bytes at `offset` from the head: a buffer of them, and a hole left behind.

        Raises `ValueError` if the range overlaps bytes already taken, `EOFError` if the
        stream ends first, and `BlockingIOError` (non-blocking socket) if they have not all
        arrived yet: then nothing is taken.
        """
        if n < 0:
            raise ValueError("offset and n must not be negative")
        out = memoryview(bytearray(n))
        self.seek_recv_into(out, offset)
        return out

    def seek_recv_into(self, buffer: memoryview, offset: int) -> None:
        """`seek_recv` into `buffer`: takes ``len(buffer)`` bytes at `offset` from the head."""
        self.peek_into(buffer, offset)
        start = self._head + offset
        self._add_hole(start, start + len(buffer))

    def peek(self, offset: int, n: int) -> memoryview:
        """Read `n` bytes at `offset` from the head without taking them."""
        if n < 0:
            raise ValueError("offset and n must not be negative")
        out = memoryview(bytearray(n))
        self.peek_into(out, offset)
        return out

    def peek_into(self, buffer: memoryview, offset: int) -> None:
        """`peek` into `buffer`: reads ``len(buffer)`` bytes at `offset` from the head."""
        n = len(buffer)
        if offset < 0:
            raise ValueError("offset and n must not be negative")
        start = self._head + offset
        self._check_untaken(start, start + n)
        got = 0
        sock = self.sock
        while got < n:
            if self._peek_off != offset + got:
                sock.setsockopt(socket.SOL_SOCKET, SO_PEEK_OFF, offset + got)
                self._peek_off = offset + got
            k = sock.recv_into(buffer[got:], n - got, socket.MSG_PEEK)
            if k == 0:
                raise EOFError(
                    f"the stream ended {offset + got} bytes after the head,"
                    f" before [{offset}, {offset + n})"
                )
            self._peek_off += k
            got += k

    def recv(self, n: int) -> memoryview:
        """Take up to `n` bytes from the head, up to the next hole (empty at end of stream)."""
        if n < 0:
            raise ValueError("n must not be negative")
        out = memoryview(bytearray(n))
        return out[: self.recv_into(out)]

    def recv_into(self, buffer: memoryview, nbytes: int = 0) -> int:
        """`recv` into `buffer` (at most `nbytes`, or its length): the count received."""
        n = nbytes or len(buffer)
        holes = self._holes
        if holes:
            n = min(n, holes[0][0] - self._head)
        k = self.sock.recv_into(buffer, n) if n else 0
        self._consumed(k)
        if holes and holes[0][0] == self._head:
            self._discard_head_hole()
        return k

    # -- holes --------------------------------------------------------------------------------

    def _check_untaken(self, start: int, end: int) -> None:
        holes = self._holes
        i = bisect_right(holes, [start, end])
        for hs, he in holes[max(i - 1, 0) : i + 1]:
            if hs < end and start < he:
                raise ValueError(f"range [{start}, {end}) overlaps taken bytes [{hs}, {he})")

    def _add_hole(self, start: int, end: int) -> None:
        if start == end:
            return
        holes = self._holes
        i = bisect_right(holes, [start, end])
        # Coalesce with the hole before and the hole after, when they touch.
        if i > 0 and holes[i - 1][1] == start:
            holes[i - 1][1] = end
            i -= 1
            if i + 1 < len(holes) and holes[i + 1][0] == end:
                holes[i][1] = holes.pop(i + 1)[1]
        elif i < len(holes) and holes[i][0] == end:
            holes[i][0] = start
        else:
            holes.insert(i, [start, end])
        if holes[0][0] == self._head:
            self._discard_head_hole()

    def _discard_head_hole(self) -> None:
        """The head reached a hole: drop its bytes from the kernel's queue, uncopied."""
        start, end = self._holes.pop(0)
        left = end - start
        while left:
            k = min(left, _DISCARD_CHUNK)
            got = self.sock.recv_into(self._discard[:k], k, socket.MSG_TRUNC)
            if got == 0:  # (cannot happen: a hole's bytes were all peeked, so all are queued)
                raise EOFError("the stream ended inside a hole")
            self._consumed(got)
            left -= got

    def _consumed(self, k: int) -> None:
        self._head += k
        self._peek_off = max(self._peek_off - k, 0)  # what the kernel does on a receive
