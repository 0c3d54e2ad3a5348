"""The trio driver's request-timeout watchdog (`servers/trio_timers.RequestTimers`), without a
client: deadlines as data, one watchdog task per connection.

It must report exactly the requests still armed at their deadline (`timer_fired`), in deadline
order, each at its own deadline, and never one that was disarmed; a re-armed request counts
from its new deadline; an idle watchdog wakes for a new entry, and retires only when nothing is
armed. Time is trio's MockClock (autojump): deadlines are checked as virtual times.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing

from pipeparse.servers.trio_timers import RequestTimers


class Driver:
    """What `RequestTimers` needs of the driver: a nursery, and where a firing is reported."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.fired: list[tuple[int, float]] = []
        self.performed = 0

    def timer_fired(self, seq: int) -> None:
        self.fired.append((seq, trio.current_time()))

    async def perform_soon(self) -> None:
        self.performed += 1


@asynccontextmanager
async def watching() -> AsyncIterator[tuple[Driver, RequestTimers]]:
    """A connection's `RequestTimers` and its driver; the watchdog stops at the end."""
    async with trio.open_nursery() as nursery:
        driver = Driver(nursery)
        timers = RequestTimers(driver)
        yield driver, timers
        timers.stop()


def watchdogs() -> int:
    """The watchdog tasks alive now (`RequestTimers._watch`)."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    count = 0
    tasks = [root]
    while tasks:
        task = tasks.pop()
        count += task.name.endswith("_watch")
        tasks.extend(t for n in task.child_nurseries for t in n.child_tasks)
    return count


async def test_an_armed_request_fires_at_its_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with watching() as (driver, timers):
        timers.set(0, 10.0)
        await trio.sleep(30)
        assert driver.fired == [(0, 10.0)]
        assert driver.performed == 1  # what the protocol does about it is performed at once


async def test_a_disarmed_request_never_fires_and_later_ones_still_do(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with watching() as (driver, timers):
        timers.set(0, 10.0)
        timers.set(1, 13.0)
        await trio.sleep(5)
        timers.set(0, None)  # its handler finished at 5
        assert [d for d, _ in timers.pending.queue] == [13.0]  # the stale front entry is dropped
        await trio.sleep(30)
        assert driver.fired == [(1, 13.0)]


async def test_requests_fire_in_deadline_order_each_at_its_own(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with watching() as (driver, timers):
        for seq, deadline in ((2, 12.0), (0, 10.0), (1, 11.0)):  # armed out of order
            timers.set(seq, deadline)
        await trio.sleep(30)
        assert driver.fired == [(0, 10.0), (1, 11.0), (2, 12.0)]


async def test_a_stale_entry_behind_a_live_one_is_skipped_and_the_new_deadline_kept(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Request 1 was disarmed while behind request 0 (only the front is cleaned at once), then
    armed again: its old entry must not fire it early."""
    async with watching() as (driver, timers):
        timers.set(0, 10.0)
        timers.set(1, 11.0)
        timers.set(1, None)
        timers.set(1, 15.0)
        assert [d for d, _ in timers.pending.queue] == [10.0, 11.0, 15.0]
        await trio.sleep(30)
        assert driver.fired == [(0, 10.0), (1, 15.0)]


async def test_an_idle_watchdog_wakes_for_a_new_entry_and_there_is_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with watching() as (driver, timers):
        timers.set(0, 10.0)
        await trio.sleep(1)
        timers.set(0, None)
        await trio.sleep(30)  # nothing armed: the watchdog parks
        timers.set(1, 41.0)
        timers.set(2, 42.0)
        await trio.testing.wait_all_tasks_blocked()
        assert watchdogs() == 1  # one per connection
        await trio.sleep(30)
        assert driver.fired == [(1, 41.0), (2, 42.0)]


async def test_retire_ends_an_idle_watchdog_only(autojump_clock: trio.testing.MockClock) -> None:
    async with watching() as (driver, timers):
        timers.set(0, 10.0)
        await trio.sleep(1)
        assert not timers.retire()  # request 0 is armed: it stays
        assert watchdogs() == 1
        timers.set(0, None)
        assert timers.retire()
        await trio.testing.wait_all_tasks_blocked()
        assert watchdogs() == 0
    assert driver.fired == []


async def test_stop_ends_the_watchdog_before_any_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with watching() as (driver, timers):
        timers.set(0, 10.0)
        await trio.sleep(1)
        timers.stop()  # the connection ended
        await trio.sleep(30)
    assert driver.fired == []
