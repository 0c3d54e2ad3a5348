"""Reading on the trio driver: the part of `TrioDriver` that receives, straight into the
protocol's buffer when the stream is a socket (`ServerConnection.receive_view`).

On a socket the run's `Readiness` watches (Linux: one edge-triggered epoll set and a pool of
tasks, `servers/trio_readiness.py`), no task of the connection ever waits for input. The
leader reads what is there; when nothing is, it steps down and the socket is watched
(`_watch_input`): the connection is idle, its tasks parked. At the socket's next edge the
pool's leading task reads and serves it right there (`_input_came`, then
`RunsHandlers._serve_inline`): at depth 1, a request costs no wake of a connection task at all.
The read deadline (keep-alive, header or body timeout, or the moment an idle connection gives
its receive block back) or a kick wakes a task of the connection to lead instead. An edge is
spent when it is served: a read that filled its buffer (`unread`) means the next receive must
read, not watch.

Elsewhere (TLS, a socket without epoll) the leader waits (`_wait_input`), with no cancel scope
of its own: what ends a wait early is the cancel of the leader task's own scope (`wait_scope`),
by a kick or by this run's `ReadDeadlines`.

The receive size adapts: a receive that fills it doubles the next, one that brings less than a
quarter halves it (4 KiB to 256 KiB). A base class of `TrioDriver` (over `WritesStream`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import trio

from pipeparse import ServerConnection

from .heap import gave_back
from .trio_readiness import Readiness
from .trio_writing import WritesStream

if TYPE_CHECKING:
    from .trio_handlers import Worker

__all__ = ["ReadsStream"]

log = logging.getLogger("pipeparse.server")

MIN_RECV = 4 * 1024
MAX_RECV = 256 * 1024


class ReadsStream(WritesStream):
    """See the module comment; every attribute is set by `TrioDriver.__init__`."""

    __slots__ = (
        "__weakref__",  # (`ReadDeadlines` holds drivers weakly)
        "eager_misses",
        "eager_reads",
        "leader_vacant",
        "read_deadline",
        "read_due",
        "readiness",
        "recv_size",
        "unread",
        "wait_scope",
        "watching",
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
    read_due: bool
    readiness: Readiness | None
    wait_scope: trio.CancelScope | None
    watching: bool
    unread: bool
    leader_vacant: bool
    pumping: bool
    pending: list[Any]
    stalled: Coroutine[Any, Any, None] | None
    done: bool
    gone: trio.Event

    def _retire_helpers(self) -> None:
        raise NotImplementedError

    def _wake(self, wanted: int) -> None:
        raise NotImplementedError

    def _serve_inline(self, scope: trio.CancelScope) -> Coroutine[Any, Any, None] | None:
        raise NotImplementedError

    # -- reading -------------------------------------------------------------------------

    def read_deadline_passed(self, deadline: float) -> None:
        """`ReadDeadlines`: `deadline` passed. If it is still the read deadline, interrupt
        the leader's wait for input, or have its next wait end at once."""
        if deadline != self.read_deadline:
            return  # moved since, or cleared
        self.read_due = True
        self._interrupt_wait()
        if self.watching:  # no task leads: one must, to act on it
            self._unwatch_input()
            self._wake(1)

    def _watch_input(self) -> bool:
        """No task leads: have the socket's next edge serve it (`_input_came`). False when
        that cannot be: input is there already (a kept edge, or the last read filled its
        buffer), or the stream is not a watched socket."""
        readiness = self.readiness
        if readiness is None or self.done or self.unread:
            return False
        if not readiness.watch(self.fd, self._input_came):
            self.unread = True  # (the kept edge is forgotten: the next receive must read)
            return False
        self.watching = True
        return True

    def _unwatch_input(self) -> None:
        """A task takes the lead (or the connection ends): the watch is not needed."""
        self.watching = False
        readiness = self.readiness
        if readiness is not None:
            readiness.unwatch(self.fd)

    def _input_came(self, scope: trio.CancelScope) -> Coroutine[Any, Any, None] | None:
        """The watched socket's edge (`Readiness` calls it, in its leading task, with that
        task's cancel `scope`): when no task leads, read and serve right here
        (`_serve_inline`); else wake a task to lead. The edge is spent on the call."""
        self.watching = False
        self.unread = True  # (until a read finds the socket empty)
        if not self.leader_vacant or self.done:
            return None
        if (
            self.pumping or self.pending or self.stalled is not None or self.read_due
            or not self.conn.reading
        ):  # fmt: skip
            self._wake(1)  # (to lead: it does what else there is, or waits for a resume)
            return None
        size = self.recv_size
        try:
            n = self._read_ready(size)
            if n < 0:  # (an edge from before a read that took everything)
                if not self._watch_input():
                    self._wake(1)
                return None
            self._received(size, n)
            return self._serve_inline(scope)
        except OSError:  # (the client is gone)
            self._end()
            return None
        except Exception:  # (a bug of the driver's: end the connection, not the pool's task)
            log.exception("serving a connection failed")
            self._end()
            return None

    def _interrupt_wait(self) -> None:
        """End the leader's wait for input, if it waits: its scope is cancelled (and
        `wait_scope` cleared, which tells the wait so if it took input meanwhile)."""
        scope = self.wait_scope
        if scope is not None:
            self.wait_scope = None
            scope.cancel()

    async def _receive(self, worker: Worker) -> None:
        """One receive into the protocol's buffer, by the leader (`worker`). On a watched
        socket it never waits: with nothing to read, the leader steps down and the socket is
        watched (`_watch_input`; the connection is idle). Elsewhere it waits (`_wait_input`)."""
        size = self.recv_size
        if self.readiness is None:
            n = await self._wait_input(worker, size)
        else:
            while True:
                if self.done:
                    return
                if self.read_due:
                    self._read_expired()
                    return
                if self._watch_input():
                    worker.leading = False
                    self.leader_vacant = True
                    self.eager_reads = 0
                    return
                try:
                    n = self._read_ready(size)
                except OSError:
                    self._end()
                    return
                if n >= 0:
                    break
            # Every fourth receive in a row yields, so a client that never pauses cannot
            # starve the others.
            self.eager_reads += 1
            if self.eager_reads >= 4:
                self.eager_reads = 0
                await trio.lowlevel.checkpoint()
        if n >= 0:
            self._received(size, n)

    async def _wait_input(self, worker: Worker, size: int) -> int:
        """A receive that waits for input when there is none (a socket no `Readiness`
        watches, or a stream): the bytes read, or -1 (the connection ended, or the wait was
        interrupted). It waits in the leader's own cancel scope: a kick or the deadline
        cancels it (`_interrupt_wait`), which ends the wait with `trio.Cancelled`
        (`TrioDriver.work` goes on leading in a new scope)."""
        n = -1
        # A busy pipeline's next batch is usually there already: read it at once, no timer.
        # A client that waits for each batch's answers (wrk) never has it there: after two
        # misses in a row, only every eighth receive tries (a failed read is a system call).
        misses = self.eager_misses
        if self.fd < 0:
            pass  # not a socket: the stream's own receive_some
        elif misses >= 2 and misses & 7 and not self.unread:
            self.eager_misses = misses + 1
        else:
            try:
                n = self._read_ready(size)
            except OSError:
                self._end()
                return -1
            if n < 0:
                self.eager_misses = misses + 1
            else:
                self.eager_misses = 0
                self.eager_reads += 1
                if self.eager_reads >= 4:
                    self.eager_reads = 0
                    await trio.lowlevel.checkpoint()
                return n
        self.eager_reads = 0
        if self.read_due:
            self._read_expired()
            return -1
        self.wait_scope = worker.scope
        try:
            if self.fd >= 0:
                while n < 0:
                    await trio.lowlevel.wait_readable(self.fd)
                    n = self._read_ready(size)
            else:
                data = await self.stream.receive_some(size)
                n = len(data)
                self.conn.receive_data(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self.wait_scope = None
            self._end()
            return -1
        if self.wait_scope is None:  # interrupted as the input came: the cancel ends it
            await trio.lowlevel.checkpoint()
        self.wait_scope = None
        return n

    def _received(self, size: int, n: int) -> None:
        """After a receive of `n` bytes, when at most `size` were asked for."""
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
                self.unread = False
                return -1
            n = len(data)
            self.unread = n == size  # (see below)
            conn.receive_data(data)
            return n
        room = len(view)
        try:
            n = os.readv(self.fd, [view])
        except BlockingIOError:
            self.unread = False
            return -1
        finally:
            view.release()
        # Full: more may be there, and the edge that announced it is spent (the wait is
        # edge-triggered). The next receive must read before it waits, or a client whose
        # send is blocked on a full socket would wait for an edge that never comes.
        self.unread = n == room
        conn.received(n)
        return n

    def _read_expired(self) -> None:
        """The read deadline passed: the protocol decides (a 408, a close, or an idle
        connection's receive block given back)."""
        conn = self.conn
        self.read_due = False
        self.read_deadline = math.inf
        before = conn.buffer.block_size
        conn.timer_expired("read")
        if conn.buffer.block_size < before:  # idle for a moment: memory given back
            gave_back(before - conn.buffer.block_size)
            self._retire_helpers()
