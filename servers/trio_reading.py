"""Reading on the trio driver: the part of `TrioDriver` that receives, straight into the
protocol's buffer when the stream is a socket (`ServerConnection.receive_view`).

A busy pipeline's next batch is usually there already: it is read at once, with no wait and
no timer. Only when nothing is there does the leader wait, until the protocol's read deadline
(keep-alive, header or body timeout, or the moment an idle connection gives its receive block
back). The receive size adapts: a receive that fills it doubles the next, one that brings less
than a quarter halves it (4 KiB to 256 KiB). A base class of `TrioDriver` (over `WritesStream`).
"""

from __future__ import annotations

import math
import os

import trio

from pipeparse import ServerConnection

from .heap import gave_back
from .trio_writing import WritesStream

__all__ = ["ReadsStream"]

MIN_RECV = 4 * 1024
MAX_RECV = 256 * 1024


class ReadsStream(WritesStream):
    """See the module comment; every attribute is set by `TrioDriver.__init__`."""

    __slots__ = (
        "eager_misses",
        "eager_reads",
        "read_deadline",
        "recv_scope",
        "recv_size",
    )

    conn: ServerConnection
    stream: trio.abc.Stream
    fd: int
    fixed_recv: int
    recv_size: int
    max_recv: int
    eager_reads: int
    eager_misses: int
    read_deadline: float
    recv_scope: trio.CancelScope | None
    gone: trio.Event

    def _retire_helpers(self) -> None:
        raise NotImplementedError

    # -- reading -------------------------------------------------------------------------

    async def _receive(self) -> None:
        """One receive into the protocol's buffer. Reads at once what is there; waits (until
        the read deadline) only when nothing is."""
        size = self.recv_size
        n = -1
        # A busy pipeline's next batch is usually there already: read it at once, no timer.
        # A client that waits for each batch's answers (wrk) never has it there: after two
        # misses in a row, only every eighth receive tries (a failed read is a system call).
        misses = self.eager_misses
        if self.fd < 0:
            pass  # not a socket: the stream's own receive_some
        elif misses >= 2 and misses & 7:
            self.eager_misses = misses + 1
        else:
            try:
                n = self._read_ready(size)
            except OSError:
                self._end()
                return
            if n < 0:
                self.eager_misses = misses + 1
            else:
                self.eager_misses = 0
                # Every fourth receive that did not wait yields anyway, so a client that
                # never pauses cannot starve the others.
                self.eager_reads += 1
                if self.eager_reads >= 4:
                    self.eager_reads = 0
                    await trio.lowlevel.checkpoint()
        if n < 0:
            self.eager_reads = 0
            n = await self._wait_and_receive(size)
            if n < 0:
                return
        if n == 0:
            self.gone.set()  # ASGI's http.disconnect: the client closed its side
            return
        if not self.fixed_recv:  # adaptive receive size
            if n >= size:
                self.recv_size = min(size * 2, self.max_recv)
            elif n < size // 4:
                self.recv_size = max(size // 2, MIN_RECV)

    def _read_ready(self, size: int) -> int:
        """Read what the socket holds now, straight into the protocol's buffer: the bytes
        read (0 at the end of the stream), or -1 when it has nothing yet. trio's own
        receive would cost a trip through the scheduler every time."""
        conn = self.conn
        view = conn.receive_view(size)
        if view is None:
            try:
                data = os.read(self.fd, size)
            except BlockingIOError:
                return -1
            conn.receive_data(data)
            return len(data)
        try:
            n = os.readv(self.fd, [view])
        except BlockingIOError:
            return -1
        finally:
            view.release()
        conn.received(n)
        return n

    async def _wait_and_receive(self, size: int) -> int:
        """Wait for input until the read deadline, and receive it: the bytes received (0 at
        the end of the stream), or -1 when there is nothing (a timer, a kick, the client
        went away)."""
        n = -1
        try:
            with trio.CancelScope(deadline=self.read_deadline) as scope:
                self.recv_scope = scope
                if self.fd >= 0:
                    while n < 0:
                        await trio.lowlevel.wait_readable(self.fd)
                        n = self._read_ready(size)
                else:
                    data = await self.stream.receive_some(size)
                    n = len(data)
                    self.conn.receive_data(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self._end()
            return -1
        finally:
            self.recv_scope = None
        if scope.cancelled_caught and trio.current_time() >= self.read_deadline:
            conn = self.conn
            self.read_deadline = math.inf
            before = conn.buffer.block_size
            conn.timer_expired("read")
            if conn.buffer.block_size < before:  # idle for a moment: memory given back
                gave_back(before - conn.buffer.block_size)
                self._retire_helpers()
        return n
