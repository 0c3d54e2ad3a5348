"""The pipeparse engine's native fast path, held to the generic handler path's bytes.

Strategy: `native_handler(fn)` carries ``fn`` as its ``native`` attribute, so the pipeparse
engine calls ``fn`` directly and renders its `Response` itself (no sink, a slot only when the
handler suspends, batched buffer release). Wrapped in a plain ``async (request, sink)`` handler
without that attribute, the same ``fn`` goes the generic way, through a `_Sink`. The contract
(`pipeparse.servers.protocol`) is that the wire bytes are the same: the differential tests serve
each
scenario both ways, whole, byte by byte and in random chunks, and compare the output with the
Date values normalised; each also checks the statuses it expects, so a fault shared by both paths
fails too. The other tests check what the fast path's own bookkeeping could break: closing in
stages, the access log, request order with handlers that block, failures and timeouts of
suspended handlers, the pipeline policies, and buffer release over a long pipeline through a
small buffer. Waiting uses events, `wait_all_tasks_blocked` and the autojump clock, never real
time.
"""

from __future__ import annotations

import functools
import logging
import random
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import trio
import trio.testing

from pipeparse import (
    HttpRequest,
    Limits,
    ProtocolError,
    Response,
    SeekableBuffer,
    ServerConnection,
    native,
)
from pipeparse.servers import engine_pipeparse
from pipeparse.servers.config import ServerConfig
from pipeparse.servers.handlers import native_handler
from pipeparse.servers.protocol import Handler, NativeHandler, ResponseSink, native_of
from tests.server_harness import (
    exchange,
    open_connection,
    parametrize_chunkings,
    parse_responses,
    receive_all,
    receive_until,
    request,
)

serve = engine_pipeparse.serve_connection

BIG = bytes(range(256)) * 40  # 10 KiB: over the 4096 bytes below which head and body are joined
TEXT = ((b"content-type", b"text/plain"),)
CLOSE = ((b"connection", b"close"),)
ECHO_BIG = bytes(range(97, 123)) * 170  # 4420 bytes: an echoed view longer than 4096
_DATE_FIELD = re.compile(rb"\r\ndate: [^\r\n]*")


def normalise(data: bytes) -> bytes:
    """`data` with every Date value replaced (it may change between two runs)."""
    return _DATE_FIELD.sub(b"\r\ndate: <date>", data)


async def run(
    handler: Handler,
    data: bytes,
    chunking: str = "whole",
    config: ServerConfig | None = None,
    timeout: float = 20,
) -> bytes:
    """The pipeparse engine's answer to `data` (see `server_harness.exchange`); a hang fails
    after `timeout` seconds (virtual ones under the autojump clock)."""
    return await exchange(serve, handler, data, chunking, config, timeout=timeout)


def paths(fn: NativeHandler) -> dict[str, Handler]:
    """`fn` as the engine's fast path sees it, and the same behind a plain generic handler."""
    fast = native_handler(fn)

    async def plain(request: HttpRequest, sink: ResponseSink) -> None:
        await fast(request, sink)  # no `native` attribute: the engine uses the sink

    assert native_of(fast) is fn
    assert native_of(plain) is None
    return {"fast": fast, "plain": plain}


# --- the app: one native handler, routed on the first path segment -------------------------


async def pieces(
    parts: Sequence[Any], pause: bool = False, fail: Exception | None = None
) -> AsyncIterator[Any]:
    """A streamed body: `parts` in order (checkpoints between them if `pause`), then `fail`."""
    for part in parts:
        if pause:
            await trio.sleep(0)
        yield part
    if fail is not None:
        raise fail


async def stuck_after(first: bytes) -> AsyncIterator[bytes]:
    yield first
    await trio.sleep_forever()


async def stuck_before() -> AsyncIterator[bytes]:
    await trio.sleep_forever()
    yield b"never"


