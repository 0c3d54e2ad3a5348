"""The read deadlines of every trio connection in a run: one heap, one system task.

A connection's leader waits for input with no deadline and no cancel scope of its own: trio's
`CancelScope` costs about 25 Python calls to enter and leave, which at depth 1 (one wait per
request) was the largest part of the driver's own cost. The protocol's read deadline
(keep-alive, header and body timeouts, the idle trim) is instead kept here, as data: a driver
adds its deadline when the protocol moves it (lazily, so about once per two waits of a busy
connection), and one task per trio run sleeps until the earliest one and tells the driver
(`ReadWaiter.read_deadline_passed`), which interrupts its leader's wait if it waits and
otherwise notes it for the next one. A moved or cleared deadline leaves its entry stale: the
driver ignores a deadline that is no longer its own. Entries hold a driver's `DeadlineTicket`
weakly (the driver holds it; a driver compiled with mypyc cannot be referenced weakly itself),
so a closed connection is not kept until its last deadline.
"""

from __future__ import annotations

import heapq
import itertools
import math
import weakref
from typing import Protocol

import trio

__all__ = ["DeadlineTicket", "ReadWaiter", "read_deadlines"]


class ReadWaiter(Protocol):
    def read_deadline_passed(self, deadline: float) -> None: ...


class DeadlineTicket:
    """What the heap holds (weakly) for one waiter, which holds the ticket."""

    __slots__ = ("__weakref__", "waiter")

    def __init__(self, waiter: ReadWaiter) -> None:
        self.waiter = waiter


class ReadDeadlines:
    """See the module comment: one per trio run (`read_deadlines`)."""

    __slots__ = ("count", "heap", "sleep")

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, weakref.ref[DeadlineTicket]]] = []
        self.count = itertools.count()  # (equal deadlines never compare their drivers)
        self.sleep: trio.CancelScope | None = None  # the task's sleep until the earliest

    def add(self, deadline: float, ticket: DeadlineTicket) -> None:
        """Tell the ticket's waiter when `deadline` passes (if the ticket is still held)."""
        heapq.heappush(self.heap, (deadline, next(self.count), weakref.ref(ticket)))
        sleep = self.sleep
        if sleep is not None and deadline < sleep.deadline:
            sleep.deadline = deadline

    async def run(self) -> None:
        heap = self.heap
        while True:
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as sleep:
                self.sleep = sleep
                await trio.sleep_forever()
            self.sleep = None
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                deadline, _, ref = heapq.heappop(heap)
                ticket = ref()
                if ticket is not None:
                    ticket.waiter.read_deadline_passed(deadline)


_of_run: trio.lowlevel.RunVar[ReadDeadlines] = trio.lowlevel.RunVar("pipeparse_read_deadlines")


def read_deadlines() -> ReadDeadlines:
    """This trio run's `ReadDeadlines`, its task started at the first call."""
    try:
        return _of_run.get()
    except LookupError:
        deadlines = ReadDeadlines()
        _of_run.set(deadlines)
        trio.lowlevel.spawn_system_task(deadlines.run, name="pipeparse read deadlines")
        return deadlines
