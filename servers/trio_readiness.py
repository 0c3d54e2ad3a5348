"""Waiting until a connection's socket is readable, for every trio connection in a run: one
edge-triggered epoll set and one task.

trio's `wait_readable` re-arms the socket in trio's epoll set on every wait (an ``epoll_ctl``,
since trio registers one-shot) and goes through about twenty Python calls; at depth 1 a
connection waits once per request, so that was a large part of the trio driver's own cost. Here
each socket is registered once, edge-triggered (``EPOLLIN | EPOLLET``), in one epoll set per
trio run, whose descriptor trio watches for one task (`Readiness.run`): when it is readable,
the task collects the ready sockets and wakes the connection waiting on each
(`trio.lowlevel.reschedule`). An edge that comes while no task waits on that socket is kept
(`ready`), so the next wait returns at once; the caller then reads, and waits again if the
read finds nothing (an edge kept from before a read that took everything). A wait is
cancellable as trio's is (the driver's cancel scope interrupts it).

A connection that has no task free to wait (its reader is running a handler that suspended)
`watch`es instead: the next edge calls it back, so a task is woken only when input comes.
The edge is spent on the call: whoever reads next must read before it waits.

Linux only (epoll); elsewhere, and for anything but a plain socket, the driver waits with trio's
`wait_readable` (`readiness()` is None).
"""

from __future__ import annotations

import contextlib
import logging
import select
from collections.abc import Callable

import trio
from trio.lowlevel import (
    Abort,
    RaiseCancelT,
    Task,
    cancel_shielded_checkpoint,
    current_task,
    wait_task_rescheduled,
)

__all__ = ["Readiness", "readiness"]

log = logging.getLogger("pipeparse.server")

_EDGE = getattr(select, "EPOLLIN", 1) | getattr(select, "EPOLLET", 1 << 31)


class Readiness:
    """See the module comment: one per trio run (`readiness`)."""

    __slots__ = ("epoll", "ready", "waiting", "watchers")

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.waiting: dict[int, Task] = {}  # descriptor: the task waiting until it is readable
        self.watchers: dict[int, Callable[[], None]] = {}  # descriptor: called at its edge
        self.ready: set[int] = set()  # descriptors that became readable while none waited

    def register(self, fd: int) -> None:
        """Watch socket `fd` (readable data already there counts as an edge)."""
        self.epoll.register(fd, _EDGE)

    def unregister(self, fd: int) -> None:
        """Stop watching `fd`: before it is closed (a descriptor number is reused)."""
        self.waiting.pop(fd, None)
        self.watchers.pop(fd, None)
        self.ready.discard(fd)
        with contextlib.suppress(OSError, ValueError):  # (closed already: the kernel dropped it)
            self.epoll.unregister(fd)

    async def wait(self, fd: int, task: Task | None = None) -> None:
        """Return once registered socket `fd` may have data (an edge since the last wait);
        cancellable. `task`: the current task, if the caller knows it already."""
        ready = self.ready
        if fd in ready:
            ready.discard(fd)
            await cancel_shielded_checkpoint()  # (a wait is a checkpoint)
            return
        waiting = self.waiting
        if fd in waiting:
            raise trio.BusyResourceError("another task is already waiting on this socket")
        waiting[fd] = current_task() if task is None else task

        def abort(_: RaiseCancelT) -> Abort:
            waiting.pop(fd, None)
            return Abort.SUCCEEDED

        # (A closure per wait, not one kept per socket: an idle connection waits, and a
        # callable kept per socket cost it 0.3 KiB more of the server's memory.)
        await wait_task_rescheduled(abort)

    def watch(self, fd: int, callback: Callable[[], None]) -> bool:
        """Call `callback` (once) at `fd`'s next edge, if no task waits on it then. False,
        and no watch, when an edge is kept already: input is there, the caller acts now."""
        if fd in self.ready:
            return False
        self.watchers[fd] = callback
        return True

    def unwatch(self, fd: int) -> None:
        """Drop `fd`'s watch (a task is about to wait on it, or its connection ends)."""
        self.watchers.pop(fd, None)

    async def run(self) -> None:
        epoll = self.epoll
        waiting = self.waiting
        watchers = self.watchers
        ready = self.ready
        try:
            while True:
                await trio.lowlevel.wait_readable(epoll.fileno())
                for fd, _ in epoll.poll(0):
                    task = waiting.pop(fd, None)
                    if task is not None:
                        trio.lowlevel.reschedule(task)
                        continue
                    callback = watchers.pop(fd, None) if watchers else None
                    if callback is None:
                        ready.add(fd)
                        continue
                    try:
                        callback()
                    except Exception:  # (one connection's: this task serves them all)
                        log.exception("readiness callback for descriptor %d failed", fd)
        finally:
            epoll.close()


_of_run: trio.lowlevel.RunVar[Readiness | None] = trio.lowlevel.RunVar("pipeparse_readiness")


def readiness() -> Readiness | None:
    """This trio run's `Readiness`, its task started at the first call; None without epoll."""
    try:
        return _of_run.get()
    except LookupError:
        service = Readiness() if hasattr(select, "epoll") else None
        _of_run.set(service)
        if service is not None:
            trio.lowlevel.spawn_system_task(service.run, name="pipeparse readiness")
        return service