def make_app(seen: list[bytes]) -> NativeHandler:
    """The scenarios' native handler; it records each target it runs for in `seen`."""

    @native
    async def app(request: HttpRequest) -> Response:
        target = request.target
        seen.append(target)
        segments = target.split(b"?", 1)[0].split(b"/")
        name = segments[1].decode()
        if name.startswith("sleep"):
            # /sleep/N/...: suspend N times first (N checkpoints), then answer as /NAME-REST.
            for _ in range(int(segments[2])):
                await trio.sleep(0)
            name = name.removeprefix("sleep").removeprefix("-") or "t"
        if name == "t":
            return Response(target, headers=TEXT)
        if name == "mv":
            return Response(memoryview(b"a memoryview body"))
        if name == "ba":
            return Response(bytearray(b"a bytearray body"))
        if name == "big":
            return Response(BIG, headers=TEXT)
        if name == "big-mv":
            return Response(memoryview(BIG)[1:-1])
        if name == "big-ba":
            return Response(bytearray(BIG))
        if name == "204":
            return Response(b"never sent", 204)
        if name == "304":
            return Response(b"", 304, ((b"etag", b'"v1"'),))
        if name == "304-cl":
            return Response(b"", 304, ((b"content-length", b"42"),))
        if name == "cl-right":
            return Response(b"hello", headers=((b"content-length", b"5"),))
        if name == "cl-short":
            return Response(b"hello", headers=((b"content-length", b"3"),))
        if name == "cl-big-wrong":
            return Response(BIG, headers=((b"content-length", b"%d" % (len(BIG) + 1)),))
        if name == "app-close":
            return Response(b"bye", headers=CLOSE)
        if name == "raise":
            raise ValueError("the handler failed")
        if name == "bad-header":
            return Response(b"x", headers=((b"x-bad", b"a\r\nb"),))
        if name == "not-a-response":
            return None  # type: ignore[return-value]
        if name == "str-body":
            return Response("not bytes")  # type: ignore[arg-type]
        if name == "protocol-error":
            raise ProtocolError("refused by the app", 400)
        if name == "stream":
            return Response(pieces([b"ab", b"", b"cde"]), headers=TEXT)
        if name == "stream-pause":
            return Response(pieces([b"ab", b"cd", b"ef"], pause=True))
        if name == "stream-empty":
            return Response(pieces([]))
        if name == "stream-big":
            return Response(pieces([BIG, BIG[:100]]))
        if name == "stream-raise-first":
            return Response(pieces([], fail=ValueError("before any chunk")))
        if name == "stream-bad-chunk":
            return Response(pieces([b"ok", "not bytes"]))
        if name == "stream-raise":
            return Response(pieces([b"ok"], pause=True, fail=ValueError("mid-stream")))
        if name == "stream-stuck":
            return Response(stuck_after(b"first"))
        if name == "stream-stuck-early":
            return Response(stuck_before())
        if name == "stuck":
            await trio.sleep_forever()
        if name == "echo":
            return Response(request.body)
        if name == "echo-copy":
            body = bytes(request.body)
            return Response(body, headers=((b"x-body-length", b"%d" % len(body)),))
        if name == "echo-read":
            return Response(await request.read())
        raise AssertionError(f"no route for {target!r}")

    return app


