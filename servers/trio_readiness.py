"""Serving the trio connections whose sockets became readable: one edge-triggered epoll set per
trio run, and a pool of tasks that take turns waiting on it and serve what is ready in line.

trio's `wait_readable` re-arms the socket in trio's epoll set on every wait (an ``epoll_ctl``,
since trio registers one-shot) and goes through about twenty Python calls, and a connection
task woken for each request costs a reschedule and a trip through the scheduler: at depth 1,
that was a third of the trio driver's own cost. Here each socket is registered once,
edge-triggered (``EPOLLIN | EPOLLET``), in one epoll set per trio run, whose descriptor trio
watches for one task of the pool, the *leader* (`Readiness._lead`). A connection with nothing to
do `watch`es its socket; at its edge the leader calls it back, and the callback serves the input
right there (reads, runs the handlers, writes): no connection task is woken.

A callback whose handler suspended must go on in the leader's task (a trio coroutine goes on in
the task it suspended in): it returns the rest as a coroutine. The leader then hands the lead to
another task of the pool (a parked one, or a new one), with what was left of its batch of
sockets, and goes on with that coroutine, in the cancel scope it gave the callback (cancelling
the scope cancels the handler). When it is done, the task parks, to lead again later.

An edge that comes while the socket is not watched is kept (`ready`): `watch` then says so (and
forgets it), and the caller reads. Linux only (epoll); elsewhere, and for anything but a plain
socket, the driver waits with trio's `wait_readable` (`readiness()` is None).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import select
from collections.abc import Callable, Coroutine
from typing import Any

import trio

__all__ = ["Callback", "Readiness", "readiness"]

log = logging.getLogger("pipeparse.server")

_EDGE = getattr(select, "EPOLLIN", 1) | getattr(select, "EPOLLET", 1 << 31)
_SPARES = 256  # pool tasks kept parked at most (a handler that suspends takes one from here)
_NAME = "pipeparse readiness"

# Called at a watched socket's edge, by the leader, with its cancel scope: None when it is
# done, else the coroutine to go on with (a handler suspended in the leader's task).
Callback = Callable[[trio.CancelScope], Coroutine[Any, Any, None] | None]


class Readiness:
    """See the module comment: one per trio run (`readiness`)."""

    __slots__ = ("backlog", "context", "epoll", "ready", "spares", "watchers")

    def __init__(self, context: contextvars.Context | None = None) -> None:
        self.epoll = select.epoll()
        self.watchers: dict[int, Callback] = {}  # descriptor: called at its next edge
        self.ready: set[int] = set()  # descriptors that became readable while not watched
        self.backlog: list[tuple[int, int]] = []  # ready sockets a leader left to the next
        self.spares = trio.lowlevel.ParkingLot()  # pool tasks waiting to lead
        self.context = context  # the pool's (the first connection's: its server's)

    def register(self, fd: int) -> None:
        """Watch socket `fd` (readable data already there counts as an edge)."""
        self.epoll.register(fd, _EDGE)

    def unregister(self, fd: int) -> None:
        """Stop watching `fd`: before it is closed (a descriptor number is reused)."""
        self.watchers.pop(fd, None)
        self.ready.discard(fd)
        with contextlib.suppress(OSError, ValueError):  # (closed already: the kernel dropped it)
            self.epoll.unregister(fd)

    def watch(self, fd: int, callback: Callback) -> bool:
        """Call `callback` (once) at `fd`'s next edge. False, and no watch, when an edge came
        since the last watch: input may be there, the caller reads now (the edge is forgotten:
        what the caller does not read will cause a new one)."""
        ready = self.ready
        if fd in ready:
            ready.discard(fd)
            return False
        self.watchers[fd] = callback
        return True

    def unwatch(self, fd: int) -> None:
        """Drop `fd`'s watch (a task serves it now, or its connection ends)."""
        self.watchers.pop(fd, None)

    def start(self) -> None:
        """Start a pool task (`spawn_system_task`: the pool serves every server of the run)."""
        context = self.context.copy() if self.context is not None else None  # (one per task)
        trio.lowlevel.spawn_system_task(self._serve, name=_NAME, context=context)

    async def _serve(self) -> None:
        """A pool task's life: lead until a handler suspends in it, go on with that, park,
        and again. Its cancel scope lasts until a handler's cancel used it (entering one
        costs trio about 25 Python calls: not one per handler that suspends)."""
        while True:
            with trio.CancelScope() as scope:
                while True:
                    rest = await self._lead(scope)
                    try:
                        await rest
                    except Exception:  # (one connection's: the task serves others after)
                        log.exception("serving a connection failed")
                    if len(self.spares) >= _SPARES:
                        return
                    if scope.cancel_called:
                        break
                    await self.spares.park()  # woken to lead
            await self.spares.park()  # (out of the cancelled scope; woken to lead)

    async def _lead(self, scope: trio.CancelScope) -> Coroutine[Any, Any, None]:
        """Wait on the epoll set and call back the watched sockets that are ready, until one's
        callback must go on in this task (a handler suspended): the lead goes to another task,
        with the rest of the batch, and the rest of that callback is returned."""
        epoll = self.epoll
        watchers = self.watchers
        ready = self.ready
        events = self.backlog
        self.backlog = []
        while True:
            if not events:
                try:
                    await trio.lowlevel.wait_readable(epoll.fileno())
                except BaseException:  # (cancelled: the run ends, and the set with it)
                    epoll.close()
                    raise
                events = epoll.poll(0)
            for i, (fd, _) in enumerate(events):
                callback = watchers.pop(fd, None) if watchers else None
                if callback is None:
                    ready.add(fd)
                    continue
                try:
                    rest = callback(scope)
                except Exception:  # (one connection's: this task serves them all)
                    log.exception("readiness callback for descriptor %d failed", fd)
                    continue
                if rest is not None:
                    self.backlog = events[i + 1 :]
                    self._hand_over()
                    return rest
            events = []

    def _hand_over(self) -> None:
        """The leader goes on with a suspended handler: another pool task leads."""
        if self.spares:
            self.spares.unpark(count=1)
        else:
            self.start()


_of_run: trio.lowlevel.RunVar[Readiness | None] = trio.lowlevel.RunVar("pipeparse_readiness")


def readiness() -> Readiness | None:
    """This trio run's `Readiness`, its first task started at the first call; None without
    epoll."""
    try:
        return _of_run.get()
    except LookupError:
        service = Readiness(contextvars.copy_context()) if hasattr(select, "epoll") else None
        _of_run.set(service)
        if service is not None:
            service.start()
        return service
