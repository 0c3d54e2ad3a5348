"""The request timeouts of one trio connection: deadlines as data, one watchdog task.

Only a handler that suspended has a request timeout (`Timer(seq, deadline)` from the protocol;
`Timer(seq, None)` when it is answered). The deadlines are kept in order (they all have the
same length, so they are armed in order) with the live one per request in a dict; a disarmed
entry is stale and dropped when it comes first. One watchdog task, started at the first
deadline, sleeps until the earliest live one and tells the driver (`timer_fired`), so no
request enters a cancel scope of its own, and the watchdog wakes about once per timeout.
"""

from __future__ import annotations

import bisect
from collections import deque
from typing import Protocol

import trio

__all__ = ["RequestTimers", "TimerDriver"]


class TimerDriver(Protocol):
    nursery: trio.Nursery

    def timer_fired(self, seq: int) -> None: ...

    async def perform_soon(self) -> None: ...


class RequestTimers:
    """See the module comment."""

    __slots__ = ("deadlines", "driver", "lot", "queue", "scope")

    def __init__(self, driver: TimerDriver) -> None:
        self.driver = driver
        self.deadlines: dict[int, float] = {}
        self.queue: deque[tuple[float, int]] = deque()
        self.lot: trio.lowlevel.ParkingLot | None = None  # where the watchdog waits
        self.scope = trio.CancelScope()

    def set(self, seq: int, deadline: float | None) -> None:
        """Arm request `seq`'s timeout at `deadline` (None: disarm it)."""
        deadlines = self.deadlines
        queue = self.queue
        if deadline is None:
            deadlines.pop(seq, None)
            while queue and deadlines.get(queue[0][1]) != queue[0][0]:
                queue.popleft()  # stale
            return
        deadlines[seq] = deadline
        if not queue or queue[-1][0] <= deadline:
            queue.append((deadline, seq))
        else:
            bisect.insort(queue, (deadline, seq))
        if self.lot is None:  # the connection's first: start the watchdog
            self.lot = trio.lowlevel.ParkingLot()
            self.driver.nursery.start_soon(self._watch, self.lot, self.scope)
        elif self.lot:  # it waits for an entry
            self.lot.unpark_all()

    async def _watch(self, lot: trio.lowlevel.ParkingLot, scope: trio.CancelScope) -> None:
        deadlines = self.deadlines
        queue = self.queue
        with scope:
            while True:
                now = trio.current_time()
                fired = False
                while queue:
                    deadline, seq = queue[0]
                    if deadlines.get(seq) != deadline:
                        queue.popleft()  # stale
                    elif deadline <= now:
                        queue.popleft()
                        del deadlines[seq]
                        self.driver.timer_fired(seq)
                        fired = True
                    else:
                        break
                if fired:
                    await self.driver.perform_soon()
                elif queue:
                    await trio.sleep_until(queue[0][0])
                else:
                    await lot.park()

    def retire(self) -> bool:
        """The connection is idle: end the watchdog if it waits for nothing (the driver
        makes a new one at the next deadline). True if it ended."""
        if self.deadlines:
            return False
        self.stop()
        return True

    def stop(self) -> None:
        self.scope.cancel()