# --- scenarios -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """A pipeline: (method, bytes) per request; the statuses of the responses expected.

    With `cut_short`, the last response is cut off by a close mid-body (a streamed body that
    failed after it began): the statuses are those of the complete responses before it. Requests
    to ``/.../never`` are not answered; with `never_runs` their handler does not even run (the
    close was known before they could start).
    """

    requests: tuple[tuple[str, bytes], ...]
    statuses: tuple[int, ...]
    cut_short: bool = False
    never_runs: bool = True

    @property
    def data(self) -> bytes:
        return b"".join(data for _, data in self.requests)

    @property
    def methods(self) -> list[str]:
        return [method for method, _ in self.requests]


def req(method: str, target: str, **kw: Any) -> tuple[str, bytes]:
    return method, request(method, target, **kw)


def get(target: str, **kw: Any) -> tuple[str, bytes]:
    return req("GET", target, **kw)


def http10(target: str, keep_alive: bool) -> tuple[str, bytes]:
    headers = [("Connection", "keep-alive")] if keep_alive else []
    return req("GET", target, version="1.0", headers=headers)


SCENARIOS: dict[str, Scenario] = {
    "bytes": Scenario((get("/t/a"), get("/t/bb"), get("/t/ccc?q=1")), (200, 200, 200)),
    "views": Scenario(
        (get("/mv"), get("/ba"), get("/big-mv"), get("/big-ba"), get("/t/end")),
        (200,) * 5,
    ),
    "big": Scenario((get("/big"), get("/t/x"), get("/big"), get("/big")), (200,) * 4),
    "head": Scenario(
        (
            req("HEAD", "/t/a"),
            req("HEAD", "/big"),
            req("HEAD", "/stream"),
            req("HEAD", "/cl-short"),
            req("HEAD", "/cl-right"),
            get("/t/after"),
        ),
        (200,) * 6,
    ),
    "no-body-statuses": Scenario(
        (get("/204"), get("/304"), get("/304-cl"), req("HEAD", "/204"), get("/t/after")),
        (204, 304, 304, 204, 200),
    ),
    "content-length": Scenario(
        (
            get("/cl-right"),
            get("/cl-short"),
            get("/cl-big-wrong"),
            get("/cl-right"),
            get("/sleep-cl-short/1"),
            get("/sleep-cl-right/2"),
        ),
        (200, 500, 500, 200, 500, 200),
    ),
    "app-close": Scenario((get("/t/a"), get("/app-close"), get("/t/never")), (200, 200)),
    "request-close": Scenario(
        (get("/t/a"), get("/t/b", headers=[("Connection", "close")]), get("/t/never")),
        (200, 200),
    ),
    "request-close-blocked": Scenario(  # it suspends: nothing after it may start meanwhile
        (
            get("/t/a"),
            get("/sleep/2", headers=[("Connection", "close")]),
            get("/t/never"),
            req("POST", "/t/never", body=b"side effect"),
        ),
        (200, 200),
    ),
    "http10": Scenario((http10("/t/a", keep_alive=False), http10("/t/never", False)), (200,)),
    "http10-keep-alive": Scenario(
        (
            http10("/t/a", keep_alive=True),
            http10("/sleep/1", keep_alive=True),
            http10("/big", keep_alive=True),
            http10("/t/last", keep_alive=False),
            get("/t/never"),
        ),
        (200,) * 4,
    ),
    "http10-stream": Scenario(  # no chunked on HTTP/1.0: the close delimits the body
        (http10("/t/a", keep_alive=True), http10("/stream", keep_alive=True), get("/t/never")),
        (200, 200),
    ),
    "errors": Scenario(
        (
            get("/t/a"),
            get("/raise"),
            get("/t/b"),
            get("/bad-header"),
            get("/not-a-response"),
            get("/str-body"),
            req("HEAD", "/raise"),
            get("/stream-raise-first"),
            get("/t/c"),
        ),
        (200, 500, 200, 500, 500, 500, 500, 500, 200),
    ),
    "protocol-error": Scenario((get("/t/a"), get("/protocol-error"), get("/t/never")), (200, 400)),
    "streams": Scenario(
        (
            get("/stream"),
            get("/t/a"),
            get("/stream-pause"),
            get("/stream-empty"),
            get("/stream-big"),
            get("/sleep-stream-pause/2"),
            get("/t/b"),
        ),
        (200,) * 7,
    ),
    "stream-bad-chunk": Scenario(
        (get("/t/a"), get("/stream-bad-chunk"), get("/t/never")),
        (200,),
        cut_short=True,
        never_runs=False,  # the stream's first send flushes, and the next request starts
    ),
    "stream-raise": Scenario(
        (get("/stream"), get("/stream-raise"), get("/t/never")),
        (200,),
        cut_short=True,
        never_runs=False,
    ),
    "bodies": Scenario(
        (
            req("POST", "/echo", body=b"hello"),
            req("POST", "/echo", body=b"chunked body", chunked=True),
            req("POST", "/echo", body=b""),
            req("PUT", "/echo-copy", body=b"copied"),
            req("POST", "/echo-read", body=b"read", chunked=True),
            get("/echo"),
            req("POST", "/sleep-echo/2", body=b"still valid after suspending"),
            req("POST", "/echo", body=b"x", chunked=True),
        ),
        (200,) * 8,
    ),
    "big-echo": Scenario(
        (
            req("PUT", "/echo", body=ECHO_BIG),
            get("/t/between"),
            req("PUT", "/sleep-echo/1", body=ECHO_BIG),
            req("PUT", "/echo", body=ECHO_BIG, chunked=True),
        ),
        (200,) * 4,
    ),
    "blocking": Scenario(
        (
            get("/sleep/1"),
            get("/t/a"),
            get("/sleep/3"),
            get("/sleep-big/2"),
            get("/sleep-mv/1"),
            get("/t/b"),
            get("/sleep-raise/1"),
            get("/sleep-stream/1"),
            get("/t/c"),
            get("/sleep-app-close/2"),
            get("/t/never"),
        ),
        (200, 200, 200, 200, 200, 200, 500, 200, 200, 200),
        never_runs=False,  # it runs while the handler that will close blocks
    ),
    "mixed-methods": Scenario(
        (
            get("/sleep/2"),
            get("/t/a"),
            req("POST", "/sleep-echo/1", body=b"p1"),
            get("/sleep/1"),
            req("DELETE", "/t/d"),
            req("POST", "/echo", body=b"p2"),
            get("/sleep/3"),
            get("/t/z"),
        ),
        (200,) * 8,
    ),
}


def check_statuses(out: bytes, scenario: Scenario) -> None:
    if scenario.cut_short:
        last = out.rindex(b"HTTP/1.1 ")
        tail = out[last:]
        assert tail.startswith(b"HTTP/1.1 200 "), tail
        assert b"transfer-encoding: chunked" in tail and not tail.endswith(b"0\r\n\r\n"), tail
        out = out[:last]
    responses = parse_responses(out, scenario.methods)
    assert tuple(r.status for r in responses) == scenario.statuses


@parametrize_chunkings
@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_fast_path_sends_the_same_bytes_as_the_generic_path(name: str, chunking: str) -> None:
    scenario = SCENARIOS[name]
    outputs: dict[str, bytes] = {}
    seen: dict[str, list[bytes]] = {}
    for path in ("fast", "plain"):
        seen[path] = []
        handler = paths(make_app(seen[path]))[path]
        outputs[path] = normalise(await run(handler, scenario.data, chunking))
    assert outputs["fast"] == outputs["plain"]
    answered = {
        path: [t for t in targets if not t.endswith(b"/never")] for path, targets in seen.items()
    }
    assert answered["fast"] == answered["plain"]  # whether a "never" runs is up to scheduling
    if scenario.never_runs:  # on both paths: each has its own dispatch code
        for targets in seen.values():
            assert not any(target.endswith(b"/never") for target in targets)
    check_statuses(outputs["fast"], scenario)


async def test_echoed_bodies_and_framing() -> None:
    """Spot checks of what the differential compares: bodies, lengths, chunks, closes."""
    handler = paths(make_app([]))["fast"]
    for name, expected in {
        "bodies": [
            b"hello",
            b"chunked body",
            b"",
            b"copied",
            b"read",
            b"",
            b"still valid after suspending",
            b"x",
        ],
        "big-echo": [ECHO_BIG, b"/t/between", ECHO_BIG, ECHO_BIG],
        "views": [b"a memoryview body", b"a bytearray body", BIG[1:-1], BIG, b"/t/end"],
        "streams": [b"abcde", b"/t/a", b"abcdef", b"", BIG + BIG[:100], b"abcdef", b"/t/b"],
    }.items():
        out = await run(handler, SCENARIOS[name].data)
        assert [r.body for r in parse_responses(out)] == expected, name
    out = await run(handler, SCENARIOS["head"].data)
    heads = parse_responses(out, SCENARIOS["head"].methods)
    assert heads[1].header("content-length") == b"%d" % len(BIG)
    assert heads[2].header("transfer-encoding") == b"chunked"
    assert heads[3].header("content-length") == b"3"  # a HEAD's Content-Length is not checked
    out = await run(handler, SCENARIOS["http10-stream"].data)
    streamed = parse_responses(out)[1]
    assert streamed.header("connection") == b"close" and streamed.body == b"abcde"
    out = await run(handler, SCENARIOS["errors"].data)
    failed = parse_responses(out, SCENARIOS["errors"].methods)
    assert failed[1].body == b"500 Internal Server Error\n"
    assert failed[6].body == b"" and failed[6].header("content-length") == b"26"  # HEAD


async def test_the_engine_calls_the_native_handler_directly() -> None:
    """The differential compares two paths: with ``native`` set, the generic handler is not
    called for requests whose body has arrived (streamed response bodies included)."""
    generic_calls: list[bytes] = []
    app = make_app([])

    async def spy(request: HttpRequest, sink: ResponseSink) -> None:
        generic_calls.append(request.target)
        await native_handler(app)(request, sink)

    spy.native = app  # type: ignore[attr-defined]
    out = await run(spy, SCENARIOS["streams"].data + SCENARIOS["bodies"].data)
    assert len(parse_responses(out)) == 15
    assert generic_calls == []


async def test_access_log_is_the_same_on_both_paths(caplog: pytest.LogCaptureFixture) -> None:
    """One line per request, with the same status and body size on both paths (a request
    whose response is never sent may be logged too: it ran; those are left out here)."""
    caplog.set_level(logging.INFO, logger="pipeparse.access")
    config = ServerConfig(access_log=True)
    names = ("head", "streams", "errors", "blocking")
    data = b"".join(SCENARIOS[name].data for name in names)
    methods = [m for name in names for m in SCENARIOS[name].methods]
    outputs: dict[str, bytes] = {}
    lines: dict[str, list[str]] = {}
    for path, handler in paths(make_app([])).items():
        caplog.clear()
        outputs[path] = normalise(await run(handler, data, config=config))
        lines[path] = sorted(
            r.getMessage()
            for r in caplog.records
            if r.name == "pipeparse.access" and "/never" not in r.getMessage()
        )
    assert outputs["fast"] == outputs["plain"]
    assert len(parse_responses(outputs["fast"], methods)) == len(methods) - 1  # (the last: never)
    assert lines["fast"] == lines["plain"]
    assert len(lines["fast"]) == len(methods) - 1
    assert '127.0.0.1:54321 "GET /sleep-big/2" 200 10240' in lines["fast"]
    assert '127.0.0.1:54321 "HEAD /big" 200 0' in lines["fast"]


async def test_access_log_with_a_suspended_native_handler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One request whose native handler suspends, then returns a bytes body: one 200, logged."""
    caplog.set_level(logging.INFO, logger="pipeparse.access")
    handler = paths(make_app([]))["fast"]
    out = await run(handler, get("/sleep/1")[1], config=ServerConfig(access_log=True))
    assert [r.body for r in parse_responses(out)] == [b"/sleep/1"]
    lines = [r.getMessage() for r in caplog.records if r.name == "pipeparse.access"]
    assert lines == ['127.0.0.1:54321 "GET /sleep/1" 200 8']


