"""`run_inline` and `resume`: the coroutine trampoline both drivers use to run handlers inline.

A driver calls a handler and runs its coroutine with one ``coro.send(None)`` (`run_inline`).
Most handlers finish there, with no task and no switch. One that suspends hands back its trap
(trio's, or an asyncio future); the driver then awaits ``resume(coro, trap)`` from a task of
its own, which goes on exactly as ``await coro`` would have from that point. No event loop is
imported here.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Coroutine, Generator
from typing import Any, TypeVar

from pipeparse import HttpRequest

from .protocol import Handler, NativeHandler, ResponseSink

__all__ = ["resume", "run_inline"]

SinkT = TypeVar("SinkT", bound=ResponseSink)


def run_inline(
    native: NativeHandler | None,
    handler: Handler,
    request: HttpRequest,
    make_sink: Callable[[int], SinkT],
) -> tuple[SinkT | None, Coroutine[Any, Any, Any] | None, Any]:
    """Call the handler of `request` (`native` when there is one, else `handler` with a new
    sink, ``make_sink(request.seq)``) and run it until it finishes or first suspends:
    ``(sink, None, its result)`` when it finished, ``(sink, its coroutine, the trap it
    suspended on)`` when it did not (go on with `resume`). What the handler raises propagates.
    """
    sink: SinkT | None = None
    coro: Coroutine[Any, Any, Any]
    if native is not None:
        coro = native(request)
    else:
        sink = make_sink(request.seq)
        coro = handler(request, sink)
    try:
        return sink, coro, coro.send(None)
    except StopIteration as stop:
        return sink, None, stop.value


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
