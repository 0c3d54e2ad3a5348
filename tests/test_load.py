"""The load client against tiny purpose-built trio servers and a real nginx.

The tiny servers frame requests with pipeparse's own `RequestIndex` and answer in order: plain
Content-Length, chunked with trailers, an echo of each request (for --verify), a server that
closes mid-pipeline, one that sends garbage, one that never answers. Runs are bounded by request
count, so every assertion is about counts and contents, never about timing.
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from pipeparse import FramedRequest, RequestIndex, SeekableBuffer
from pipeparse.cli import main as cli_main
from pipeparse.clients.load.client import (
    CannotConnect,
    LoadConfig,
    Progress,
    run_load,
    run_load_sync,
)
from pipeparse.clients.load.mix import RequestSpec
from pipeparse.clients.load.report import LiveProgress, format_summary
from pipeparse.clients.load.request import parse_header, parse_url, render_request
from pipeparse.clients.load.result import ERROR_KINDS, LoadResult, LoadStats
from tests.nginx_fixture import nginx_or_skip

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
SAFETY = 60.0  # seconds: only a hang gets near this
Handler = Callable[[trio.SocketStream], Awaitable[None]]
Answer = Callable[[FramedRequest, bytes, int], bytes]


# -- tiny servers ------------------------------------------------------------------------------


class Server:
    """Frames requests with `RequestIndex`, answers each complete one in order with
    ``answer(request, body, seq)``, and counts what it answered."""

    def __init__(self, answer: Answer, answer_limit: int | None = None) -> None:
        self.answer = answer
        self.answer_limit = answer_limit  # answer this many per connection, then close
        self.answered = 0
        self.connections = 0

    async def __call__(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        buf = SeekableBuffer(1 << 20)
        index = RequestIndex(buf)
        pending: list[FramedRequest] = []
        seq = 0
        try:
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buf.feed(data)
                pending.extend(index.advance())
                assert index.error is None, index.error
                out = []
                while pending and pending[0].end is not None:
                    r = pending.pop(0)
                    body = b"".join(bytes(buf.view(s, e)) for s, e in r.body)
                    buf.release(buf.head, r.end)  # type: ignore[arg-type]
                    out.append(self.answer(r, body, seq))
                    seq += 1
                    if self.answer_limit is not None and seq >= self.answer_limit:
                        break
                if out:
                    await stream.send_all(b"".join(out))
                    self.answered += len(out)
                if self.answer_limit is not None and seq >= self.answer_limit:
                    return
        finally:
            await stream.aclose()


def ok(r: FramedRequest, body: bytes, seq: int) -> bytes:
    return OK


def echo(r: FramedRequest, body: bytes, seq: int) -> bytes:
    report = {
        "seq": seq,
        "method": r.head.method.decode(),
        "target": r.head.target.decode(),
        "http_version": r.head.http_version.decode(),
        "headers": [[n.decode(), v.decode()] for n, v in r.head.headers],
        "body_len": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
    }
    payload = json.dumps(report).encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(payload),
        payload,
    )


def chunked(r: FramedRequest, body: bytes, seq: int) -> bytes:
    return chunked_response(seq)


def chunked_response(seq: int) -> bytes:
    text = b"response %d" % seq
    return (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n%x;part=2\r\n%s\r\n" % (4, text[:4], len(text) - 4, text[4:])
        + b"0\r\nX-Seq: %d\r\n\r\n" % seq
    )


async def load(handler: Handler, **settings: object) -> LoadResult:
    """Serve `handler` on a free loopback port and run the load client against it."""
    settings.setdefault("duration", None)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, handler, 0)
        port = listeners[0].socket.getsockname()[1]
        config = LoadConfig(f"http://127.0.0.1:{port}/t?x=1", **settings)  # type: ignore[arg-type]
        result = await run_load(config)
        nursery.cancel_scope.cancel()
    return result


def accounted(result: LoadResult) -> None:
    """Every request sent is answered or counted unanswered: none silently lost."""
    assert result.sent == result.requests + result.errors["unanswered"]
    assert result.histogram.get_total_count() == result.requests
    assert sum(result.timeline_requests) == result.requests
    assert sum(result.timeline_bytes) == result.bytes_received


def no_errors(result: LoadResult) -> None:
    assert result.error_total == 0, result.errors


# -- pipelining and framing --------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["window", "batch"])
async def test_pipelined_responses_are_all_counted(mode: str) -> None:
    server = Server(ok)
    result = await load(server, connections=3, depth=16, requests=500, mode=mode)
    no_errors(result)
    accounted(result)
    assert result.requests == result.sent == 500 == server.answered
    assert result.bytes_received == 500 * len(OK)
    assert server.connections == 3


async def test_depth_one_and_an_uneven_request_count() -> None:
    server = Server(ok)
    result = await load(server, connections=4, depth=1, requests=7)
    no_errors(result)
    assert result.requests == 7 == server.answered


async def test_chunked_responses_with_trailers() -> None:
    server = Server(chunked)
    result = await load(server, connections=2, depth=8, requests=120)
    no_errors(result)
    accounted(result)
    assert result.requests == 120
    expected = sum(len(chunked_response(i)) for i in range(60)) * 2
    assert result.bytes_received == expected


async def test_head_responses_carry_no_body() -> None:
    def head_ok(r: FramedRequest, body: bytes, seq: int) -> bytes:
        assert r.head.method == b"HEAD"
        return b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"

    result = await load(Server(head_ok), connections=1, depth=16, requests=64, method="HEAD")
    no_errors(result)
    assert result.requests == 64


async def test_interim_responses_are_skipped() -> None:
    def interim(r: FramedRequest, body: bytes, seq: int) -> bytes:
        return b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n" + OK

    result = await load(Server(interim), connections=1, depth=4, requests=40)
    no_errors(result)
    assert result.requests == 40


async def test_no_body_statuses_and_status_errors() -> None:
    def statuses(r: FramedRequest, body: bytes, seq: int) -> bytes:
        code = (200, 204, 304, 404, 500)[seq % 5]
        length = b"Content-Length: 3\r\n\r\nabc" if code in (200, 404, 500) else b"\r\n"
        return b"HTTP/1.1 %d X\r\n%s" % (code, length)

    result = await load(Server(statuses), connections=1, depth=5, requests=50)
    accounted(result)
    assert result.requests == 50
    assert result.errors["status"] == 20  # 404 and 500, ten of each
    assert result.error_total == 20


async def test_read_until_close_responses() -> None:
    def until_close(r: FramedRequest, body: bytes, seq: int) -> bytes:
        return b"HTTP/1.0 200 OK\r\n\r\nthe body runs to the close"

    server = Server(until_close, answer_limit=1)
    result = await load(server, connections=1, depth=1, requests=5)
    no_errors(result)
    assert result.requests == 5 and server.connections == 5


async def test_connection_close_mid_pipeline_counts_the_rest_unanswered() -> None:
    def last(r: FramedRequest, body: bytes, seq: int) -> bytes:
        if seq == 3:
            return b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello"
        return OK

    server = Server(last, answer_limit=4)
    result = await load(server, connections=1, depth=16, requests=32, mode="batch")
    accounted(result)
    assert result.requests == 8 == server.answered
    assert result.errors["unanswered"] == 24
    assert result.error_total == 24


# -- servers that misbehave --------------------------------------------------------------------


def closing_server(answer: int, batch: int) -> tuple[Handler, list[int]]:
    """Reads a whole batch, answers the first `answer` requests, then closes."""
    answered: list[int] = []

    async def handler(stream: trio.SocketStream) -> None:
        buf = SeekableBuffer(1 << 20)
        index = RequestIndex(buf)
        framed: list[FramedRequest] = []
        try:
            while len(framed) < batch:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buf.feed(data)
                framed.extend(index.advance())
            n = min(answer, len(framed))
            await stream.send_all(OK * n)
            answered.append(n)
        finally:
            await stream.aclose()

    return handler, answered


async def test_a_server_closing_mid_pipeline_leaves_requests_unanswered_never_lost() -> None:
    handler, answered = closing_server(answer=5, batch=16)
    result = await load(handler, connections=1, depth=16, requests=32, mode="batch")
    accounted(result)
    assert answered == [5, 5]
    assert result.requests == 10
    assert result.errors["unanswered"] == 22
    assert result.errors["read"] == result.errors["write"] == 0


@pytest.mark.parametrize("mode", ["window", "batch"])
async def test_closing_mid_pipeline_in_any_mode_accounts_for_every_request(mode: str) -> None:
    server = Server(ok, answer_limit=10)
    result = await load(server, connections=3, depth=16, requests=300, mode=mode)
    accounted(result)
    assert result.errors["unanswered"] > 0
    assert result.requests <= server.answered
    assert result.sent == 300


@pytest.mark.parametrize(
    "reply",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n",
        OK + b"\x00\x01\x02 not http",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
async def test_garbage_is_a_counted_framing_error_never_a_crash(reply: bytes) -> None:
    def garbage(r: FramedRequest, body: bytes, seq: int) -> bytes:
        return reply if seq == 0 else b""

    result = await load(Server(garbage), connections=2, depth=4, requests=40)
    accounted(result)
    assert result.errors["framing"] >= 1
    assert result.requests == (result.errors["framing"] if reply.startswith(OK) else 0)
    assert result.sent == 40


async def test_a_server_that_never_answers_times_out(autojump_clock: trio.abc.Clock) -> None:
    async def silent(stream: trio.SocketStream) -> None:
        async with stream:
            while await stream.receive_some(65536):
                pass

    result = await load(silent, connections=2, depth=4, requests=8, timeout=5.0)
    accounted(result)
    assert result.requests == 0
    assert result.errors["timeout"] == 2
    assert result.errors["unanswered"] == 8


@pytest.mark.parametrize(("timeout", "give_up"), [(10.0, 2.0), (0.5, 0.5)])
async def test_nothing_listening_stops_the_run_with_one_clear_reason(
    autojump_clock: trio.abc.Clock, timeout: float, give_up: float
) -> None:
    with trio.socket.socket() as s:  # a port nothing listens on
        await s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = LoadConfig(f"http://127.0.0.1:{port}/", connections=2, duration=30.0, timeout=timeout)
    started = trio.current_time()
    with pytest.raises(CannotConnect) as info:
        await run_load(config)
    assert str(info.value) == f"cannot connect to 127.0.0.1:{port}: connection refused"
    # It gives up after 2 s, or the run's timeout if shorter: never the run's 30 s.
    assert give_up <= trio.current_time() - started <= give_up + 0.5


def test_the_cli_reports_a_refused_target_in_one_line_quickly(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for processes in (1, 2):
        argv = ["load", f"http://127.0.0.1:{port}/", "--duration", "60", "-c", "2"]
        code = cli_main([*argv, "--processes", str(processes), "--timeout", "0.5"])
        assert code == 1
        out, err = capsys.readouterr()
        assert out == ""
        reason = f"cannot connect to 127.0.0.1:{port}: connection refused"
        assert err == f"pipeparse load: error: {reason}\n"


async def test_a_server_that_goes_away_mid_run_is_counted_not_fatal() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]

    async def serve_one_connection_then_go() -> None:
        stream = await listener.accept()
        await listener.aclose()  # from now on, connections are refused
        await Server(ok, answer_limit=5)(stream)

    with trio.fail_after(SAFETY):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_one_connection_then_go)
            config = LoadConfig(
                f"http://127.0.0.1:{port}/",
                connections=1,
                depth=4,
                requests=40,
                duration=None,
                timeout=0.5,
            )
            result = await run_load(config)
    accounted(result)
    assert result.requests == 5
    assert result.errors["connect"] >= 1
    assert result.errors["unanswered"] == result.sent - 5


def resetting_server(batch: int) -> Handler:
    """Reads a batch, then resets the connection (SO_LINGER 0): the client's read fails."""

    async def handler(stream: trio.SocketStream) -> None:
        buf = SeekableBuffer(1 << 20)
        index = RequestIndex(buf)
        framed: list[FramedRequest] = []
        while len(framed) < batch:
            data = await stream.receive_some(65536)
            if not data:
                break
            buf.feed(data)
            framed.extend(index.advance())
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        stream.socket.close()

    return handler


