"""The request timeouts of one trio connection: deadlines as data, one watchdog task.

Only a handler that suspended has a request timeout (`Timer(seq, deadline)` from the protocol;
`Timer(seq, None)` when it is answered); the deadlines are data (`servers/deadline_queue.py`).
One watchdog task, started at the first deadline, sleeps until the earliest live one and tells
the driver (`timer_fired`), so no request enters a cancel scope of its own, and the watchdog
wakes about once per timeout.
"""

from __future__ import annotations

import math
from typing import Protocol

import trio

from .deadline_queue import DeadlineQueue

__all__ = ["RequestTimers", "TimerDriver"]


class TimerDriver(Protocol):
    nursery: trio.Nursery

    def timer_fired(self, seq: int) -> None: ...

    async def perform_soon(self) -> None: ...


class RequestTimers:
    """See the module comment."""

    __slots__ = ("driver", "lot", "pending", "scope", "wake_at")

    def __init__(self, driver: TimerDriver) -> None:
        self.driver = driver
        self.pending = DeadlineQueue()
        self.lot: trio.lowlevel.ParkingLot | None = None  # where the watchdog waits
        self.scope = trio.CancelScope()
        self.wake_at = math.inf  # when the watchdog looks again (unless woken before)

    def set(self, seq: int, deadline: float | None) -> None:
        """Arm request `seq`'s timeout at `deadline` (None: disarm it)."""
        self.pending.set(seq, deadline)
        if deadline is None:
            return
        if self.lot is None:  # the connection's first: start the watchdog
            self.lot = trio.lowlevel.ParkingLot()
            self.driver.nursery.start_soon(self._watch, self.lot, self.scope)
        elif deadline < self.wake_at:  # (not in the usual case: deadlines come in order)
            self.wake_at = deadline
            self.lot.unpark_all()

    async def _watch(self, lot: trio.lowlevel.ParkingLot, scope: trio.CancelScope) -> None:
        pending = self.pending
        with scope:
            while True:
                now = trio.current_time()
                fired = pending.due(now)
                for seq in fired:
                    self.driver.timer_fired(seq)
                if fired:
                    await self.driver.perform_soon()
                    continue
                # Until the earliest live deadline; with none, until the latest one armed:
                # no request armed since can come due before it, so a request answered
                # before the watchdog looked does not have it park and be woken by the next.
                wake_at = pending.next_deadline()
                if wake_at is None:
                    wake_at = pending.horizon if pending.horizon > now else math.inf
                self.wake_at = wake_at
                with trio.move_on_at(wake_at):
                    await lot.park()

    def retire(self) -> bool:
        """The connection is idle: end the watchdog if it waits for nothing (the driver
        makes a new one at the next deadline). True if it ended."""
        if self.pending.armed:
            return False
        self.stop()
        return True

    def stop(self) -> None:
        self.scope.cancel()
