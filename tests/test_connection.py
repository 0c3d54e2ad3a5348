"""ServerConnection without I/O: event sequences in, actions out."""

from __future__ import annotations

import re
from typing import Any

import pytest

from pipeparse import ConnectionTimeouts, Limits, ProtocolError, ServerConnection
from pipeparse.actions import (
    Action,
    BodyData,
    BodyEnd,
    BodyError,
    Cancel,
    Close,
    PauseReading,
    ResumeReading,
    Start,
    Timer,
    Write,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(**kw: Any) -> tuple[ServerConnection, Clock]:
    clock = Clock()
    conn = ServerConnection(clock=clock, date=lambda: b"D", **kw)
    return conn, clock


def get(target: str = "/", extra: str = "", version: str = "1.1") -> bytes:
    return f"GET {target} HTTP/{version}\r\nHost: x\r\n{extra}\r\n".encode()


def post(target: str, body: bytes, extra: str = "") -> bytes:
    head = f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


def starts(actions: list[Action]) -> list[Start]:
    return [a for a in actions if isinstance(a, Start)]


def wire(actions: list[Action]) -> bytes:
    return b"".join(b"".join(bytes(p) for p in a.parts) for a in actions if isinstance(a, Write))


def kinds(actions: list[Action]) -> list[str]:
    return [type(a).__name__ for a in actions if not isinstance(a, Timer)]


def answer(conn: ServerConnection, actions: list[Action]) -> None:
    """An instant handler for every Start: 200 with the target (and body) as the body."""
    for a in starts(actions):
        conn.respond(a.seq, 200, [], a.head.target + b":" + bytes(a.body or b""))


def statuses(data: bytes) -> list[int]:
    return [int(s) for s in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)]


def bodies_in_order(data: bytes) -> list[bytes]:
    out = []
    for part in data.split(b"HTTP/1.1 ")[1:]:
        out.append(part.split(b"\r\n\r\n", 1)[1])
    return out


def test_pipelined_requests_start_together_and_answers_leave_in_one_write() -> None:
    conn, _ = make()
    conn.receive_data(get("/a") + get("/b") + get("/c"))
    acts = conn.actions()
    assert [a.head.target for a in starts(acts)] == [b"/a", b"/b", b"/c"]
    # Answered out of order: they still leave in request order, in one Write.
    conn.respond(2, 200, [], b"c")
    conn.respond(0, 200, [], b"a")
    conn.respond(1, 200, [], b"b")
    acts = conn.actions()
    writes = [a for a in acts if isinstance(a, Write)]
    assert len(writes) == 1
    assert bodies_in_order(wire(acts)) == [b"a", b"b", b"c"]
    assert conn.state.value == "open"


def test_response_of_a_later_request_waits_for_the_earlier_one() -> None:
    conn, _ = make()
    conn.receive_data(get("/a") + get("/b"))
    conn.actions()
    conn.respond(1, 200, [], b"b")
    assert wire(conn.actions()) == b""
    conn.respond(0, 200, [], b"a")
    assert bodies_in_order(wire(conn.actions())) == [b"a", b"b"]


@pytest.mark.parametrize(
    ("policy", "first_wave"),
    [
        ("safe", [b"/1"]),  # the POST waits for the GET, the GET after it for the POST
        ("all", [b"/1", b"/2", b"/3"]),
        ("serial", [b"/1"]),
    ],
)
def test_dispatch_policies(policy: str, first_wave: list[bytes]) -> None:
    conn, _ = make(policy=policy)
    conn.receive_data(get("/1") + post("/2", b"x") + get("/3"))
    acts = conn.actions()
    assert [a.head.target for a in starts(acts)] == first_wave
    seen = list(first_wave)
    while len(seen) < 3:
        for a in starts(acts):
            conn.respond(a.seq, 200, [], b"")
        acts = conn.actions()
        seen += [a.head.target for a in starts(acts)]
    assert seen == [b"/1", b"/2", b"/3"]


