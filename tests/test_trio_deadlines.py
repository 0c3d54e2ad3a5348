"""The read deadlines of the trio driver (`servers/trio_deadlines.ReadDeadlines`), and the wait
for input they end (`ReadsStream._wait_input`), without a client.

The service must tell each waiter of each deadline it added, in deadline order and at that
deadline (a deadline added while it sleeps for a later one wakes it sooner), hold waiters
weakly (through their tickets), and be one per trio run. A wait interrupted in the very pass
of the scheduler in which its input came must keep the input and still end by the cancel, not
carry the cancel on to whatever the task does next. Time is trio's MockClock (autojump).
"""

from __future__ import annotations

import gc

import trio
import trio.testing

from pipeparse.servers.apps import plaintext
from pipeparse.servers.config import ServerConfig
from pipeparse.servers.handlers import resolve_app
from pipeparse.servers.trio_deadlines import DeadlineTicket, read_deadlines
from pipeparse.servers.trio_driver import TrioDriver
from pipeparse.servers.trio_handlers import Worker


class Waiter:
    def __init__(self, name: str, told: list[tuple[str, float, float]]) -> None:
        self.name = name
        self.told = told
        self.ticket = DeadlineTicket(self)  # (a cycle, as a driver's is)

    def read_deadline_passed(self, deadline: float) -> None:
        self.told.append((self.name, deadline, trio.current_time()))


async def test_each_deadline_is_told_at_its_time_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    told: list[tuple[str, float, float]] = []
    a, b = Waiter("a", told), Waiter("b", told)
    deadlines = read_deadlines()
    deadlines.add(12.0, a.ticket)
    deadlines.add(10.0, b.ticket)
    deadlines.add(11.0, a.ticket)  # moved: both stay, the waiter tells which is its own
    await trio.sleep(30)
    assert told == [("b", 10.0, 10.0), ("a", 11.0, 11.0), ("a", 12.0, 12.0)]


async def test_an_earlier_deadline_wakes_the_sleeping_service_sooner(
    autojump_clock: trio.testing.MockClock,
) -> None:
    told: list[tuple[str, float, float]] = []
    waiter = Waiter("w", told)
    deadlines = read_deadlines()
    deadlines.add(100.0, waiter.ticket)
    await trio.sleep(1)  # it sleeps until 100 now
    deadlines.add(5.0, waiter.ticket)
    await trio.sleep(10)
    assert told == [("w", 5.0, 5.0)]


async def test_it_holds_waiters_weakly(autojump_clock: trio.testing.MockClock) -> None:
    told: list[tuple[str, float, float]] = []
    deadlines = read_deadlines()
    deadlines.add(5.0, Waiter("gone", told).ticket)  # nothing else refers to it
    gc.collect()
    await trio.sleep(10)
    assert told == []


async def test_one_service_per_run() -> None:
    assert read_deadlines() is read_deadlines()


class InterruptedAsItReads(TrioDriver):
    """A kick lands in the same pass of the scheduler as the input (the wait has ended, the
    task has not run yet): simulated by interrupting just before the read."""

    def _read_ready(self, size: int) -> int:
        self._interrupt_wait()
        return super()._read_ready(size)


async def test_an_interrupt_that_comes_with_the_input_keeps_it_and_ends_the_wait() -> None:
    ours, theirs = trio.socket.socketpair()
    handler = resolve_app(plaintext, "native").handler
    driver = InterruptedAsItReads(trio.SocketStream(ours), handler, ServerConfig(), None)
    driver.unwatch()  # (a socket the run's `Readiness` watches is never waited on)
    await theirs.send(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n")
    driver.eager_misses = 2  # (it waits, instead of trying to read at once)
    driver.unread = False
    went_on = False
    with trio.CancelScope() as scope:
        await driver._receive(Worker(scope, True))
        went_on = True  # (without the cancel taken there, the next checkpoint would get it)
    assert scope.cancelled_caught and not went_on
    assert driver.wait_scope is None
    assert [type(a).__name__ for a in driver.conn.actions()][:1] == ["Start"]  # input kept
    ours.close()
    theirs.close()
