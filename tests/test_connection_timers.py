"""ServerConnection's read timer is lazy: armed when it must fire sooner than the one already
armed, or moved later when that one is due within half of the new wait (so a busy connection's
timer never fires early, and moves about twice per wait); one that fires early anyway is armed
again for the deadline that applies then, or left off while none does (requests in flight)."""

from __future__ import annotations

from pipeparse import ConnectionTimeouts
from pipeparse.actions import Action, Close, Timer
from tests.test_connection import answer, get, kinds, make, starts, statuses, wire


def read_timers(actions: list[Action]) -> list[float | None]:
    return [a.deadline for a in actions if isinstance(a, Timer) and a.key == "read"]


def test_a_busy_connection_arms_no_read_timer_per_request() -> None:
    conn, clock = make(timeouts=ConnectionTimeouts(keep_alive=5.0))
    assert read_timers(conn.actions()) == [105.0]  # idle, no receive block yet: keep-alive
    conn.receive_data(get("/first"))
    answer(conn, conn.actions())
    assert read_timers(conn.actions()) == [100.05]  # a block now: the trim comes first
    timers: list[float | None] = []
    for i in range(10):
        clock.now = 100.001 * (1 + i / 1e5)
        conn.receive_data(get(f"/{i}"))
        acts = conn.actions()
        answer(conn, acts)
        timers += read_timers(acts) + read_timers(conn.actions())
    assert timers == []  # each deadline was later than the armed one: nothing to do


def test_a_read_timer_that_fires_early_is_armed_for_the_deadline_that_applies() -> None:
    conn, clock = make(timeouts=ConnectionTimeouts(keep_alive=5.0))
    conn.actions()
    clock.now = 100.04
    conn.receive_data(get("/a"))
    answer(conn, conn.actions())
    conn.actions()  # idle again since 100.04: the trim moves to 100.09
    clock.now = 100.05
    conn.timer_expired("read")  # (the driver had not moved its timer yet)
    assert read_timers(conn.actions()) == [100.09]
    assert conn.buffer.block_size > 0  # not trimmed yet


def test_a_busy_connections_read_timer_moves_before_it_is_due_about_twice_per_wait() -> None:
    conn, clock = make(timeouts=ConnectionTimeouts(keep_alive=5.0))
    conn.actions()
    armed: list[float] = []
    for i in range(40):  # a request every 12 ms, for 480 ms: the trim (50 ms) never comes
        clock.now = 100.0 + 0.012 * i
        conn.receive_data(get(f"/{i}"))
        answer(conn, conn.actions())
        for deadline in read_timers(conn.actions()):
            assert deadline is not None
            armed.append(deadline)
        assert armed and armed[-1] > clock.now + 0.012  # never due before the next request
    assert 480 / 50 <= len(armed) <= 2 * 480 / 50 + 1


def test_a_read_timer_that_fires_while_requests_run_is_left_off() -> None:
    conn, clock = make(timeouts=ConnectionTimeouts(keep_alive=5.0))
    conn.actions()
    conn.receive_data(get("/a"))
    (a,) = starts(conn.actions())
    clock.now = 100.05
    conn.timer_expired("read")
    assert read_timers(conn.actions()) == []  # nothing applies while /a runs
    clock.now = 101.0
    conn.respond(a.seq, 200, [], b"a")
    acts = conn.actions()
    assert statuses(wire(acts)) == [200]
    assert read_timers(acts) == [101.05]  # idle again: armed again


def test_a_header_timeout_shorter_than_the_armed_timer_arms_it_sooner() -> None:
    conn, clock = make(timeouts=ConnectionTimeouts(keep_alive=5.0, header=1.0))
    conn.receive_data(get("/a"))
    answer(conn, conn.actions())
    conn.actions()
    clock.now = 100.05
    conn.timer_expired("read")  # the trim: keep-alive (105) is armed next
    assert read_timers(conn.actions()) == [105.0]
    clock.now = 100.1
    conn.receive_data(b"GET / HTTP/1.1\r\nHo")
    assert read_timers(conn.actions()) == [101.1]
    clock.now = 101.1
    conn.timer_expired("read")
    assert statuses(wire(conn.actions())) == [408]


def test_a_fixed_buffer_arms_no_trim_only_keep_alive() -> None:
    conn, clock = make(fixed_buffer=True, timeouts=ConnectionTimeouts(keep_alive=5.0))
    conn.receive_data(get("/a"))
    answer(conn, conn.actions())
    assert read_timers(conn.actions()) == [105.0]  # (a trim would give nothing back)
    clock.now = 105.0
    conn.timer_expired("read")
    acts = conn.actions()
    assert kinds(acts) == ["Close"]
    assert any(isinstance(a, Close) for a in acts)