CLOSING = {
    "app-close": get("/app-close")[1],
    "app-close-blocked": get("/sleep-app-close/1")[1],
    "request-close": get("/t/x", headers=[("Connection", "close")])[1],
    "request-close-blocked": get("/sleep/1", headers=[("Connection", "close")])[1],
    "http10": http10("/t/x", keep_alive=False)[1],
}


@pytest.mark.parametrize("kind", list(CLOSING))
@pytest.mark.parametrize("path", ["fast", "plain"])
async def test_closing_response_closes_in_stages(path: str, kind: str) -> None:
    """After a closing response the write side is shut first and what the client still sends
    is drained, not refused (a real socket would answer it with a reset, which can destroy
    responses the client has not read yet)."""
    seen: list[bytes] = []
    handler = paths(make_app(seen))[path]
    with trio.fail_after(20):
        async with open_connection(serve, handler) as client:
            await client.send_all(get("/t/a")[1] + CLOSING[kind])
            received = await receive_all(client)  # up to the server's end of sending
            await trio.testing.wait_all_tasks_blocked()
            await client.send_all(get("/t/late")[1])  # the server drains it
            await client.send_eof()
    responses = parse_responses(received)
    assert [r.status for r in responses] == [200, 200]
    assert responses[1].header("connection") == b"close"
    assert b"/t/late" not in seen


