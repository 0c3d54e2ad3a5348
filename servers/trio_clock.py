"""The clock a trio connection's protocol reads: trio's own time, read without a Python call.

`ServerConnection` reads its clock about twice per request (when a request is answered and when
the read deadline may move). trio's `SystemClock.current_time` is Python (its random offset
plus `time.perf_counter()`), about a thousand instructions a call; `SystemTime` computes the
same sum from compiled code (the optional compiled build compiles this module). Any other
clock (`trio.testing.MockClock`, a custom one) is read through its own `current_time`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

__all__ = ["SystemTime", "run_clock"]


class SystemTime:
    """``offset + perf_counter()``: what trio's `SystemClock.current_time` returns."""

    __slots__ = ("offset",)

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def __call__(self) -> float:
        return self.offset + time.perf_counter()


_of_run: trio.lowlevel.RunVar[Callable[[], float]] = trio.lowlevel.RunVar("pipeparse_clock")


def run_clock() -> Callable[[], float]:
    """This trio run's time (the same readings as ``trio.current_time()``), one per run."""
    try:
        return _of_run.get()
    except LookupError:
        clock = trio.lowlevel.current_clock()
        offset = getattr(clock, "offset", None)
        read: Callable[[], float] = clock.current_time
        if type(clock).__name__ == "SystemClock" and type(offset) is float:
            read = SystemTime(offset)
        _of_run.set(read)
        return read