def test_safe_policy_runs_safe_requests_together_and_unsafe_alone() -> None:
    conn, _ = make(policy="safe")
    conn.receive_data(get("/1") + get("/2") + post("/3", b"") + get("/4"))
    acts = conn.actions()
    assert [a.head.target for a in starts(acts)] == [b"/1", b"/2"]
    answer(conn, acts)
    acts = conn.actions()
    assert [a.head.target for a in starts(acts)] == [b"/3"]
    answer(conn, acts)
    assert [a.head.target for a in starts(conn.actions())] == [b"/4"]


def test_connection_close_request_is_the_last_processed() -> None:
    conn, _ = make()
    conn.receive_data(get("/a", "Connection: close\r\n") + get("/never"))
    acts = conn.actions()
    assert [a.head.target for a in starts(acts)] == [b"/a"]
    answer(conn, acts)
    acts = conn.actions()
    assert kinds(acts) == ["Write", "ShutWrite"]
    assert b"connection: close" in wire(acts)
    assert conn.state.value == "lingering"
    conn.receive_eof()
    assert kinds(conn.actions()) == ["Close"]


def test_http10_closes_after_its_response_and_keep_alive_keeps_it_open() -> None:
    conn, _ = make()
    conn.receive_data(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    acts = conn.actions()
    answer(conn, acts)
    data = wire(conn.actions())
    assert b"connection: keep-alive" in data
    conn.receive_data(b"GET /b HTTP/1.0\r\n\r\n")
    acts = conn.actions()
    answer(conn, acts)
    acts = conn.actions()
    assert b"connection: close" in wire(acts)
    assert "ShutWrite" in kinds(acts)


def test_protocol_error_after_valid_requests_is_answered_after_them_then_close() -> None:
    conn, _ = make()
    conn.receive_data(get("/a") + get("/b") + b"BAD REQUEST\r\n\r\n" + get("/never"))
    acts = conn.actions()
    assert [a.head.target for a in starts(acts)] == [b"/a", b"/b"]
    answer(conn, acts)
    acts = conn.actions()
    data = wire(acts)
    assert statuses(data) == [200, 200, 400]
    assert b"/never" not in data
    assert kinds(acts)[-1] == "ShutWrite"
    assert not starts(acts)


def test_connect_is_501_and_nothing_after_it_runs() -> None:
    conn, _ = make()
    conn.receive_data(b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n" + get("/never"))
    acts = conn.actions()
    assert not starts(acts)
    assert statuses(wire(acts)) == [501]
    assert kinds(acts)[-1] == "ShutWrite"


def test_empty_lines_before_a_request_are_ignored_up_to_the_limit() -> None:
    conn, _ = make(limits=Limits(max_empty_lines=2))
    conn.receive_data(b"\r\n\r\n" + get("/a"))
    acts = conn.actions()
    assert [a.head.target for a in starts(acts)] == [b"/a"]
    answer(conn, acts)
    conn.actions()
    conn.receive_data(b"\r\n\r\n\r\n" + get("/b"))
    acts = conn.actions()
    assert not starts(acts)
    assert statuses(wire(acts)) == [400]


def test_fed_byte_by_byte_gives_the_same_answers() -> None:
    stream = get("/a") + post("/b", b"hello") + get("/c")
    conn, _ = make(policy="all")
    seen: list[bytes] = []
    out = b""
    for i in range(len(stream)):
        conn.receive_data(stream[i : i + 1])
        acts = conn.actions()
        for a in starts(acts):
            seen.append(a.head.target + b":" + bytes(a.body or b""))
        answer(conn, acts)
        out += wire(acts) + wire(conn.actions())
    assert seen == [b"/a:", b"/b:hello", b"/c:"]
    assert bodies_in_order(out) == [b"/a:", b"/b:hello", b"/c:"]


def test_expect_100_continue_is_sent_in_order_when_the_handler_reads() -> None:
    conn, _ = make(policy="all")
    conn.receive_data(
        get("/a") + b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    acts = conn.actions()
    assert [(a.head.target, a.body) for a in starts(acts)] == [(b"/a", b""), (b"/up", None)]
    conn.read_body(1)
    acts = conn.actions()
    assert wire(acts) == b""  # not before /a's answer
    conn.respond(0, 200, [], b"a")
    data = wire(conn.actions())
    assert data.endswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    conn.receive_data(b"hello")
    acts = conn.actions()
    pieces = [bytes(a.data) for a in acts if isinstance(a, BodyData)]
    assert pieces == [b"hello"]
    conn.read_body(1)
    assert BodyEnd(1) in conn.actions()
    conn.respond(1, 201, [], b"")
    assert statuses(wire(conn.actions())) == [201]


def test_large_body_streams_in_pieces_under_back_pressure() -> None:
    size = 200_000
    conn, _ = make(buffer_size=32 * 1024, limits=Limits(max_head_size=8 * 1024))
    head = f"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode()
    body = bytes(range(256)) * (size // 256) + bytes(size % 256)
    conn.receive_data(head + body[:40_000])  # more than the buffer holds
    acts = conn.actions()
    assert PauseReading() in acts
    (start,) = starts(acts)
    assert start.body is None  # too big to wait for: it streams
    got = b""
    sent = 40_000
    for _ in range(1000):
        conn.read_body(0)
        acts = conn.actions()
        got += b"".join(bytes(a.data) for a in acts if isinstance(a, BodyData))
        if BodyEnd(0) in acts:
            break
        if ResumeReading() in acts or conn.read_state.value == "reading":
            n = min(10_000, size - sent)
            if n:
                conn.receive_data(body[sent : sent + n])
                sent += n
    assert got == body
    conn.respond(0, 200, [], b"ok")
    assert statuses(wire(conn.actions())) == [200]


def test_body_over_the_limit_is_413() -> None:
    conn, _ = make(limits=Limits(max_body_size=10))
    conn.receive_data(post("/a", b"x" * 11))
    acts = conn.actions()
    assert not starts(acts)
    assert statuses(wire(acts)) == [413]


def test_max_in_flight_pauses_reading_until_answers() -> None:
    conn, _ = make(max_in_flight=2, policy="all")
    conn.receive_data(get("/1") + get("/2") + get("/3"))
    acts = conn.actions()
    assert len(starts(acts)) == 2
    assert PauseReading() in acts
    conn.respond(0, 200, [], b"")
    acts = conn.actions()
    assert [a.head.target for a in starts(acts)] == [b"/3"]


def test_handler_failure_is_500_and_protocol_error_is_its_hint_then_close() -> None:
    conn, _ = make()
    conn.receive_data(get("/a") + get("/b"))
    acts = conn.actions()
    conn.handler_failed(0, ValueError("boom"))
    conn.handler_failed(1, ProtocolError("nope", 422))
    acts = conn.actions()
    assert statuses(wire(acts)) == [500, 422]
    assert kinds(acts)[-1] == "ShutWrite"


def test_streamed_response_is_chunked_and_goes_out_as_produced() -> None:
    conn, _ = make()
    conn.receive_data(get("/s"))
    conn.actions()
    conn.start_response(0, 200, [])
    conn.send_body(0, b"abc", more=True)
    first = wire(conn.actions())
    assert b"transfer-encoding: chunked" in first and first.endswith(b"3\r\nabc\r\n")
    conn.send_body(0, b"", more=False)
    assert wire(conn.actions()) == b"0\r\n\r\n"


def test_request_timeout_of_a_suspended_handler_is_503_and_cancels_it() -> None:
    conn, clock = make(timeouts=ConnectionTimeouts(request=5.0))
    conn.receive_data(get("/slow") + get("/fast"))
    conn.actions()
    conn.handler_suspended(0)
    assert Timer(0, 105.0) in conn.actions()
    conn.respond(1, 200, [], b"fast")
    assert wire(conn.actions()) == b""
    clock.now = 105.0
    conn.timer_expired(0)
    acts = conn.actions()
    assert Cancel(0) in acts
    assert statuses(wire(acts)) == [503, 200]
    conn.respond(0, 200, [], b"late")  # after its 503: ignored
    assert wire(conn.actions()) == b""


def test_an_idle_connection_gives_its_receive_block_back_then_times_out() -> None:
    conn, clock = make(timeouts=ConnectionTimeouts(keep_alive=5.0))
    conn.receive_data(get("/a"))
    answer(conn, conn.actions())
    acts = conn.actions()
    assert conn.buffer.block_size > 0
    assert Timer("read", 100.05) in acts  # idle a moment: the trim
    clock.now = 100.05
    conn.timer_expired("read")
    acts = conn.actions()
    assert conn.buffer.block_size == 0
    assert Timer("read", 105.0) in acts  # the keep-alive timeout goes on
    conn.receive_data(get("/b"))  # a new block for the next request
    assert [a.head.target for a in starts(conn.actions())] == [b"/b"]
    clock.now = 110.0
    conn.timer_expired("read")
    assert kinds(conn.actions()) == []  # it was not idle: the timer was stale


def test_a_fixed_buffer_is_kept_and_only_the_keep_alive_timer_runs() -> None:
    """A fixed buffer is never trimmed, so no trim deadline is armed (it would fire, give
    nothing back and be armed again in the past: a busy loop)."""
    conn, _clock = make(timeouts=ConnectionTimeouts(keep_alive=5.0), fixed_buffer=True)
    conn.receive_data(get("/a"))
    answer(conn, conn.actions())
    acts = conn.actions()
    assert [a for a in acts if isinstance(a, Timer)] == [Timer("read", 105.0)]
    assert conn.buffer.block_size == conn.buffer.capacity


def test_keep_alive_timeout_closes_an_idle_connection_quietly() -> None:
    conn, clock = make(timeouts=ConnectionTimeouts(keep_alive=5.0))
    acts = conn.actions()
    assert Timer("read", 105.0) in acts
    clock.now = 104.0
    conn.timer_expired("read")  # early: re-armed
    assert Timer("read", 105.0) in conn.actions()
    clock.now = 105.0
    conn.timer_expired("read")
    acts = conn.actions()
    assert wire(acts) == b""
    assert kinds(acts) == ["Close"]  # nothing was cut short: no staged close


def test_the_staged_close_drains_until_the_linger_timer() -> None:
    conn, clock = make(timeouts=ConnectionTimeouts(linger=2.0))
    conn.receive_data(get("/a", "Connection: close\r\n"))
    answer(conn, conn.actions())
    acts = conn.actions()
    assert kinds(acts) == ["Write", "ShutWrite"]
    assert Timer("linger", 102.0) in acts
    conn.receive_data(b"junk the client still sends")  # drained, dropped
    assert kinds(conn.actions()) == []
    clock.now = 102.0
    conn.timer_expired("linger")
    assert kinds(conn.actions()) == ["Close"]


def test_header_timeout_is_408() -> None:
    conn, clock = make(timeouts=ConnectionTimeouts(header=2.0))
    conn.receive_data(b"GET / HTTP/1.1\r\nHo")
    assert Timer("read", 102.0) in conn.actions()
    clock.now = 102.0
    conn.timer_expired("read")
    assert statuses(wire(conn.actions())) == [408]


def test_body_timeout_is_408() -> None:
    conn, clock = make(timeouts=ConnectionTimeouts(body=3.0))
    conn.receive_data(post("/a", b"0123456789")[:-5])
    assert not starts(conn.actions())
    clock.now = 103.0
    conn.timer_expired("read")
    acts = conn.actions()
    assert not starts(acts)
    assert statuses(wire(acts)) == [408]


def test_shutdown_answers_what_was_framed_with_connection_close() -> None:
    conn, _ = make()
    conn.receive_data(get("/a") + get("/b"))
    acts = conn.actions()
    conn.shutdown()
    answer(conn, acts)
    acts = conn.actions()
    data = wire(acts)
    assert statuses(data) == [200, 200]
    assert data.count(b"connection: close") == 1  # only the last
    assert kinds(acts)[-1] == "ShutWrite"


def test_shutdown_of_an_idle_connection_closes_it() -> None:
    conn, _ = make()
    conn.actions()
    conn.shutdown()
    assert kinds(conn.actions()) == ["Close"]


def test_eof_after_requests_answers_them_then_closes() -> None:
    conn, _ = make()
    conn.receive_data(get("/a"))
    acts = conn.actions()
    conn.receive_eof()
    assert not [a for a in conn.actions() if isinstance(a, Close)]
    answer(conn, acts)
    acts = conn.actions()
    assert statuses(wire(acts)) == [200]
    assert kinds(acts) == ["Write", "Close"]


def test_eof_mid_body_gives_the_streaming_handler_an_error() -> None:
    conn, _ = make()
    conn.receive_data(
        b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nab"
    )
    conn.actions()
    conn.read_body(0)
    conn.actions()
    conn.read_body(0)
    conn.receive_eof()
    errors = [a for a in conn.actions() if isinstance(a, BodyError)]
    assert errors and errors[0].error.status_hint == 400


def test_nothing_is_written_after_a_closing_response() -> None:
    conn, _ = make()
    conn.receive_data(get("/a") + get("/b"))
    conn.actions()
    conn.respond(0, 200, [(b"connection", b"close")], b"a")
    conn.respond(1, 200, [], b"b")
    acts = conn.actions()
    assert bodies_in_order(wire(acts)) == [b"a"]
    assert kinds(acts) == ["Write", "ShutWrite"]


# -- every smuggling case the engines are tested for, without I/O -------------------------------

from tests.test_smuggling import AFTER, BAD, GOOD  # noqa: E402


@pytest.mark.parametrize("piece", [0, 1], ids=["whole", "byte-by-byte"])
@pytest.mark.parametrize("case", list(BAD))
def test_a_malformed_request_after_valid_ones(case: str, piece: int) -> None:
    bad, status = BAD[case]
    stream = GOOD + GOOD + bad + AFTER + b"X" * 1000
    conn, _ = make()
    out = b""
    seen: list[bytes] = []
    step = piece or len(stream)
    for i in range(0, len(stream), step):
        conn.receive_data(stream[i : i + step])
        acts = conn.actions()
        seen += [a.head.target for a in starts(acts)]
        answer(conn, acts)
        out += wire(acts) + wire(conn.actions())
    assert seen == [b"/ok", b"/ok"]
    assert statuses(out) == [200, 200, status]
    assert conn.state.value == "lingering"


@pytest.mark.parametrize("handler_error", [RuntimeError("no response"), None])
def test_a_streamed_body_that_breaks_is_answered_and_closed(
    handler_error: Exception | None,
) -> None:
    conn, _ = make()
    conn.receive_data(
        b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    assert [a.body for a in starts(conn.actions())] == [None]
    conn.read_body(0)
    conn.actions()
    conn.receive_data(b"3\r\nabc\r\nzz\r\n")  # a bad chunk size after a good chunk
    acts = conn.actions()
    assert [bytes(a.data) for a in acts if isinstance(a, BodyData)] == [b"abc"]
    conn.read_body(0)
    (error,) = [a for a in conn.actions() if isinstance(a, BodyError)]
    if handler_error is None:  # the handler fails with the body's error: its status hint
        conn.handler_failed(0, error.error)
    else:  # the handler fails otherwise (an ASGI app that saw a disconnect): 500, then 400
        conn.handler_failed(0, handler_error)
    acts = conn.actions()
    expected = [400] if handler_error is None else [500, 400]
    assert statuses(wire(acts)) == expected
    assert kinds(acts)[-1] == "ShutWrite"
