"""The drivers' coroutine trampoline (`servers/trampoline.py`), without a client.

`_resume` must behave exactly like ``await coro`` from where the coroutine first suspended:
every value and exception the event loop sends goes on to the coroutine, its result comes back,
and closing it closes the coroutine. Time is trio's MockClock (autojump): never measured.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Generator, Sequence
from typing import Any

import pytest
import trio
import trio.testing

from pipeparse import HttpRequest
from pipeparse.servers.trampoline import resume as _resume
from pipeparse.servers.trampoline import run_inline

# -- the trampoline, with plain yields for traps (no event loop) ---------------------------


class _Sink:
    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.started = False

    async def start(self, status: int, headers: Sequence[tuple[bytes, bytes]]) -> None: ...

    async def send(self, data: bytes | bytearray | memoryview, more: bool = False) -> None: ...


def _request(seq: int = 7) -> HttpRequest:
    return HttpRequest(b"GET", b"/", b"1.1", (), seq, b"", None, None)  # type: ignore[arg-type]


async def _answers(request: HttpRequest) -> str:
    return "answer"


async def _waits(request: HttpRequest) -> str:
    return str(await trap("wait"))


async def _handles(request: HttpRequest, sink: Any) -> None:
    assert sink.seq == request.seq


def test_run_inline_calls_a_native_handler_without_a_sink_and_returns_its_result() -> None:
    made: list[int] = []

    def make_sink(seq: int) -> _Sink:
        made.append(seq)
        return _Sink(seq)

    sink, coro, result = run_inline(_answers, _handles, _request(), make_sink)  # type: ignore[arg-type]
    assert (sink, coro, result) == (None, None, "answer")
    assert made == []


def test_run_inline_gives_a_handler_a_sink_for_its_request() -> None:
    sink, coro, result = run_inline(None, _handles, _request(3), _Sink)
    assert isinstance(sink, _Sink) and sink.seq == 3
    assert coro is None and result is None


def test_run_inline_hands_back_a_suspended_coroutine_and_its_trap() -> None:
    sink, coro, trap_ = run_inline(_waits, _handles, _request(), _Sink)  # type: ignore[arg-type]
    assert sink is None and trap_ == "wait" and coro is not None
    resumed = _resume(coro, trap_)
    assert resumed.send(None) == "wait"
    with pytest.raises(StopIteration) as stop:
        resumed.send(42)
    assert stop.value.value == "42"


def test_run_inline_lets_what_the_handler_raises_propagate() -> None:
    async def fails(request: HttpRequest) -> str:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        run_inline(fails, _handles, _request(), _Sink)  # type: ignore[arg-type]


@types.coroutine
def trap(name: str) -> Generator[str, Any, Any]:
    """Suspend with `name` as the trap; return what the loop sends back."""
    return (yield name)


async def adds_two_values() -> int:
    a = await trap("first")
    b = await trap("second")
    return int(a) + int(b)


def started(coro: Any) -> Any:
    """`coro` sent None once, as the engine runs a handler inline: its first trap."""
    return coro.send(None)


def test_the_first_trap_goes_out_first_then_values_go_in_and_the_result_comes_back() -> None:
    coro = adds_two_values()
    first = started(coro)
    assert first == "first"
    resumed = _resume(coro, first)
    assert resumed.send(None) == "first"  # the trap the coroutine suspended on
    assert resumed.send(10) == "second"  # 10 went to the coroutine, which suspended again
    with pytest.raises(StopIteration) as stop:
        resumed.send(5)
    assert stop.value.value == 15


def test_an_exception_thrown_in_reaches_the_coroutine_which_may_handle_it() -> None:
    async def recovers() -> str:
        try:
            await trap("wait")
        except KeyError as exc:
            return f"handled {exc.args[0]}"
        return "not thrown"

    coro = recovers()
    resumed = _resume(coro, started(coro))
    resumed.send(None)
    with pytest.raises(StopIteration) as stop:
        resumed.throw(KeyError("k"))
    assert stop.value.value == "handled k"


def test_an_exception_the_coroutine_does_not_handle_propagates() -> None:
    async def waits() -> None:
        await trap("wait")

    coro = waits()
    resumed = _resume(coro, started(coro))
    resumed.send(None)
    with pytest.raises(ValueError, match="boom"):
        resumed.throw(ValueError("boom"))


def test_the_coroutine_may_suspend_again_after_handling_a_thrown_exception() -> None:
    async def retries() -> str:
        try:
            await trap("try")
        except KeyError:
            return str(await trap("again"))
        return "no"

    coro = retries()
    resumed = _resume(coro, started(coro))
    resumed.send(None)
    assert resumed.throw(KeyError("k")) == "again"
    with pytest.raises(StopIteration) as stop:
        resumed.send("done")
    assert stop.value.value == "done"


def test_closing_the_trampoline_closes_the_coroutine() -> None:
    cleaned: list[str] = []

    async def cleans_up() -> None:
        try:
            await trap("wait")
        finally:
            cleaned.append("finally")

    coro = cleans_up()
    resumed = _resume(coro, started(coro))
    resumed.send(None)
    resumed.close()
    assert cleaned == ["finally"]
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED  # not merely abandoned


# -- the trampoline under trio ---------------------------------------------------------------


async def test_under_trio_it_matches_awaiting_the_coroutine() -> None:
    async def handler(n: int) -> list[int]:
        seen = []
        for i in range(n):
            await trio.sleep(0)
            seen.append(i)
        return seen

    coro = handler(3)
    assert await _resume(coro, coro.send(None)) == await handler(3)


async def test_under_trio_a_cancellation_reaches_the_handler(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events: list[str] = []

    async def handler() -> None:
        try:
            await trio.sleep(100)
            events.append("slept")
        except trio.Cancelled:
            events.append("cancelled")
            raise

    coro = handler()
    with trio.move_on_after(1) as scope:  # (the handler's first step enters scopes too)
        await _resume(coro, coro.send(None))
    assert scope.cancelled_caught
    assert events == ["cancelled"]
    assert trio.current_time() == 1