async def test_a_reset_connection_is_a_read_error() -> None:
    result = await load(resetting_server(4), connections=1, depth=4, requests=8, mode="batch")
    accounted(result)
    assert result.errors["read"] == 2
    assert result.errors["unanswered"] == 8
    assert result.requests == 0


def slow_server(delay: float) -> Handler:
    """Answers each request `delay` seconds after the previous answer (one at a time)."""

    async def handler(stream: trio.SocketStream) -> None:
        buf = SeekableBuffer(1 << 20)
        index = RequestIndex(buf)
        async with stream:
            while data := await stream.receive_some(65536):
                buf.feed(data)
                for _ in index.advance():
                    await trio.sleep(delay)
                    await stream.send_all(OK)

    return handler


async def test_rate_mode_measures_from_the_intended_send_time(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Coordinated omission: at 100 requests/s against a server that takes 100 ms each, with
    one request in flight, request i is sent 90*i ms late; its latency must include that
    wait (100 + 90*i ms), not just the 100 ms the server took. Virtual time: exact."""
    result = await load(slow_server(0.1), connections=1, depth=1, requests=10, rate=100.0)
    no_errors(result)
    lat = result.latency_ms()
    assert lat["max"] is not None and lat["p50"] is not None
    assert 905 <= lat["max"] <= 915  # request 9: 100 + 9 * 90 ms
    assert 455 <= lat["p50"] <= 465  # request 4: 100 + 4 * 90 ms
    closed = await load(slow_server(0.1), connections=1, depth=1, requests=10)
    lat = closed.latency_ms()
    assert lat["max"] is not None and 99 <= lat["max"] <= 101  # closed loop: 100 ms each


# -- verify, rate, warmup, duration ------------------------------------------------------------


@pytest.mark.parametrize("mode", ["window", "batch"])
async def test_verify_passes_against_an_echo_server(mode: str) -> None:
    result = await load(
        Server(echo),
        connections=2,
        depth=8,
        requests=200,
        mode=mode,
        method="POST",
        body=b"some body \x00\xff" * 10,
        headers=[("X-Test", "1")],
        verify=True,
    )
    no_errors(result)
    assert result.requests == 200
    assert result.errors["verify"] == 0


@pytest.mark.parametrize("rate", [None, 5000.0])
@pytest.mark.parametrize("mode", ["window", "batch"])
async def test_a_mix_is_sent_in_weighted_order_and_verifies(mode: str, rate: float | None) -> None:
    seen: list[tuple[bytes, bytes]] = []

    def recording_echo(r: FramedRequest, body: bytes, seq: int) -> bytes:
        seen.append((r.head.method, r.head.target))
        return echo(r, body, seq)

    mix = [
        RequestSpec("/a", weight=3),
        RequestSpec("/b?x=1", "POST", (("Content-Type", "text/plain"),), b"body \x00", 2),
        RequestSpec("/c", "PUT", body=b"", weight=1),
    ]
    with trio.fail_after(SAFETY):
        result = await load(
            Server(recording_echo),
            connections=1,
            depth=5,
            requests=60,
            mode=mode,
            rate=rate,
            mix=mix,
            headers=[("X-All", "1")],
            verify=True,
        )
    no_errors(result)
    assert result.requests == 60
    # One connection: the cycle a b a c b a (smooth weighted round robin), ten times over.
    cycle = [(b"GET", b"/a"), (b"POST", b"/b?x=1"), (b"GET", b"/a"), (b"PUT", b"/c")]
    cycle += [(b"POST", b"/b?x=1"), (b"GET", b"/a")]
    assert seen == cycle * 10


async def test_a_mix_of_methods_frames_head_responses_without_a_body() -> None:
    def head_aware(r: FramedRequest, body: bytes, seq: int) -> bytes:
        return OK[: OK.index(b"hello")] if r.head.method == b"HEAD" else OK

    mix = [RequestSpec("/a"), RequestSpec("/h", "HEAD", weight=2)]
    with trio.fail_after(SAFETY):
        result = await load(Server(head_aware), connections=2, depth=7, requests=300, mix=mix)
    no_errors(result)
    accounted(result)
    assert result.requests == 300


def test_a_mix_replaces_the_method_and_body() -> None:
    with pytest.raises(ValueError, match="gives each request's method and body"):
        LoadConfig("http://h/", method="POST", mix=[RequestSpec("/a")])
    with pytest.raises(ValueError, match="mix is empty"):
        LoadConfig("http://h/", mix=[])


async def test_verify_catches_reordered_and_wrong_responses() -> None:
    def swapped(r: FramedRequest, body: bytes, seq: int) -> bytes:
        return echo(r, body, seq ^ 1)  # pairs answered in swapped order

    result = await load(Server(swapped), connections=1, depth=4, requests=40, verify=True)
    assert result.requests == 40
    assert result.errors["verify"] == 40

    def wrong_body(r: FramedRequest, body: bytes, seq: int) -> bytes:
        return echo(r, body + b"x" * (seq == 7), seq)

    result = await load(Server(wrong_body), connections=1, depth=4, requests=20, verify=True)
    assert result.errors["verify"] == 1


async def test_verify_a_response_larger_than_the_buffer_is_a_framing_error() -> None:
    def big(r: FramedRequest, body: bytes, seq: int) -> bytes:
        return b"HTTP/1.1 200 OK\r\nContent-Length: 70000\r\n\r\n" + b"x" * 70000

    result = await load(
        Server(big), connections=1, depth=1, requests=1, verify=True, buffer_size=65536
    )
    accounted(result)
    assert result.errors["framing"] == 1
    # Without --verify, bodies stream through the same small buffer.
    result = await load(Server(big), connections=1, depth=2, requests=4, buffer_size=65536)
    no_errors(result)
    assert result.requests == 4


async def test_max_head_size_is_enforced() -> None:
    def fat(r: FramedRequest, body: bytes, seq: int) -> bytes:
        return b"HTTP/1.1 200 OK\r\nX-Fat: " + b"f" * 2000 + b"\r\nContent-Length: 0\r\n\r\n"

    result = await load(Server(fat), connections=1, depth=1, requests=1, max_head_size=1024)
    assert result.errors["framing"] == 1
    result = await load(Server(fat), connections=1, depth=1, requests=1, max_head_size=4096)
    no_errors(result)


@pytest.mark.parametrize("mode", ["window", "batch"])
async def test_rate_mode_sends_every_request_and_verifies(mode: str) -> None:
    result = await load(
        Server(echo), connections=2, depth=4, requests=60, rate=3000.0, mode=mode, verify=True
    )
    no_errors(result)
    accounted(result)
    assert result.requests == 60


async def test_rate_mode_sends_exactly_rate_times_duration(autojump_clock: trio.abc.Clock) -> None:
    result = await load(Server(ok), connections=4, depth=4, rate=1000.0, duration=0.5)
    no_errors(result)
    assert result.requests == result.sent == 500
    assert result.timeline_requests == [500]


async def test_rate_mode_against_a_closing_server_accounts_for_everything() -> None:
    server = Server(ok, answer_limit=7)
    result = await load(server, connections=2, depth=4, requests=60, rate=5000.0)
    accounted(result)
    assert result.errors["unanswered"] + result.requests == 60


async def test_warmup_requests_are_not_counted() -> None:
    server = Server(ok)
    result = await load(server, connections=2, depth=4, requests=100, warmup=0.05)
    no_errors(result)
    assert result.requests == result.sent == 100
    assert server.answered >= 100


async def test_duration_mode_drains_what_is_in_flight() -> None:
    result = await load(Server(ok), connections=2, depth=8, duration=0.2)
    no_errors(result)
    accounted(result)
    assert result.requests > 0


# -- config, request, result, report -----------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"connections": 0}, "connections"),
        ({"depth": -1}, "depth"),
        ({"duration": None}, "duration or a number"),
        ({"duration": 0}, "duration"),
        ({"requests": 0}, "requests"),
        ({"mode": "burst"}, "mode"),
        ({"rate": -5.0}, "rate"),
        ({"timeout": 0}, "timeout"),
        ({"warmup": -1}, "warmup"),
        ({"processes": 3, "connections": 2}, "processes"),
        ({"buffer_size": 1000}, "buffer_size"),
        ({"max_head_size": 0}, "max_head_size"),
        ({"method": "GE T"}, "method"),
        ({"headers": [("Bad Name", "x")]}, "header name"),
        ({"headers": [("X", "a\nb")]}, "invalid characters"),
        ({"headers": [("Transfer-Encoding", "chunked")]}, "set by the client"),
        ({"url": "ftp://127.0.0.1/"}, "only http:// and https://"),
        ({"url": "http:///path"}, "no host"),
    ],
)
def test_bad_settings_are_clear_errors(settings: dict[str, object], words: str) -> None:
    kwargs: dict[str, object] = {"url": "http://127.0.0.1:1/"} | settings
    with pytest.raises(ValueError, match=words):
        LoadConfig(**kwargs)  # type: ignore[arg-type]


def test_request_rendering() -> None:
    t = parse_url("http://example.test:8080/a/b?q=1")
    assert (t.host, t.port, t.authority, t.target) == (
        "example.test",
        8080,
        "example.test:8080",
        "/a/b?q=1",
    )
    assert parse_url("http://[::1]/").authority == "[::1]"
    raw = render_request("POST", t, [("X-A", " 1 ")], b"abc")
    assert raw == (
        b"POST /a/b?q=1 HTTP/1.1\r\nHost: example.test:8080\r\nX-A: 1\r\n"
        b"Content-Length: 3\r\n\r\nabc"
    )
    own_host = render_request("GET", t, [("host", "other")], b"")
    assert own_host == b"GET /a/b?q=1 HTTP/1.1\r\nhost: other\r\n\r\n"
    assert parse_header("X-Y:  z ") == ("X-Y", "z")
    with pytest.raises(ValueError):
        parse_header("no colon")
    with pytest.raises(ValueError, match="more than once"):
        render_request("GET", t, [("Host", "a"), ("Host", "b")], b"")


def test_latency_recording_is_exact_and_results_merge_exactly() -> None:
    a, b, both = LoadStats(0.0), LoadStats(0.0), LoadStats(0.0)
    values = [0.0000004, 0.000123, 0.0021, 0.0123456, 0.5, 3.0, 7200.0]
    for i, v in enumerate(values):
        (a if i % 2 else b).record_latency(v, i + 1)
        both.record_latency(v, i + 1)
        both.histogram.get_total_count()
    a.requests, b.requests = 10, 18
    merged = LoadResult.merge(
        [a.result(1.0, 1, 16).to_wire(), b.result(2.0, 1, 16).to_wire()], depth=16
    )
    whole = both.result(2.0, 2, 16)
    assert merged.histogram.get_total_count() == whole.histogram.get_total_count() == 28
    assert merged.latency_ms() == whole.latency_ms()
    assert merged.requests == 28 and merged.connections == 2 and merged.duration_s == 2.0
    # Exact: each value lands where recording it directly would put it.
    for v in values:
        us = max(1, min(int(v * 1_000_000), 3_600_000_000))
        assert whole.histogram.get_count_at_value(us) > 0


def test_json_has_exactly_the_documented_keys() -> None:
    stats = LoadStats(0.0, verify=True)
    stats.completed(0.5, 3)
    stats.record_latency(0.001, 3)
    stats.received(0.5, 100)
    doc = stats.result(1.0, 4, 16).to_json()
    assert set(doc) == {
        "requests",
        "errors",
        "duration_s",
        "rps",
        "latency_ms",
        "bytes_received",
        "connections",
        "depth",
        "timeline",
    }
    assert set(doc["errors"]) == {*ERROR_KINDS, "verify"}
    assert set(doc["latency_ms"]) == {"p50", "p90", "p99", "p999", "max"}
    assert doc["requests"] == 3 and doc["rps"] == 3.0
    assert doc["timeline"] == [{"t": 0, "requests": 3, "errors": 0, "bytes_received": 100}]
    empty = LoadStats(0.0).result(1.0, 1, 1).to_json()
    assert empty["latency_ms"]["p99"] is None
    json.dumps(doc)


def test_summary_and_progress_lines() -> None:
    stats = LoadStats(0.0)
    stats.completed(0.2, 5)
    stats.record_latency(0.002, 5)
    stats.sent = 7
    stats.error(0.3, "unanswered", 2)
    config = LoadConfig("http://127.0.0.1:1/", requests=7, duration=None)
    text = format_summary(config, stats.result(1.0, 10, 16))
    assert "requests     5 in 1.00 s" in text
    assert "unanswered 2" in text and "sent         7 = 5 answered + 2 unanswered" in text
    assert "mix" not in text
    mix = [RequestSpec("/a", weight=3), RequestSpec("/b", "POST")]
    text = format_summary(replace(config, mix=mix), stats.result(1.0, 10, 16))
    assert "  mix          GET /a x3, POST /b x1\n" in text
    live = LiveProgress(io.StringIO())
    assert not live.enabled  # not a terminal: nothing drawn
    with live:
        live.update(Progress("load", 1.0, None, 10, 12, 0, 1000, 100))
    line = live.line(Progress("load", 2.0, None, 30, 32, 1, 3000, 100))
    assert "sent 32/100" in line and "(20/s)" in line


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_live_line_is_drawn_on_a_terminal_and_cleared() -> None:
    screen = FakeTerminal()
    with LiveProgress(screen) as live:
        assert live.enabled
        live.update(Progress("warmup", 0.5, 2.0, 10, 12, 0, 1000))
        drawn = screen.getvalue()
    assert "warmup" in drawn and "0.5/2 s" in drawn and "requests 10" in drawn
    assert len(screen.getvalue()) > len(drawn)  # transient: erased when the run ends


# -- the command line --------------------------------------------------------------------------


def test_cli_rejects_bad_flags(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli_main(["load", "http://127.0.0.1:1/", "-H", "nocolon"]) == 2
    assert "not of the form" in capsys.readouterr().err
    assert cli_main(["load", "http://127.0.0.1:1/", "--body-file", str(tmp_path / "no")]) == 2
    assert "No such file" in capsys.readouterr().err
    assert cli_main(["load", "http://127.0.0.1:1/", "--body-size", "-1"]) == 2
    with pytest.raises(SystemExit):
        cli_main(["load", "http://127.0.0.1:1/", "--body-size", "3", "--body-file", "x"])
    assert cli_main(["load", "http://127.0.0.1:1/", "--requests", "100"]) == 2
    assert "use -n/--count 100" in capsys.readouterr().err
    bad = tmp_path / "mix.jsonl"
    bad.write_text('{"target": "/a"}\n{"target": "/b", "weight": -1}\n')
    assert cli_main(["load", "http://127.0.0.1:1/", "--requests", str(bad)]) == 2
    assert capsys.readouterr().err == (
        f"pipeparse load: error: {bad}:2: 'weight' must be a positive integer, got -1\n"
    )


def test_cli_runs_a_mix_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    seen: list[bytes] = []

    def recording(r: FramedRequest, body: bytes, seq: int) -> bytes:
        seen.append(r.head.target)
        return OK

    mix = tmp_path / "mix.jsonl"
    mix.write_text('{"target": "/x", "weight": 2}\n\n{"target": "/y", "method": "POST"}\n')

    async def main() -> int:
        with trio.fail_after(SAFETY):
            return await served()

    async def served() -> int:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(trio.serve_tcp, Server(recording), 0)
            port = listeners[0].socket.getsockname()[1]
            argv = ["load", f"http://127.0.0.1:{port}/", "--requests", str(mix), "-n", "30"]
            code = await trio.to_thread.run_sync(
                cli_main, [*argv, "-c", "1", "--json"], abandon_on_cancel=True
            )
            nursery.cancel_scope.cancel()
        return code

    assert trio.run(main) == 0
    assert json.loads(capsys.readouterr().out)["requests"] == 30
    assert seen == [b"/x", b"/y", b"/x"] * 10


# -- nginx: a real third-party server ----------------------------------------------------------


@pytest.mark.parametrize("mode", ["window", "batch"])
async def test_nginx_pipelining_agrees_with_its_access_log(mode: str) -> None:
    with nginx_or_skip(files={"a.txt": b"hello nginx"}, access_log=True) as srv:
        config = LoadConfig(
            srv.url + "/a.txt", connections=8, depth=16, requests=4000, duration=None, mode=mode
        )
        result = await run_load(config)
        srv.stop()
        no_errors(result)
        accounted(result)
        assert result.requests == 4000 == srv.answered()


async def test_nginx_closing_mid_pipeline_agrees_with_its_access_log() -> None:
    # keepalive_requests: nginx answers 50 on a connection, then closes it mid-pipeline.
    with nginx_or_skip(files={"a.txt": b"x"}, access_log=True, keepalive_requests=50) as srv:
        config = LoadConfig(
            srv.url + "/a.txt", connections=4, depth=16, requests=1000, duration=None
        )
        result = await run_load(config)
        srv.stop()
        accounted(result)
        assert result.errors["unanswered"] > 0
        assert result.requests == srv.answered()


async def test_nginx_chunked_gzip_head_and_404() -> None:
    extra = "gzip on; gzip_min_length 1; gzip_types text/plain;"
    with nginx_or_skip(files={"big.txt": b"chunk me " * 500}, http_extra=extra) as srv:
        gz = await run_load(
            LoadConfig(
                srv.url + "/big.txt",
                connections=2,
                depth=16,
                requests=200,
                duration=None,
                headers=[("Accept-Encoding", "gzip")],
            )
        )
        no_errors(gz)
        assert gz.requests == 200
        head = await run_load(
            LoadConfig(
                srv.url + "/big.txt", connections=2, requests=100, duration=None, method="HEAD"
            )
        )
        no_errors(head)
        assert head.requests == 100
        missing = await run_load(
            LoadConfig(srv.url + "/nothing", connections=2, requests=100, duration=None)
        )
        accounted(missing)
        assert missing.requests == 100 == missing.errors["status"]


def test_nginx_processes_merge_and_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    with nginx_or_skip(files={"a.txt": b"hello"}, access_log=True) as srv:
        config = LoadConfig(
            srv.url + "/a.txt", connections=4, requests=2001, duration=None, processes=2
        )
        result = run_load_sync(config)
        no_errors(result)
        accounted(result)
        assert result.requests == 2001 and result.connections == 4
        code = cli_main(["load", srv.url + "/a.txt", "-c", "3", "-n", "300", "--json"])
        out = json.loads(capsys.readouterr().out)
        assert code == 0 and out["requests"] == 300 and out["connections"] == 3
        code = cli_main(["load", srv.url + "/a.txt", "-c", "2", "-n", "50", "--mode", "batch"])
        text = capsys.readouterr().out
        assert code == 0 and "requests     50 in" in text
        srv.stop()
        assert srv.answered() == 2001 + 300 + 50


def test_cli_writes_an_hdr_log_and_merges_logs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    log = tmp_path / "run.hlog"

    async def main() -> int:
        with trio.fail_after(SAFETY):
            return await served()

    async def served() -> int:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(trio.serve_tcp, Server(ok), 0)
            port = listeners[0].socket.getsockname()[1]
            argv = ["load", f"http://127.0.0.1:{port}/", "-n", "200", "-c", "2", "--json"]
            code = await trio.to_thread.run_sync(
                cli_main, [*argv, "--hdr-log", str(log)], abandon_on_cancel=True
            )
            nursery.cancel_scope.cancel()
        return code

    assert trio.run(main) == 0
    run = json.loads(capsys.readouterr().out)
    assert run["requests"] == 200
    assert cli_main(["load", "--merge", str(log), str(log), "--json"]) == 0
    merged = json.loads(capsys.readouterr().out)
    # The same log twice: twice the count, the very same percentiles.
    assert merged == {"requests": 400, "latency_ms": run["latency_ms"]}
    assert cli_main(["load", "--merge", str(log)]) == 0
    assert "  requests     200\n  latency ms   p50 " in capsys.readouterr().out
    assert cli_main(["load", "http://127.0.0.1:1/", "--merge", str(log)]) == 2
    assert "--merge takes no URL" in capsys.readouterr().err
    assert cli_main(["load", "--merge", str(tmp_path / "absent.hlog")]) == 2
    assert "absent.hlog: no such file" in capsys.readouterr().err
    assert cli_main(["load"]) == 2
    assert "give the URL" in capsys.readouterr().err
