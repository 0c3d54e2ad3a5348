"""The drivers' coroutine trampoline (`servers/trampoline.py`) and request-timeout watchdog
(`_Connection._arm` / `_disarm` / `_watch_timeouts`, `_TaskTimer`), without a client.

`_resume` must behave exactly like ``await coro`` from where the coroutine first suspended:
every value and exception the event loop sends goes on to the coroutine, its result comes back,
and closing it closes the coroutine. The watchdog must cancel exactly the tasks whose handler is
still blocked at its deadline, in deadline order, and never one that was disarmed. Time is trio's
MockClock (autojump): deadlines are checked as virtual times, never measured.
"""

from __future__ import annotations

import inspect
import math
import types
from collections.abc import Generator, Sequence
from typing import Any

import pytest
import trio
import trio.testing

from pipeparse import HttpRequest
from pipeparse.servers.config import ServerConfig
from pipeparse.servers.engine_pipeparse import _Connection, _TaskTimer
from pipeparse.servers.protocol import ResponseSink
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


# -- the watchdog ----------------------------------------------------------------------------

TIMEOUT = 10.0


async def _never_called(request: HttpRequest, sink: ResponseSink) -> None:
    raise AssertionError("no request is served in these tests")


def connection(nursery: trio.Nursery) -> _Connection:
    server, _client = trio.testing.memory_stream_pair()
    conn = _Connection(server, _never_called, ServerConfig(request_timeout=TIMEOUT), None)
    conn.nursery = nursery
    return conn


class Blocked:
    """A task whose handler is blocked: it waits in its timer's scope until cancelled."""

    def __init__(self, name: str, log: list[tuple[str, float]]) -> None:
        self.name = name
        self.log = log
        self.done = trio.Event()
        self.timer: _TaskTimer | None = None

    async def run(self, task_status: trio.TaskStatus[_TaskTimer]) -> None:
        with trio.CancelScope() as scope:
            self.timer = _TaskTimer(scope)
            task_status.started(self.timer)
            await self.done.wait()
            self.log.append((f"{self.name} finished", trio.current_time()))
            return
        self.log.append((f"{self.name} cancelled", trio.current_time()))


def end(conn: _Connection, *tasks: Blocked) -> None:
    """Stop the watchdog and release every task (a broken watchdog then fails, not hangs)."""
    conn.watchdog_scope.cancel()
    for task in tasks:
        task.done.set()


def test_a_timer_starts_disarmed() -> None:
    timer = _TaskTimer(trio.CancelScope())
    assert timer.deadline == math.inf and not timer.fired


def test_firing_cancels_the_scope_and_disarms() -> None:
    scope = trio.CancelScope()
    timer = _TaskTimer(scope)
    timer.deadline = 5.0
    timer.fire()
    assert timer.fired and scope.cancel_called and timer.deadline == math.inf


async def test_a_blocked_handler_is_cancelled_at_its_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[tuple[str, float]] = []
    async with trio.open_nursery() as nursery:
        conn = connection(nursery)
        task = Blocked("a", log)
        timer = await nursery.start(task.run)
        conn._arm(timer)
        assert timer.deadline == TIMEOUT
        await trio.sleep(TIMEOUT + 1)
        assert timer.fired
        end(conn, task)
    assert log == [("a cancelled", TIMEOUT)]


async def test_a_disarmed_handler_is_never_cancelled_and_later_ones_still_are(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[tuple[str, float]] = []
    async with trio.open_nursery() as nursery:
        conn = connection(nursery)
        early, late = Blocked("early", log), Blocked("late", log)
        early_timer = await nursery.start(early.run)
        conn._arm(early_timer)  # deadline 10
        await trio.sleep(3)
        late_timer = await nursery.start(late.run)
        conn._arm(late_timer)  # deadline 13
        await trio.sleep(2)
        conn._disarm(early_timer)  # its handler finished at 5
        early.done.set()
        assert [d for d, _ in conn.timeouts] == [13.0]  # the stale front entry is dropped
        await trio.sleep(20)
        end(conn, early, late)
    assert log == [("early finished", 5.0), ("late cancelled", 13.0)]
    assert not early_timer.fired and late_timer.fired


async def test_handlers_time_out_in_deadline_order_each_in_its_own_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[tuple[str, float]] = []
    async with trio.open_nursery() as nursery:
        conn = connection(nursery)
        tasks = [Blocked(str(i), log) for i in range(3)]
        for i, task in enumerate(tasks):
            conn._arm(await nursery.start(task.run))
            if i < 2:
                await trio.sleep(1)
        await trio.sleep(TIMEOUT * 2)
        end(conn, *tasks)
    assert log == [("0 cancelled", 10.0), ("1 cancelled", 11.0), ("2 cancelled", 12.0)]


async def test_an_idle_watchdog_wakes_for_a_new_entry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With every entry gone, the watchdog parks; the next `_arm` must wake it."""
    log: list[tuple[str, float]] = []
    async with trio.open_nursery() as nursery:
        conn = connection(nursery)
        first = Blocked("first", log)
        first_timer = await nursery.start(first.run)
        conn._arm(first_timer)
        watchdog = conn.watchdog
        await trio.sleep(1)
        conn._disarm(first_timer)
        first.done.set()
        await trio.sleep(TIMEOUT * 3)  # the watchdog wakes for the stale entry, then parks
        assert not conn.timeouts
        second = Blocked("second", log)
        conn._arm(await nursery.start(second.run))  # at 31: deadline 41
        assert conn.watchdog is watchdog  # one watchdog per connection
        await trio.sleep(TIMEOUT * 2)
        end(conn, first, second)
    assert log == [("first finished", 1.0), ("second cancelled", 31.0 + TIMEOUT)]


async def test_the_watchdog_ends_with_its_scope(autojump_clock: trio.testing.MockClock) -> None:
    log: list[tuple[str, float]] = []
    async with trio.open_nursery() as nursery:
        conn = connection(nursery)
        task = Blocked("a", log)
        timer = await nursery.start(task.run)
        conn._arm(timer)
        conn.watchdog_scope.cancel()  # the connection ends before the deadline
        await trio.sleep(TIMEOUT * 2)
        assert not timer.fired
        task.done.set()
    assert log == [("a finished", TIMEOUT * 2)]


async def test_an_entry_left_by_a_finished_handler_is_skipped_not_fired(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A task's handler finished and its next one blocked: the first handler's entry, behind
    a live one, is stale (`_disarm` drops stale entries at the front only); the watchdog must
    skip it and cancel the task at its new deadline."""
    log: list[tuple[str, float]] = []
    async with trio.open_nursery() as nursery:
        conn = connection(nursery)
        a, b = Blocked("a", log), Blocked("b", log)
        conn._arm(await nursery.start(a.run))  # deadline 10
        await trio.sleep(1)
        b_timer = await nursery.start(b.run)
        conn._arm(b_timer)  # deadline 11
        await trio.sleep(1)
        conn._disarm(b_timer)  # its handler finished at 2 ...
        await trio.sleep(3)
        conn._arm(b_timer)  # ... and its next one blocked at 5: deadline 15
        assert [d for d, _ in conn.timeouts] == [10.0, 11.0, 15.0]
        await trio.sleep(TIMEOUT * 2)
        end(conn, a, b)
    assert log == [("a cancelled", 10.0), ("b cancelled", 15.0)]
