"""The request timeouts of one connection as data, for both drivers (no I/O, no clock).

Only a handler that suspended has a request timeout (`Timer(seq, deadline)` from the protocol;
`Timer(seq, None)` once it is answered). They all have the same length, so they are armed in
deadline order: a queue in that order with the live deadline per request in a dict, where a
disarmed entry is stale and dropped once it comes first. A driver waits for the earliest live
deadline only (`next_deadline`: one trio watchdog task, or one asyncio timer handle per
connection), so a request that is answered in time costs a dict entry and a queue entry, not a
timer of its own.
"""

from __future__ import annotations

import bisect
import math
from collections import deque

__all__ = ["DeadlineQueue"]


class DeadlineQueue:
    """See the module comment."""

    __slots__ = ("deadlines", "horizon", "queue")

    def __init__(self) -> None:
        self.deadlines: dict[int, float] = {}  # request: its live deadline
        self.queue: deque[tuple[float, int]] = deque()  # (deadline, request), in order
        self.horizon = -math.inf  # the latest deadline ever armed

    def set(self, seq: int, deadline: float | None) -> None:
        """Arm request `seq`'s timeout at `deadline` (None: disarm it)."""
        deadlines = self.deadlines
        queue = self.queue
        if deadline is None:
            deadlines.pop(seq, None)
            self._drop_stale()
            return
        deadlines[seq] = deadline
        if deadline > self.horizon:
            self.horizon = deadline
        if not queue or queue[-1][0] <= deadline:
            queue.append((deadline, seq))
        else:
            bisect.insort(queue, (deadline, seq))

    def due(self, now: float) -> list[int]:
        """Take the requests whose live deadline is `now` or earlier, in deadline order."""
        deadlines = self.deadlines
        queue = self.queue
        fired: list[int] = []
        while queue:
            deadline, seq = queue[0]
            if deadlines.get(seq) != deadline:
                queue.popleft()  # stale
            elif deadline <= now:
                queue.popleft()
                del deadlines[seq]
                fired.append(seq)
            else:
                break
        return fired

    def next_deadline(self) -> float | None:
        """The earliest live deadline (None: nothing is armed)."""
        self._drop_stale()
        queue = self.queue
        return queue[0][0] if queue else None

    @property
    def armed(self) -> bool:
        return bool(self.deadlines)

    def _drop_stale(self) -> None:
        deadlines = self.deadlines
        queue = self.queue
        while queue and deadlines.get(queue[0][1]) != queue[0][0]:
            queue.popleft()
