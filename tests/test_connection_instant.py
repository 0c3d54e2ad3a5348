"""ServerConnection's instant path: a request started with its whole body has no `Exchange`
until something other than a whole response happens to it. These cases mix instant requests
with ones that get an exchange, and check that responses still leave in request order."""

from __future__ import annotations

import pytest

from pipeparse import ServerConnection
from pipeparse._reporting import ReportingConnection
from pipeparse.actions import Action, Close, ShutWrite, Start, Write
from tests.test_connection import answer, bodies_in_order, get, make, post, starts, statuses, wire


def test_an_instant_answer_waits_behind_a_handler_that_suspended() -> None:
    conn, _ = make()
    conn.receive_data(get("/a") + get("/b") + get("/c"))
    a, b, c = starts(conn.actions())
    conn.handler_suspended(a.seq)  # /a goes on later
    conn.respond(b.seq, 200, [], b"b")
    conn.respond(c.seq, 200, [], b"c")
    assert wire(conn.actions()) == b""
    conn.respond(a.seq, 200, [], b"a")
    assert bodies_in_order(wire(conn.actions())) == [b"a", b"b", b"c"]


def test_answers_given_out_of_order_leave_in_order() -> None:
    conn, _ = make()
    conn.receive_data(get("/a") + get("/b") + get("/c"))
    a, b, c = starts(conn.actions())
    conn.respond(c.seq, 200, [], b"c")  # before the two it follows
    conn.respond(b.seq, 200, [], b"b")
    assert wire(conn.actions()) == b""
    conn.respond(a.seq, 200, [], b"a")
    assert bodies_in_order(wire(conn.actions())) == [b"a", b"b", b"c"]


def test_a_streamed_response_between_instant_ones_keeps_its_place() -> None:
    conn, _ = make()
    conn.receive_data(get("/a") + get("/b") + get("/c"))
    a, b, c = starts(conn.actions())
    conn.respond(a.seq, 200, [], b"<a>")
    conn.start_response(b.seq, 200, [])
    conn.respond(c.seq, 200, [], b"<c>")
    conn.send_body(b.seq, b"<b1>")
    conn.send_body(b.seq, b"<b2>", more=False)
    data = wire(conn.actions())
    assert statuses(data) == [200, 200, 200]
    assert data.index(b"<a>") < data.index(b"<b1>") < data.index(b"<b2>") < data.index(b"<c>")


def test_a_request_whose_body_streams_after_an_instant_one_answers_after_it() -> None:
    conn, _ = make(policy="all")
    # /b asks for 100-continue: it starts streamed (it gets its exchange at once), after /a.
    conn.receive_data(get("/a") + post("/b", b"x" * 6000, "Expect: 100-continue\r\n")[:200])
    a, b = starts(conn.actions())
    assert b.body is None
    conn.respond(b.seq, 200, [], b"b")  # (its handler does not read the body)
    conn.respond(a.seq, 200, [], b"a")
    data = wire(conn.actions())
    assert bodies_in_order(data)[:2] == [b"a", b"b"]


def test_a_protocol_error_is_answered_after_instant_requests_started_before_it() -> None:
    conn, _ = make()
    conn.receive_data(get("/a") + get("/b") + b"BAD\r\n\r\n")
    actions = conn.actions()
    assert len(starts(actions)) == 2
    assert wire(actions) == b""  # the 400 waits for /a and /b
    answer(conn, actions)
    out: list[Action] = []
    while more := conn.actions():
        out += more
    assert statuses(wire(out)) == [200, 200, 400]
    assert any(isinstance(x, ShutWrite) for x in out)


def test_a_response_the_core_refuses_leaves_its_request_to_fail_in_order() -> None:
    conn, _ = make()
    conn.receive_data(get("/a") + get("/b"))
    a, b = starts(conn.actions())
    with pytest.raises(RuntimeError, match="Content-Length"):
        conn.respond(a.seq, 200, [(b"content-length", b"5")], b"abc")
    conn.handler_failed(a.seq, RuntimeError("bad response"))
    conn.respond(b.seq, 200, [], b"b")
    data = wire(conn.actions())
    assert statuses(data) == [500, 200]


def test_shutdown_closes_after_the_last_instant_request_only() -> None:
    conn, _ = make()
    conn.receive_data(get("/a") + get("/b"))
    a, b = starts(conn.actions())
    conn.shutdown()
    conn.respond(a.seq, 200, [], b"a")
    conn.respond(b.seq, 200, [], b"b")
    out: list[Action] = []
    while more := conn.actions():
        out += more
    first, second = wire(out).split(b"HTTP/1.1 ")[1:]
    assert b"connection: close" not in first
    assert b"connection: close" in second
    assert any(isinstance(x, ShutWrite) for x in out)  # then the staged close


def test_answers_after_a_closing_response_are_dropped() -> None:
    conn, _ = make()
    conn.receive_data(get("/a") + get("/b"))
    a, b = starts(conn.actions())
    conn.respond(a.seq, 200, [(b"connection", b"close")], b"a")
    conn.respond(b.seq, 200, [], b"b")
    assert statuses(wire(conn.actions())) == [200]


@pytest.mark.parametrize("kind", [ServerConnection, ReportingConnection])
def test_the_idle_keep_alive_timer_counts_from_the_last_answer(kind: type) -> None:
    reported: list[int] = []
    options = {"on_answered": lambda head, status, sent: reported.append(status)}
    clock = [100.0]
    conn = kind(
        clock=lambda: clock[0],
        date=lambda: b"D",
        **(options if kind is ReportingConnection else {}),
    )
    conn.receive_data(get("/a"))
    (a,) = starts(conn.actions())
    clock[0] = 103.0
    conn.respond(a.seq, 200, [], b"a")
    conn.actions()
    clock[0] = 107.0  # 4 s after the answer, 7 s after the request: still open
    conn.timer_expired("read")
    conn.timer_expired("read")
    assert not any(isinstance(x, Close) for x in conn.actions())
    clock[0] = 108.5
    conn.timer_expired("read")
    assert any(isinstance(x, Close) for x in conn.actions())
    assert reported == ([200] if kind is ReportingConnection else [])


def test_in_flight_counts_instant_requests() -> None:
    conn, _ = make()
    conn.receive_data(get("/a") + get("/b"))
    a, b = starts(conn.actions())
    assert conn.in_flight == 2
    conn.respond(a.seq, 200, [], b"a")
    assert conn.in_flight == 1
    conn.respond(b.seq, 200, [], b"b")
    assert conn.in_flight == 0
    assert isinstance(conn.actions()[0], Write)


def test_start_bodies_are_views_of_the_whole_body() -> None:
    conn, _ = make(policy="all")
    conn.receive_data(post("/a", b"hello") + get("/b"))
    actions = conn.actions()
    a, _ = starts(actions)
    assert isinstance(a, Start) and bytes(a.body or b"") == b"hello"
    answer(conn, actions)
    assert bodies_in_order(wire(conn.actions())) == [b"/a:hello", b"/b:"]


def test_nothing_started_after_a_closing_response_may_run() -> None:
    conn, _ = make()
    conn.receive_data(get("/a") + get("/b") + get("/c"))
    a, b, c = starts(conn.actions())
    assert conn.may_start(b.seq)
    conn.respond(b.seq, 200, [(b"connection", b"close")], b"b")  # /b closes, /a still runs
    assert conn.may_start(a.seq)
    assert not conn.may_start(c.seq)
    conn.respond(a.seq, 200, [], b"a")
    assert statuses(wire(conn.actions())) == [200, 200]
