"""Engine behaviour over memory streams, for every engine in `server_harness.ENGINES`.

Each protocol test feeds its input whole, byte by byte and in random chunks (fixed seed). Tests
whose names end in ``_h11`` check choices of the h11 engine only.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from typing import Any

import pytest
import trio
import trio.testing

from pipeparse import HttpRequest, Limits, Response
from pipeparse.servers import engine_h11
from pipeparse.servers.apps import echo, plaintext
from pipeparse.servers.config import ServerConfig
from pipeparse.servers.handlers import native, resolve_app
from pipeparse.servers.listen import serve_listeners
from pipeparse.servers.protocol import Handler, ResponseSink
from tests.server_harness import (
    ENGINES,
    exchange,
    open_connection,
    parametrize_chunkings,
    parametrize_engines,
    parse_responses,
    receive_all,
    receive_until,
    request,
)

ECHO = {iface: resolve_app(echo, iface).handler for iface in ("native", "asgi")}
PLAINTEXT = {iface: resolve_app(plaintext, iface).handler for iface in ("native", "asgi")}
parametrize_interfaces = pytest.mark.parametrize("iface", ["native", "asgi"])

_DATE = re.compile(
    rb"[A-Z][a-z]{2}, [0-9]{2} [A-Z][a-z]{2} [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)


def asgi(app: Any) -> Handler:
    return resolve_app(app, "asgi").handler


async def streaming_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for piece in (b"one,", b"two,", b"three"):
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


# --- pipelining and the echo contract -----------------------------------------------------


@parametrize_engines
@parametrize_interfaces
@parametrize_chunkings
async def test_pipelined_requests_answered_in_order(
    serve: Any, iface: str, chunking: str, autojump_clock: trio.testing.MockClock
) -> None:
    # Earlier requests sleep longer: a concurrent engine must still answer in order.
    sleeps = [50, 40, 30, 0, 10]
    data = b"".join(request("GET", f"/r{i}?sleep_ms={ms}") for i, ms in enumerate(sleeps))
    responses = parse_responses(await exchange(serve, ECHO[iface], data, chunking))
    assert [r.status for r in responses] == [200] * 5
    docs = [r.json() for r in responses]
    assert [d["seq"] for d in docs] == [0, 1, 2, 3, 4]
    assert [d["target"] for d in docs] == [f"/r{i}?sleep_ms={ms}" for i, ms in enumerate(sleeps)]


@parametrize_engines
@parametrize_interfaces
@parametrize_chunkings
async def test_echo_contract(serve: Any, iface: str, chunking: str) -> None:
    body = bytes(range(256)) * 3
    data = request(
        "POST", "/x/y?a=1&b=%20", headers=[("X-Thing", "Va lue"), ("Accept", "*/*")], body=body
    ) + request("GET", "/", headers=[("X-Empty", "")])
    first, second = parse_responses(await exchange(serve, ECHO[iface], data, chunking))
    assert first.status == 200
    assert first.header("content-type") == b"application/json"
    doc = first.json()
    assert doc == {
        "seq": 0,
        "method": "POST",
        "target": "/x/y?a=1&b=%20",
        "http_version": "1.1",
        "headers": [
            ["host", "example.test"],
            ["x-thing", "Va lue"],
            ["accept", "*/*"],
            ["content-length", str(len(body))],
        ],
        "body_len": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
    }
    doc2 = second.json()
    assert doc2["seq"] == 1
    assert doc2["headers"] == [["host", "example.test"], ["x-empty", ""]]
    assert doc2["body_len"] == 0
    assert doc2["body_sha256"] == hashlib.sha256(b"").hexdigest()


@parametrize_engines
@parametrize_interfaces
async def test_echo_status_parameter(serve: Any, iface: str) -> None:
    data = request("GET", "/?status=201") + request("GET", "/?status=404") + request("GET", "/")
    responses = parse_responses(await exchange(serve, ECHO[iface], data))
    assert [r.status for r in responses] == [201, 404, 200]
    assert [r.json()["seq"] for r in responses] == [0, 1, 2]


@parametrize_engines
@parametrize_interfaces
@parametrize_chunkings
async def test_handler_exception_is_500_and_the_rest_is_answered(
    serve: Any, iface: str, chunking: str, caplog: pytest.LogCaptureFixture
) -> None:
    data = (
        request("GET", "/a")
        + request("POST", "/b?raise=1", body=b"unread body")
        + request("HEAD", "/c?raise=1")
        + request("GET", "/d")
    )
    raw = await exchange(serve, ECHO[iface], data, chunking)
    responses = parse_responses(raw, ["GET", "POST", "HEAD", "GET"])
    assert [r.status for r in responses] == [200, 500, 500, 200]
    assert responses[2].body == b""
    assert responses[3].json()["seq"] == 3
    assert responses[3].json()["target"] == "/d"
    assert "EchoError" in caplog.text  # the exception is logged, not swallowed


@parametrize_engines
@parametrize_interfaces
@parametrize_chunkings
async def test_head_has_headers_but_no_body(serve: Any, iface: str, chunking: str) -> None:
    data = request("HEAD", "/plaintext") + request("GET", "/plaintext")
    head, get = parse_responses(
        await exchange(serve, PLAINTEXT[iface], data, chunking), ["HEAD", "GET"]
    )
    assert (head.status, head.body) == (200, b"")
    assert head.header("content-length") == b"13"
    assert head.header("content-type") == b"text/plain"
    assert get.body == b"Hello, World!"


@parametrize_engines
async def test_head_of_a_streamed_response_has_no_body(serve: Any) -> None:
    data = request("HEAD", "/") + request("GET", "/")
    head, get = parse_responses(await exchange(serve, asgi(streaming_app), data), ["HEAD", "GET"])
    assert head.status == 200
    assert head.body == b""
    assert get.body == b"one,two,three"


@parametrize_engines
@parametrize_interfaces
@pytest.mark.parametrize("status", [204, 304])
async def test_204_and_304_have_no_body(serve: Any, iface: str, status: int) -> None:
    # echo produces a JSON body anyway: the engine must drop it.
    data = request("GET", f"/?status={status}") + request("GET", "/next")
    first, second = parse_responses(await exchange(serve, ECHO[iface], data))
    assert first.status == status
    assert first.body == b""
    assert first.header("transfer-encoding") is None
    if status == 204:
        assert first.header("content-length") is None
    assert second.json()["target"] == "/next"


# --- plaintext ----------------------------------------------------------------------------


@parametrize_engines
@parametrize_interfaces
@parametrize_chunkings
async def test_plaintext_contract(serve: Any, iface: str, chunking: str) -> None:
    data = (
        request("GET", "/plaintext")
        + request("GET", "/other")
        + request("POST", "/plaintext", body=b"x")
    )
    ok, missing, wrong_method = parse_responses(
        await exchange(serve, PLAINTEXT[iface], data, chunking)
    )
    assert ok.status == 200
    assert ok.body == b"Hello, World!"
    assert ok.header("content-type") == b"text/plain"
    assert ok.header("content-length") == b"13"
    assert ok.header("server") == b"pipeparse"
    date = ok.header("date")
    assert date is not None and _DATE.fullmatch(date)
    assert missing.status == 404
    assert wrong_method.status == 405


@parametrize_engines
async def test_server_name_comes_from_config(serve: Any) -> None:
    config = ServerConfig(server_name=b"tester/1")
    (response,) = parse_responses(
        await exchange(serve, PLAINTEXT["native"], request("GET", "/plaintext"), config=config)
    )
    assert response.header("server") == b"tester/1"


# --- request bodies -----------------------------------------------------------------------


@parametrize_engines
@parametrize_interfaces
@parametrize_chunkings
async def test_chunked_request_body(serve: Any, iface: str, chunking: str) -> None:
    body = b"0123456789abcdef" * 40
    data = request("POST", "/up", body=body, chunked=True) + request("GET", "/after")
    first, second = parse_responses(await exchange(serve, ECHO[iface], data, chunking))
    assert first.json()["body_len"] == len(body)
    assert first.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert second.json()["target"] == "/after"


@parametrize_engines
async def test_unread_body_is_skipped(serve: Any) -> None:
    # plaintext never reads the body: the engine must skip it to find the next request.
    data = request("POST", "/plaintext", body=b"GET /evil HTTP/1.1\r\n\r\n") + request(
        "GET", "/plaintext", body=b"z" * 100, chunked=True
    )
    responses = parse_responses(await exchange(serve, PLAINTEXT["native"], data))
    assert [r.status for r in responses] == [405, 200]


@parametrize_engines
@parametrize_chunkings
async def test_native_handler_streams_a_large_body(serve: Any, chunking: str) -> None:
    seen: list[int] = []

    @native
    async def handler(req: HttpRequest) -> Response:
        size = 0
        async for piece in req.stream():
            size += len(piece)
            seen.append(len(piece))
        return Response(b"%d" % size)

    body = b"q" * 5000
    (response,) = parse_responses(
        await exchange(
            serve, resolve_app(handler).handler, request("PUT", "/", body=body), chunking
        )
    )
    assert response.body == b"5000"
    assert sum(seen) == 5000


# --- responses ----------------------------------------------------------------------------


@parametrize_engines
@parametrize_chunkings
async def test_streaming_asgi_response_is_chunked(serve: Any, chunking: str) -> None:
    data = request("GET", "/s") + request("GET", "/s")
    responses = parse_responses(await exchange(serve, asgi(streaming_app), data, chunking))
    assert [r.body for r in responses] == [b"one,two,three"] * 2
    assert all(r.chunked for r in responses)
    assert all(r.header("content-length") is None for r in responses)


@parametrize_engines
async def test_native_async_iterable_body_is_chunked(serve: Any) -> None:
    async def pieces() -> Any:
        for p in (b"a", b"", b"bc", b"def"):
            yield p

    @native
    async def handler(req: HttpRequest) -> Response:
        return Response(pieces(), 200, [(b"content-type", b"text/plain")])

    (response,) = parse_responses(
        await exchange(serve, resolve_app(handler).handler, request("GET", "/"))
    )
    assert response.chunked
    assert response.body == b"abcdef"


@parametrize_engines
async def test_app_content_length_is_not_repeated(serve: Any) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-length", b"5"), (b"x-a", b"1")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"hello"})

    (response,) = parse_responses(await exchange(serve, asgi(app), request("GET", "/")))
    assert response.header("content-length") == b"5"  # fails if it appears twice
    assert response.body == b"hello"


@parametrize_engines
async def test_app_content_length_that_lies_is_a_500(serve: Any) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-length", b"3")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"hello"})

    data = request("GET", "/") + request("GET", "/")
    responses = parse_responses(await exchange(serve, asgi(app), data))
    assert [r.status for r in responses] == [500, 500]


def short_streams(blocking: bool) -> dict[str, Handler]:
    """A response streamed shorter than its Content-Length (10 declared, 5 sent), for
    ``/short``; any other target gets ``next``. As a sink handler and as an ASGI app."""
    declared = [(b"content-length", b"10")]

    async def pause() -> None:
        if blocking:  # the handler suspends: later requests run (and answer) meanwhile
            await trio.lowlevel.checkpoint()

    async def sink_handler(request: HttpRequest, sink: ResponseSink) -> None:
        if request.target != b"/short":
            await sink.start(200, [])
            await sink.send(b"next")
            return
        await sink.start(200, declared)
        await sink.send(b"12345", more=True)
        await pause()
        await sink.send(b"", more=False)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] != "/short":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"next"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": declared})
        await send({"type": "http.response.body", "body": b"12345", "more_body": True})
        await pause()
        await send({"type": "http.response.body", "body": b""})

    return {"sink": sink_handler, "asgi": asgi(app)}


@parametrize_engines
@parametrize_chunkings
@pytest.mark.parametrize("blocking", [False, True], ids=["instant", "blocking"])
@pytest.mark.parametrize("path", ["sink", "asgi"])
async def test_a_streamed_response_shorter_than_its_content_length_closes(
    serve: Any, chunking: str, blocking: bool, path: str
) -> None:
    """Only closing can end it: a response sent after it would be read as the missing
    bytes (response desync). So nothing at all follows its 5 bytes."""
    handler = short_streams(blocking)[path]
    data = request("GET", "/before") + request("GET", "/short") + request("GET", "/after")
    raw = await exchange(serve, handler, data, chunking)
    before = parse_responses(raw[: raw.index(b"HTTP/1.1", 1)])
    assert [(r.status, r.body) for r in before] == [(200, b"next")]
    short = raw[raw.index(b"HTTP/1.1", 1) :]
    assert short.startswith(b"HTTP/1.1 200 ")
    assert re.search(rb"\r\ncontent-length: 10\r\n", short, re.IGNORECASE)
    assert short.endswith(b"\r\n\r\n12345")  # and nothing after it


@parametrize_engines
@parametrize_chunkings
async def test_exception_after_start_closes_the_connection(serve: Any, chunking: str) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("boom")

    raw = await exchange(serve, asgi(app), request("GET", "/") + request("GET", "/"), chunking)
    assert raw.startswith(b"HTTP/1.1 200 ")
    assert b"partial" in raw
    assert raw.count(b"HTTP/1.1") == 1  # the second request is not answered
    assert not raw.endswith(b"0\r\n\r\n")  # the chunked body was not completed


@parametrize_engines
async def test_error_between_start_message_and_body_is_a_500(serve: Any) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("before any body")

    data = request("GET", "/") + request("GET", "/")
    responses = parse_responses(await exchange(serve, asgi(app), data))
    assert [r.status for r in responses] == [500, 500]


@parametrize_engines
async def test_handler_without_a_response_is_a_500(serve: Any) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    responses = parse_responses(await exchange(serve, asgi(app), request("GET", "/") * 2))
    assert [r.status for r in responses] == [500, 500]


# --- connection management ----------------------------------------------------------------


@parametrize_engines
@parametrize_interfaces
@parametrize_chunkings
async def test_connection_close_ends_after_that_response(
    serve: Any, iface: str, chunking: str
) -> None:
    data = (
        request("GET", "/0")
        + request("GET", "/1", headers=[("Connection", "close")])
        + request("GET", "/2")
    )
    raw = await exchange(serve, ECHO[iface], data, chunking, close_write=False)
    responses = parse_responses(raw)
    assert [r.json()["target"] for r in responses] == ["/0", "/1"]
    assert responses[1].header("connection") == b"close"


@parametrize_engines
@parametrize_chunkings
async def test_http10_request(serve: Any, chunking: str) -> None:
    data = request("GET", "/plaintext", version="1.0", host=None)
    (response,) = parse_responses(
        await exchange(serve, PLAINTEXT["native"], data, chunking, close_write=False)
    )
    assert response.status == 200
    assert response.body == b"Hello, World!"


@parametrize_engines
async def test_http10_streamed_response_is_delimited_by_close(serve: Any) -> None:
    data = request("GET", "/", version="1.0")
    (response,) = parse_responses(await exchange(serve, asgi(streaming_app), data))
    assert response.header("transfer-encoding") is None
    assert not response.chunked
    assert response.body == b"one,two,three"


@parametrize_engines
async def test_http10_closes_without_keep_alive(serve: Any) -> None:
    data = request("GET", "/a", version="1.0") + request("GET", "/b", version="1.0")
    raw = await exchange(serve, ECHO["native"], data, close_write=False)
    (response,) = parse_responses(raw)
    assert response.json()["target"] == "/a"
    assert response.json()["http_version"] == "1.0"


@parametrize_engines
@parametrize_interfaces
async def test_expect_100_continue(serve: Any, iface: str) -> None:
    head = request("POST", "/up", headers=[("Expect", "100-continue"), ("Content-Length", "5")])
    with trio.fail_after(10):
        async with open_connection(serve, ECHO[iface]) as client:
            await client.send_all(head)
            received = bytearray()
            end = await receive_until(client, b"\r\n\r\n", received)
            assert bytes(received[:end]).startswith(b"HTTP/1.1 100 ")
            await client.send_all(b"hello")
            await client.send_eof()
            raw = bytes(received) + await receive_all(client)
    (response,) = parse_responses(raw)
    assert [r.status for r in response.informational] == [100]
    assert response.json()["body_sha256"] == hashlib.sha256(b"hello").hexdigest()


@parametrize_engines
async def test_no_100_continue_when_the_body_is_not_read(serve: Any) -> None:
    head = request(
        "POST", "/plaintext", headers=[("Expect", "100-continue"), ("Content-Length", "5")]
    )
    with trio.fail_after(10):
        async with open_connection(serve, PLAINTEXT["native"]) as client:
            await client.send_all(head)
            received = bytearray()
            end = await receive_until(client, b"\r\n\r\n", received)
            assert bytes(received[:end]).startswith(b"HTTP/1.1 405 ")


@parametrize_engines
@parametrize_interfaces
@parametrize_chunkings
@pytest.mark.parametrize(
    ("bad", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nno colon here\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            400,
        ),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    ],
    ids=["request-line", "field-line", "no-host", "cl-and-te", "chunk-size"],
)
async def test_protocol_error_answers_and_closes(
    serve: Any, iface: str, chunking: str, bad: bytes, status: int
) -> None:
    data = request("GET", "/first") + bad + request("GET", "/never")
    raw = await exchange(serve, ECHO[iface], data, chunking, close_write=False)
    responses = parse_responses(raw)
    assert [r.status for r in responses] == [200, status]
    assert responses[0].json()["target"] == "/first"
    assert responses[1].header("connection") == b"close"
    assert b"/never" not in raw


@parametrize_engines
@pytest.mark.parametrize(
    ("limits", "data", "status"),
    [
        (
            Limits(max_head_size=1024),
            request("GET", "/", headers=[("X-Big", "b" * 2000)]),
            431,
        ),
        (Limits(max_headers=5), request("GET", "/", headers=[("X-A", "1")] * 10), 431),
        (Limits(max_target_size=100), request("GET", "/" + "t" * 200), 414),
        (Limits(max_body_size=10), request("POST", "/", body=b"b" * 11), 413),
        (Limits(max_body_size=10), request("POST", "/", body=b"b" * 40, chunked=True), 413),
    ],
    ids=["head-size", "header-count", "target", "content-length", "chunked-body"],
)
@parametrize_chunkings
async def test_limits(serve: Any, limits: Limits, data: bytes, status: int, chunking: str) -> None:
    config = ServerConfig(limits=limits)
    raw = await exchange(
        serve, ECHO["asgi"], request("GET", "/ok") + data, chunking, config, close_write=False
    )
    responses = parse_responses(raw)
    assert [r.status for r in responses] == [200, status]
    assert responses[1].header("connection") == b"close"


@parametrize_engines
async def test_limit_defaults_allow_ordinary_requests(serve: Any) -> None:
    body = b"x" * 100_000
    data = request("POST", "/", headers=[("X-A", "a" * 4000)] * 3, body=body)
    (response,) = parse_responses(await exchange(serve, ECHO["native"], data))
    assert response.json()["body_len"] == len(body)


# --- timeouts (virtual time) --------------------------------------------------------------


@parametrize_engines
async def test_idle_connection_closes_after_keep_alive_timeout(
    serve: Any, autojump_clock: trio.testing.MockClock
) -> None:
    config = ServerConfig(keep_alive_timeout=7)
    async with open_connection(serve, PLAINTEXT["native"], config) as client:
        await client.send_all(request("GET", "/plaintext"))
        received = bytearray()
        await receive_until(client, b"Hello, World!", received)
        start = trio.current_time()
        rest = await receive_all(client)
        waited = trio.current_time() - start
    assert rest == b""
    assert 7 <= waited < 8


@parametrize_engines
async def test_connection_stays_open_within_keep_alive_timeout(
    serve: Any, autojump_clock: trio.testing.MockClock
) -> None:
    config = ServerConfig(keep_alive_timeout=7)
    async with open_connection(serve, PLAINTEXT["native"], config) as client:
        received = bytearray()
        for i in range(3):
            await client.send_all(request("GET", "/plaintext"))
            while received.count(b"Hello, World!") <= i:
                chunk = await client.receive_some()
                assert chunk, f"closed early after {i} responses"
                received += chunk
            await trio.sleep(6)
        await client.send_eof()
        received += await receive_all(client)
    assert [r.status for r in parse_responses(bytes(received))] == [200, 200, 200]


@parametrize_engines
async def test_incomplete_head_times_out_with_408(
    serve: Any, autojump_clock: trio.testing.MockClock
) -> None:
    config = ServerConfig(header_timeout=3)
    async with open_connection(serve, PLAINTEXT["native"], config) as client:
        await client.send_all(request("GET", "/plaintext") + b"GET /plaintext HTTP/1.1\r\nHo")
        raw = await receive_all(client)
    responses = parse_responses(raw)
    assert [r.status for r in responses] == [200, 408]
    assert responses[1].header("connection") == b"close"


@parametrize_engines
async def test_silent_client_is_closed_without_an_answer(
    serve: Any, autojump_clock: trio.testing.MockClock
) -> None:
    config = ServerConfig(header_timeout=3)
    async with open_connection(serve, PLAINTEXT["native"], config) as client:
        assert await receive_all(client) == b""
        assert trio.current_time() >= 3


@parametrize_engines
async def test_stalled_body_times_out(serve: Any, autojump_clock: trio.testing.MockClock) -> None:
    config = ServerConfig(body_timeout=4)
    head = request("POST", "/", headers=[("Content-Length", "10")])
    async with open_connection(serve, ECHO["asgi"], config) as client:
        await client.send_all(head + b"abc")
        raw = await receive_all(client)
    (response,) = parse_responses(raw)
    assert response.status == 408


@parametrize_engines
@parametrize_interfaces
async def test_slow_handler_gets_503(
    serve: Any, iface: str, autojump_clock: trio.testing.MockClock
) -> None:
    config = ServerConfig(request_timeout=2)
    data = request("GET", "/?sleep_ms=1000") + request("GET", "/?sleep_ms=5000") + request("GET")
    raw = await exchange(serve, ECHO[iface], data, config=config, close_write=False)
    responses = parse_responses(raw)
    # The h11 engine closes after the 503; the pipeparse engine cancelled only that handler,
    # so it goes on with the requests after it.
    after = [] if serve is ENGINES["h11"] else [200]
    assert [r.status for r in responses] == [200, 503, *after]


@parametrize_engines
async def test_engine_closes_after_an_error_even_if_the_client_stays(
    serve: Any, autojump_clock: trio.testing.MockClock
) -> None:
    # The staged close drains for a bounded while, then closes: the engine task must end.
    done = trio.Event()

    async def run() -> None:
        server_end, client_end = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve, server_end, ECHO["native"], ServerConfig(), None)
            await client_end.send_all(b"BAD\r\n\r\n")
            raw = bytearray()
            await receive_until(client_end, b"\r\n\r\n", raw)
            for _ in range(3):
                await client_end.send_all(b"more junk " * 100)
                await trio.sleep(0.1)
            # The client never closes; the engine must end by itself.
        done.set()
        assert raw.startswith(b"HTTP/1.1 400 ")

    with trio.fail_after(120):
        await run()
    assert done.is_set()


# --- disconnects --------------------------------------------------------------------------


@parametrize_engines
async def test_asgi_app_sees_the_disconnect(serve: Any) -> None:
    messages: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        messages.append((await receive())["type"])
        messages.append((await receive())["type"])  # blocks until the client goes away

    with trio.fail_after(10):
        async with open_connection(serve, asgi(app)) as client:
            await client.send_all(request("POST", "/", body=b"abc"))
            await trio.testing.wait_all_tasks_blocked()
            assert messages == ["http.request"]
            await client.send_eof()
            await receive_all(client)
    assert messages == ["http.request", "http.disconnect"]


# --- graceful shutdown and the access log -------------------------------------------------


class QueueListener(trio.abc.Listener[trio.abc.Stream]):
    """A listener whose connections are memory streams handed to it by the test."""

    def __init__(self) -> None:
        self.send_channel, self.receive_channel = trio.open_memory_channel[trio.abc.Stream](
            math.inf
        )

    async def connect(self) -> trio.abc.Stream:
        server_end, client_end = trio.testing.memory_stream_pair()
        await self.send_channel.send(server_end)
        return client_end

    async def accept(self) -> trio.abc.Stream:
        return await self.receive_channel.receive()

    async def aclose(self) -> None:
        self.receive_channel.close()
        await trio.lowlevel.checkpoint()


@parametrize_engines
async def test_shutdown_closes_idle_connections_at_once(
    serve: Any, autojump_clock: trio.testing.MockClock
) -> None:
    config = ServerConfig(shutdown_timeout=30, keep_alive_timeout=60)
    listener = QueueListener()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            serve_listeners, PLAINTEXT["native"], [listener], serve, config
        )
        client = await listener.connect()
        await client.send_all(request("GET", "/plaintext"))
        received = bytearray()
        await receive_until(client, b"Hello, World!", received)
        start = trio.current_time()
        server.shutdown()
        assert await receive_all(client) == b""
        assert trio.current_time() - start < 1  # not held until shutdown_timeout


@parametrize_engines
async def test_shutdown_lets_a_running_request_finish_with_connection_close(
    serve: Any, autojump_clock: trio.testing.MockClock
) -> None:
    config = ServerConfig(shutdown_timeout=30)
    listener = QueueListener()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_listeners, ECHO["native"], [listener], serve, config)
        client = await listener.connect()
        await client.send_all(request("GET", "/?sleep_ms=2000"))
        await trio.sleep(1)
        server.shutdown()
        raw = await receive_all(client)
    (response,) = parse_responses(raw)
    assert response.status == 200
    assert response.header("connection") == b"close"


@parametrize_engines
async def test_access_log(serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pipeparse.access")
    data = (
        request("GET", "/plaintext")
        + request("HEAD", "/plaintext")
        + request("GET", "/nope")
        + b"BAD\r\n\r\n"
    )
    await exchange(serve, PLAINTEXT["asgi"], data, config=ServerConfig(access_log=True))
    lines = [r.getMessage() for r in caplog.records if r.name == "pipeparse.access"]
    assert lines[:3] == [
        '127.0.0.1:54321 "GET /plaintext" 200 13',
        '127.0.0.1:54321 "HEAD /plaintext" 200 0',
        '127.0.0.1:54321 "GET /nope" 404 9',
    ]
    assert len(lines) == 4 and " 400 " in lines[3]


@parametrize_engines
async def test_no_access_log_by_default(serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pipeparse.access")
    await exchange(serve, PLAINTEXT["native"], request("GET", "/plaintext"))
    assert [r for r in caplog.records if r.name == "pipeparse.access"] == []


# --- the h11 engine's own choices ---------------------------------------------------------


async def test_ends_when_the_client_closes_mid_body_h11() -> None:
    data = request("POST", "/", headers=[("Content-Length", "100")]) + b"short"
    raw = await exchange(engine_h11.serve_connection, ECHO["native"], data)
    assert raw == b"" or raw.startswith(b"HTTP/1.1 400 ")


async def test_100_continue_unread_body_closes_h11() -> None:
    head = request(
        "POST", "/plaintext", headers=[("Expect", "100-continue"), ("Content-Length", "5")]
    )
    raw = await exchange(engine_h11.serve_connection, PLAINTEXT["native"], head)
    (response,) = parse_responses(raw)
    assert response.informational == []
    assert response.header("connection") == b"close"


async def test_large_response_body_h11() -> None:
    big = bytes(range(256)) * 1000  # over SINGLE_WRITE_MAX: head and body written apart

    @native
    async def handler(req: HttpRequest) -> Response:
        return Response(big)

    raw = await exchange(engine_h11.serve_connection, resolve_app(handler).handler, request())
    (response,) = parse_responses(raw)
    assert response.body == big


async def test_sink_rejects_misuse_h11() -> None:
    errors: list[str] = []

    async def handler(req: HttpRequest, sink: ResponseSink) -> None:
        for call in (sink.send(b"x"), sink.start(100, [])):
            try:
                await call
            except (RuntimeError, ValueError) as exc:
                errors.append(type(exc).__name__)
        await sink.start(200, [])
        try:
            await sink.start(200, [])
        except RuntimeError:
            errors.append("twice")
        await sink.send(b"ok")
        try:
            await sink.send(b"more")
        except RuntimeError:
            errors.append("after end")

    raw = await exchange(engine_h11.serve_connection, handler, request())
    assert errors == ["RuntimeError", "ValueError", "twice", "after end"]
    (response,) = parse_responses(raw)
    assert response.body == b"ok"


def test_engines_registry_names_the_h11_engine() -> None:
    assert ENGINES["h11"] is engine_h11.serve_connection


async def test_exception_after_a_complete_response_keeps_the_connection_h11(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Starlette's error middleware sends a whole 500, then re-raises for the server to log.
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": b"oops"})
        raise RuntimeError("re-raised after the response")

    data = request("GET", "/") + request("GET", "/")
    responses = parse_responses(await exchange(engine_h11.serve_connection, asgi(app), data))
    assert [(r.status, r.body) for r in responses] == [(500, b"oops")] * 2
    assert "re-raised after the response" in caplog.text


async def test_the_h11_engine_yields_at_every_response_it_writes_to_a_socket() -> None:
    """Its write goes straight to the socket (`WritesStream`), and still lets other
    connections run, as trio's send_all did: a connection whose client keeps its pipeline
    full must not keep the others waiting (wrk saw 2 s timeouts without it)."""
    a, b = trio.socket.socketpair()
    with a, b:
        conn = engine_h11._Connection(
            trio.SocketStream(a), resolve_app(plaintext, "native").handler, ServerConfig(), None
        )
        assert conn.fd >= 0  # the direct write, not the stream's
        with trio.testing.assert_checkpoints():
            await conn.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        assert (await b.recv(100)).startswith(b"HTTP/1.1 200 OK")