# --- order with handlers that block ---------------------------------------------------------


async def run_chain(handler_path: str, chunking: str) -> tuple[bytes, list[str]]:
    """/a waits for /b, /b waits for /go: later requests finish first."""
    record: list[str] = []
    events = {b"/a": trio.Event(), b"/b": trio.Event()}

    @native
    async def app(request: HttpRequest) -> Response:
        target = request.target
        record.append(f"start {target.decode()}")
        if target in events:
            await events[target].wait()
            if target == b"/b":
                events[b"/a"].set()
        elif target == b"/go":
            events[b"/b"].set()
        record.append(f"end {target.decode()}")
        return Response(target, headers=TEXT)

    data = b"".join(get(t)[1] for t in ("/a", "/1", "/b", "/2", "/go", "/3"))
    out = await run(paths(app)[handler_path], data, chunking)
    return out, record


@parametrize_chunkings
async def test_blocked_handlers_finish_out_of_order_and_answer_in_order(chunking: str) -> None:
    outputs = {}
    for path in ("fast", "plain"):
        out, record = await run_chain(path, chunking)
        assert [r.body for r in parse_responses(out)] == [b"/a", b"/1", b"/b", b"/2", b"/go", b"/3"]
        end = record.index
        assert end("end /1") < end("end /2") < end("end /go") < end("end /b") < end("end /a")
        outputs[path] = normalise(out)
    assert outputs["fast"] == outputs["plain"]


async def run_sleepers(
    handler_path: str, targets: list[str], config: ServerConfig
) -> tuple[bytes, list[str], int]:
    """Serve `targets`: ``/s/N`` sleeps N (virtual) seconds. The output, the order in which
    the handlers finished, and the most that slept at once."""
    finished: list[str] = []
    sleeping = peak = 0

    @native
    async def app(request: HttpRequest) -> Response:
        nonlocal sleeping, peak
        target = request.target.decode()
        if target.startswith("/s/"):
            sleeping += 1
            peak = max(peak, sleeping)
            await trio.sleep(int(target[3:]))
            sleeping -= 1
        finished.append(target)
        return Response(request.target)

    data = b"".join(get(t)[1] for t in targets)
    out = await run(paths(app)[handler_path], data, config=config, timeout=1000)
    return out, finished, peak


