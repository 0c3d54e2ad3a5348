"""`run_clock`: trio's time as the protocol reads it, the same readings as trio's clock."""

from __future__ import annotations

import trio
import trio.testing

from pipeparse.servers.trio_clock import SystemTime, run_clock


def test_on_the_system_clock_it_reads_trio_time_without_trio_call() -> None:
    async def main() -> None:
        read = run_clock()
        assert isinstance(read, SystemTime) and run_clock() is read  # (one per run)
        before = trio.current_time()
        now = read()
        after = trio.current_time()
        assert before <= now <= after

    trio.run(main)


def test_any_other_clock_is_read_through_its_own_current_time() -> None:
    clock = trio.testing.MockClock()

    async def main() -> None:
        read = run_clock()
        assert not isinstance(read, SystemTime)
        start = read()
        clock.jump(5.0)
        assert read() == start + 5.0 == trio.current_time()

    trio.run(main, clock=clock)
