"""Reading on the trio driver: the part of `TrioDriver` that receives, straight into the
protocol's buffer when the stream is a socket (`ServerConnection.receive_view`).

A busy pipeline's next batch is usually there already: it is read at once, with no wait and
no timer. Only when nothing is there does the leader wait (through this run's `Readiness`, one
edge-triggered epoll set: `servers/trio_readiness.py`), with no cancel scope of its own:
what ends a wait early is the cancel of the leader task's own scope (`wait_scope`), by a kick
or by this run's `ReadDeadlines` when the protocol's read deadline passes (keep-alive, header
or body timeout, or the moment an idle connection gives its receive block back).

While no task leads (the leader's handler suspended, with nothing else to do: at depth 1, every
request whose handler waits), the socket is watched instead (`_watch_input`): its next edge,
the read deadline, or a kick wakes a task to lead, so a request that waits costs no wake of a
second task until input comes.

The receive size adapts: a receive that fills it doubles the next, one that brings less than a
quarter halves it (4 KiB to 256 KiB). A base class of `TrioDriver` (over `WritesStream`).
"""

from __future__ import annotations

import math
import os

import trio

from pipeparse import ServerConnection

from .heap import gave_back
from .trio_readiness import Readiness
from .trio_writing import WritesStream

__all__ = ["ReadsStream"]

MIN_RECV = 4 * 1024
MAX_RECV = 256 * 1024


class ReadsStream(WritesStream):
    """See the module comment; every attribute is set by `TrioDriver.__init__`."""

    __slots__ = (
        "__weakref__",  # (`ReadDeadlines` holds drivers weakly)
        "eager_misses",
        "eager_reads",
        "read_deadline",
        "read_due",
        "readiness",
        "recv_size",
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
    leader_vacant: bool
    done: bool
    gone: trio.Event

    def _retire_helpers(self) -> None:
        raise NotImplementedError

    def _wake(self, wanted: int) -> None:
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
        """No task leads: have the socket's next edge wake one (`_input_came`). False when
        that cannot be (input is there already, or the stream is not a watched socket)."""
        readiness = self.readiness
        if readiness is None or self.done or not readiness.watch(self.fd, self._input_came):
            return False
        self.watching = True
        return True

    def _unwatch_input(self) -> None:
        """A task takes the lead (or the connection ends): the watch is not needed."""
        self.watching = False
        readiness = self.readiness
        if readiness is not None:
            readiness.unwatch(self.fd)

    def _input_came(self) -> None:
        """The watched socket's edge: the edge is spent, so the next receive reads before it
        waits; a task is woken to lead, unless one leads already."""
        self.watching = False
        self.eager_misses = 0
        if self.leader_vacant and not self.done:
            self._wake(1)

    def _interrupt_wait(self) -> None:
        """End the leader's wait for input, if it waits: its scope is cancelled (and
        `wait_scope` cleared, which tells the wait so if it took input meanwhile)."""
        scope = self.wait_scope
        if scope is not None:
            self.wait_scope = None
            scope.cancel()

    async def _receive(self, scope: trio.CancelScope, task: trio.lowlevel.Task) -> None:
        """One receive into the protocol's buffer. Reads at once what is there; waits (until
        the read deadline) only when nothing is, in the leader's own cancel `scope`: a kick
        or the deadline cancels it (`_interrupt_wait`), which ends the wait with
        `trio.Cancelled` (`TrioDriver.work` goes on leading in a new scope). `task`: the
        leader's (the current one)."""
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
        if n < 0:  # wait (inline: one coroutine less per wait, which at depth 1 is per request)
            self.eager_reads = 0
            if self.read_due:
                self._read_expired()
                return
            self.wait_scope = scope
            try:
                readiness = self.readiness
                if readiness is not None:
                    while n < 0:
                        await readiness.wait(self.fd, task)
                        n = self._read_ready(size)
                elif self.fd >= 0:
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
                return
            if self.wait_scope is None:  # interrupted as the input came: the cancel ends it
                await trio.lowlevel.checkpoint()
            self.wait_scope = None
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
            n = len(data)
            if n == size:
                self.eager_misses = 0  # (see below)
            conn.receive_data(data)
            return n
        room = len(view)
        try:
            n = os.readv(self.fd, [view])
        except BlockingIOError:
            return -1
        finally:
            view.release()
        if n == room:
            # Full: more may be there, and the edge that announced it is spent (the wait is
            # edge-triggered). The next receive must read before it waits, or a client whose
            # send is blocked on a full socket would wait for an edge that never comes.
            self.eager_misses = 0
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