@pytest.mark.parametrize("max_in_flight", [1, 4, 16])
async def test_mock_clock_sleeps_answer_in_request_order(
    autojump_clock: trio.testing.MockClock, max_in_flight: int
) -> None:
    """Even requests sleep (virtual) seconds, longest first; odd ones are instant."""
    n = 24
    targets = [f"/s/{n - i}" if i % 2 == 0 else f"/t/{i}" for i in range(n)]
    config = ServerConfig(max_in_flight=max_in_flight)
    outputs = {}
    for path in ("fast", "plain"):
        out, finished, peak = await run_sleepers(path, targets, config)
        assert [r.body.decode() for r in parse_responses(out)] == targets
        assert sorted(finished) == sorted(targets)
        assert peak == min(max_in_flight, n // 2), path
        if max_in_flight > 1:
            assert finished != targets  # they ran concurrently and finished out of order
        outputs[path] = normalise(out)
    assert outputs["fast"] == outputs["plain"]


# --- failures and timeouts of suspended handlers --------------------------------------------


@parametrize_chunkings
async def test_suspended_handler_that_raises_gets_500_in_its_place(chunking: str) -> None:
    data = b"".join(
        get(t)[1] for t in ("/sleep/2", "/sleep-raise/1", "/t/b", "/sleep-raise/3", "/t/c")
    )
    outputs = {}
    for path, handler in paths(make_app([])).items():
        out = await run(handler, data, chunking)
        assert [(r.status, r.body) for r in parse_responses(out)] == [
            (200, b"/sleep/2"),
            (500, b"500 Internal Server Error\n"),
            (200, b"/t/b"),
            (500, b"500 Internal Server Error\n"),
            (200, b"/t/c"),
        ]
        outputs[path] = normalise(out)
    assert outputs["fast"] == outputs["plain"]


@parametrize_chunkings
async def test_handler_over_the_request_timeout_gets_503(
    autojump_clock: trio.testing.MockClock, chunking: str
) -> None:
    config = ServerConfig(request_timeout=7)
    data = b"".join(
        get(t)[1]
        for t in ("/t/a", "/stuck", "/t/b", "/sleep/1", "/stuck", "/sleep-raise/1", "/t/c")
    )
    outputs = {}
    for path, handler in paths(make_app([])).items():
        out = await run(handler, data, chunking, config=config)
        unavailable = (503, b"503 Service Unavailable\n")
        error = (500, b"500 Internal Server Error\n")
        assert [(r.status, r.body) for r in parse_responses(out)] == [
            (200, b"/t/a"),
            unavailable,
            (200, b"/t/b"),
            (200, b"/sleep/1"),
            unavailable,
            error,
            (200, b"/t/c"),
        ]
        outputs[path] = normalise(out)
    assert outputs["fast"] == outputs["plain"]


async def test_streamed_body_over_the_request_timeout_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Part of the response is out: only closing can tell the client it is incomplete."""
    config = ServerConfig(request_timeout=7)
    scenario = Scenario(
        (get("/t/a"), get("/stream-stuck"), get("/t/never")), (200,), cut_short=True
    )
    outputs = {}
    for path, handler in paths(make_app([])).items():
        out = await run(handler, scenario.data, config=config)
        check_statuses(out, scenario)
        assert out.endswith(b"5\r\nfirst\r\n")
        outputs[path] = normalise(out)
    assert outputs["fast"] == outputs["plain"]


@pytest.mark.parametrize("path", ["fast", "plain"])
async def test_streamed_body_of_a_blocked_handler_is_under_the_request_timeout(
    autojump_clock: trio.testing.MockClock, path: str
) -> None:
    """The timeout covers a blocked handler's streamed body too: stuck before its first chunk,
    the request gets a 503 and the connection goes on; stuck after it, the connection closes."""
    config = ServerConfig(request_timeout=7)
    handler = paths(make_app([]))[path]
    data = b"".join(get(t)[1] for t in ("/t/a", "/sleep-stream-stuck-early/1", "/t/b"))
    with trio.fail_after(60):  # virtual time: a request nobody times out would hang here
        out = await run(handler, data, config=config)
    assert [(r.status, r.body) for r in parse_responses(out)] == [
        (200, b"/t/a"),
        (503, b"503 Service Unavailable\n"),
        (200, b"/t/b"),
    ]
    data = b"".join(get(t)[1] for t in ("/t/a", "/sleep-stream-stuck/1", "/t/never"))
    with trio.fail_after(60):
        out = await run(handler, data, config=config)
    assert out.endswith(b"5\r\nfirst\r\n")  # then closed: only closing can tell
    assert b"/t/never" not in out


@native
async def waiting_app(request: HttpRequest) -> Response:
    """``/wait/S`` sleeps S (virtual) seconds, ``/stuck`` forever; answers with the target."""
    name, _, seconds = request.target.decode().strip("/").partition("/")
    if name == "stuck":
        await trio.sleep_forever()
    if seconds:
        await trio.sleep(float(seconds))
    return Response(request.target, headers=TEXT)


@pytest.mark.parametrize("path", ["fast", "plain"])
async def test_request_timeouts_over_a_connections_life(
    autojump_clock: trio.testing.MockClock, path: str
) -> None:
    """Each blocked handler gets its own `request_timeout` from when it blocks, whatever ran on
    the connection before: a finished handler's deadline never fires later, and a handler that
    blocks after a quiet spell still times out on time."""

    config = ServerConfig(request_timeout=7, keep_alive_timeout=60)
    with trio.fail_after(100):
        async with open_connection(serve, paths(waiting_app)[path], config) as client:
            received = bytearray()
            answers: list[tuple[float, int, bytes]] = []

            async def ask(at: float, target: str) -> None:
                await trio.sleep_until(at)
                await client.send_all(get(target)[1])
                (response,) = parse_responses(await next_response(client, received))
                answers.append((trio.current_time(), response.status, response.body))

            await ask(0, "/wait/5")  # timer armed at 0, done at 5
            await ask(6, "/wait/3")  # the first one's deadline (7) passes while this one runs
            await ask(10, "/now")
            await ask(20, "/stuck")  # blocks long after every earlier timer was done
            await ask(30, "/now")
    unavailable = (503, b"503 Service Unavailable\n")
    assert [(round(t, 6), status, body) for t, status, body in answers] == [
        (5, 200, b"/wait/5"),
        (9, 200, b"/wait/3"),
        (10, 200, b"/now"),
        (27, *unavailable),
        (30, 200, b"/now"),
    ]


@pytest.mark.parametrize("path", ["fast", "plain"])
async def test_a_request_timeout_cancels_only_its_own_handler(
    autojump_clock: trio.testing.MockClock, path: str
) -> None:
    """A stuck handler times out while a later one that finished earlier waits behind it in
    line: the timeout reaches the stuck handler alone, and the connection goes on (whichever
    task now leads, reads or runs what comes next)."""

    config = ServerConfig(request_timeout=7, keep_alive_timeout=60)
    with trio.fail_after(100):
        async with open_connection(serve, paths(waiting_app)[path], config) as client:
            answers: list[tuple[float, int]] = []

            async def read_answers() -> None:
                received = bytearray()
                for _ in range(4):
                    (response,) = parse_responses(await next_response(client, received))
                    answers.append((round(trio.current_time(), 6), response.status))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_answers)
                await client.send_all(get("/stuck")[1] + get("/wait/1")[1])
                await trio.sleep_until(2)
                await client.send_all(get("/wait/4")[1])  # done at 6, answered after the 503
                await trio.sleep_until(10)
                await client.send_all(get("/now")[1])
    assert answers == [(7, 503), (7, 200), (7, 200), (10, 200)]


async def next_response(client: trio.abc.ReceiveStream, received: bytearray) -> bytes:
    """The next whole response (Content-Length framed); what follows it stays in `received`."""
    head_end = await receive_until(client, b"\r\n\r\n", received)
    found = re.search(rb"(?i)\r\ncontent-length: *(\d+)", received[:head_end])
    assert found is not None
    length = int(found.group(1))
    while len(received) < head_end + length:
        received += await client.receive_some()
    data = bytes(received[: head_end + length])
    del received[: head_end + length]
    return data


# --- the pipeline policy --------------------------------------------------------------------


@pytest.mark.parametrize("post_blocks", [True, False], ids=["blocking-post", "instant-post"])
@pytest.mark.parametrize("path", ["fast", "plain"])
async def test_safe_policy_runs_a_post_alone(path: str, post_blocks: bool) -> None:
    """Under ``safe``: two GETs run concurrently; the POST starts only once both are done, and
    the GETs after it only once it is done."""
    log: list[str] = []
    release = trio.Event()

    @native
    async def app(request: HttpRequest) -> Response:
        name = request.target.decode()
        log.append(f"start {name}")
        if name in ("/g0", "/g1"):
            await release.wait()
        elif name == "/p" and post_blocks:
            for _ in range(3):
                await trio.sleep(0)
        elif name == "/g2":
            await trio.sleep(0)
        log.append(f"end {name}")
        return Response(request.target + b" " + bytes(request.body))

    post = request("POST", "/p", body=b"x")
    data = b"".join([get("/g0")[1], get("/g1")[1], post, get("/g2")[1], get("/g3")[1]])
    config = ServerConfig(pipeline_policy="safe")
    with trio.fail_after(10):
        async with open_connection(serve, paths(app)[path], config) as client:
            await client.send_all(data)
            await trio.testing.wait_all_tasks_blocked()
            assert log == ["start /g0", "start /g1"]  # concurrent GETs; the POST waits
            release.set()
            await client.send_eof()
            out = await receive_all(client)
    at = log.index
    assert max(at("end /g0"), at("end /g1")) < at("start /p") < at("end /p") < at("start /g2")
    assert at("start /g3") > at("end /p")
    assert [r.body for r in parse_responses(out)] == [b"/g0 ", b"/g1 ", b"/p x", b"/g2 ", b"/g3 "]


@pytest.mark.parametrize("policy", ["serial", "safe", "all"])
async def test_policies_bound_native_concurrency(policy: str) -> None:
    outputs = {}
    for path in ("fast", "plain"):
        running = peak = 0

        @native
        async def app(request: HttpRequest) -> Response:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            for _ in range(5):
                await trio.sleep(0)
            running -= 1
            return Response(request.method)

        config = ServerConfig(pipeline_policy=policy, max_in_flight=3)  # type: ignore[arg-type]
        data = get("/")[1] * 4 + request("POST", "/", body=b"x") * 4
        out = await run(paths(app)[path], data, config=config)
        assert [r.body for r in parse_responses(out)] == [b"GET"] * 4 + [b"POST"] * 4
        assert peak == {"serial": 1, "safe": 3, "all": 3}[policy], path
        outputs[path] = normalise(out)
    assert outputs["fast"] == outputs["plain"]


# --- buffer accounting ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["fast", "plain"])
async def test_long_pipeline_through_a_small_buffer_releases_every_byte(
    autojump_clock: trio.testing.MockClock, path: str
) -> None:
    """2,000 requests (instant GETs, POSTs with bodies that the safe policy holds back, GETs
    that suspend) through an 8 KiB buffer, in random pieces of up to 3,000 bytes: every one is
    answered, in order, and once all are answered the buffer holds nothing. A request whose
    bytes were never released would fill the buffer and stall the pipeline (the autojump
    clock then fires a timeout at once)."""
    buffers: list[SeekableBuffer] = []

    class RecordingBuffer(SeekableBuffer):
        def __init__(self, capacity: int, *, min_block: int) -> None:
            super().__init__(capacity, min_block=min_block)
            buffers.append(self)

    # the engine's buffer is its `ServerConnection`'s (a compiled build binds its globals: the
    # buffer's class and the connection's are arguments)
    connection = functools.partial(ServerConnection, buffer_type=RecordingBuffer)
    rng = random.Random(20240917)
    n = 2000
    parts: list[bytes] = []
    expected: list[bytes] = []
    for i in range(n):
        kind = rng.random()
        if kind < 0.15:  # suspends: its bytes are released out of order, by its own task
            target = f"/sleep/{rng.randint(1, 4)}/{i}"
            parts.append(get(target)[1])
            expected.append(target.encode())
        elif kind < 0.4:
            body = b"body %d" % i
            parts.append(request("POST", "/echo", body=body, chunked=rng.random() < 0.5))
            expected.append(body)
        else:
            parts.append(get(f"/t/{i}")[1])
            expected.append(b"/t/%d" % i)
    data = b"".join(parts)
    config = ServerConfig(buffer_size=8 * 1024, limits=Limits(max_head_size=2 * 1024))
    assert len(data) > 8 * config.buffer_size
    received = bytearray()
    with trio.fail_after(60):  # virtual time: it fails at once if the pipeline stalls
        serve_recording = functools.partial(serve, connection=connection)
        async with open_connection(serve_recording, paths(make_app([]))[path], config) as client:
            pos = 0
            while pos < len(data):
                size = rng.randint(1, 3000)
                await client.send_all(data[pos : pos + size])
                pos += size
                if rng.random() < 0.5:  # else the next piece queues up behind this one
                    await trio.testing.wait_all_tasks_blocked()
            while received.count(b"HTTP/1.1 ") < n:
                received += await client.receive_some()
            await trio.testing.wait_all_tasks_blocked()
            assert len(buffers) == 1
            assert len(buffers[0]) == 0  # every request's bytes released
            assert buffers[0].writable() == config.buffer_size
            await client.send_eof()
            received += await receive_all(client)
    assert [r.body for r in parse_responses(bytes(received))] == expected
