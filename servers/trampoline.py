"""`resume`: the coroutine trampoline both drivers use to run handlers inline.

A driver calls a handler's coroutine with one ``coro.send(None)``. Most handlers finish there,
with no task and no switch. One that suspends hands back its trap (trio's, or an asyncio
future); the driver then awaits ``resume(coro, trap)`` from a task of its own, which goes on
exactly as ``await coro`` would have from that point. No event loop is imported here.
"""

from __future__ import annotations

import types
from collections.abc import Coroutine, Generator
from typing import Any

__all__ = ["resume"]


@types.coroutine
def resume(coro: Coroutine[Any, Any, Any], trap: Any) -> Generator[Any, Any, Any]:
    """Go on awaiting `coro`, which suspended on `trap` when first sent None; its result.

    Exactly what ``await coro`` would have done from there: `trap` goes to the event loop, and
    every value or exception the loop sends back goes on to the coroutine.
    """
    while True:
        try:
            value = yield trap
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                trap = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                trap = coro.send(value)
            except StopIteration as stop:
                return stop.value
