"""The pipeparse engine's own behaviour: concurrency, ordering, policies, limits, streaming.

Concurrency is shown with events (a handler that can only finish once a later request has
started), never with timing. Responses are parsed with h11 as the client.
"""

from __future__ import annotations

import h11
import pytest
import trio
import trio.testing

from pipeparse import HttpRequest, Limits
from pipeparse.servers.config import ServerConfig
from pipeparse.servers.engine_pipeparse import serve_connection
from pipeparse.servers.handlers import asgi_handler
from pipeparse.servers.protocol import Handler, Receive, ResponseSink, Scope, Send


def get(target: str, *extra: str) -> bytes:
    lines = [f"GET {target} HTTP/1.1", "Host: t", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post(target: str, body: bytes) -> bytes:
    return (
        f"POST {target} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def parse_responses(data: bytes, methods: list[bytes] | None = None) -> list[tuple[int, bytes]]:
    """Every complete response in `data`, as (status, body)."""
    client = h11.Connection(h11.CLIENT)
    client.receive_data(data)
    client.receive_data(b"")
    out: list[tuple[int, bytes]] = []
    i = 0
    while True:
        method = (methods[i] if methods and i < len(methods) else b"GET").decode()
        client.send(h11.Request(method=method, target="/", headers=[("Host", "t")]))
        client.send(h11.EndOfMessage())
        status = 0
        body = b""
        while True:
            try:
                event = client.next_event()
            except h11.RemoteProtocolError:
                return out
            if event in (h11.NEED_DATA, h11.PAUSED) or isinstance(event, h11.ConnectionClosed):
                return out
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                out.append((status, body))
                break
        i += 1
        if client.our_state is h11.MUST_CLOSE or client.their_state is h11.MUST_CLOSE:
            return out
        client.start_next_cycle()


async def exchange(
    handler: Handler, data: bytes, config: ServerConfig | None = None, chunk: int = 0
) -> bytes:
    """Send `data` (in `chunk`-byte pieces), half-close, return all the server sent."""
    client, server = trio.testing.memory_stream_pair()
    received = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_connection, server, handler, config or ServerConfig())
        step = chunk or len(data) or 1
        for i in range(0, len(data), step):
            await client.send_all(data[i : i + step])
        await client.send_eof()
        while chunk_ := await client.receive_some():
            received += chunk_
    return bytes(received)


async def text(sink: ResponseSink, body: bytes, status: int = 200) -> None:
    await sink.start(status, [(b"content-type", b"text/plain")])
    await sink.send(body)


async def echo_target(request: HttpRequest, sink: ResponseSink) -> None:
    body = await request.read()
    await text(sink, request.target + b" " + bytes(body))


@pytest.mark.parametrize("chunk", [0, 1, 7])
async def test_pipelined_requests_are_answered_in_order(chunk: int) -> None:
    data = get("/a") + post("/b", b"xyz") + get("/c")
    out = await exchange(echo_target, data, chunk=chunk)
    assert parse_responses(out) == [(200, b"/a "), (200, b"/b xyz"), (200, b"/c ")]


async def test_blocked_handlers_run_concurrently_and_answer_in_order() -> None:
    second_started = trio.Event()

    async def handler(request: HttpRequest, sink: ResponseSink) -> None:
        if request.target == b"/first":
            await second_started.wait()  # only possible if /second runs concurrently
        else:
            second_started.set()
        await text(sink, request.target)

    with trio.fail_after(5):
        out = await exchange(handler, get("/first") + get("/second"))
    assert parse_responses(out) == [(200, b"/first"), (200, b"/second")]


async def test_instant_handlers_run_inline_on_one_task() -> None:
    tasks: set[trio.lowlevel.Task] = set()

    async def handler(request: HttpRequest, sink: ResponseSink) -> None:
        tasks.add(trio.lowlevel.current_task())
        await text(sink, b"ok")

    out = await exchange(handler, get("/") * 50)
    assert len(parse_responses(out)) == 50
    assert len(tasks) == 1


async def test_safe_policy_holds_unsafe_requests_back() -> None:
    log: list[str] = []
    release_first = trio.Event()

    async def handler(request: HttpRequest, sink: ResponseSink) -> None:
        name = request.target.decode()
        log.append(f"start {name}")
        if name == "/g1":
            await release_first.wait()
        elif name == "/g2":
            release_first.set()  # never reached before /p is done under "safe"
        await trio.lowlevel.checkpoint()
        log.append(f"end {name}")
        await text(sink, name.encode())

    async def release_later() -> None:
        # /g1 waits for /g2, which the policy holds behind /p: the test releases it once /p
        # could have started, to show it did not start before /g1 finished.
        while "start /g1" not in log:
            await trio.lowlevel.checkpoint()
        for _ in range(50):
            await trio.lowlevel.checkpoint()
        assert "start /p" not in log
        release_first.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(release_later)
        out = await exchange(handler, get("/g1") + post("/p", b"1") + get("/g2"))
    assert log.index("end /g1") < log.index("start /p") < log.index("end /p")
    assert log.index("end /p") < log.index("start /g2")
    assert [b for _, b in parse_responses(out)] == [b"/g1", b"/p", b"/g2"]


@pytest.mark.parametrize("policy", ["serial", "safe", "all"])
async def test_policies_bound_concurrency(policy: str) -> None:
    running = 0
    peak = 0

    async def handler(request: HttpRequest, sink: ResponseSink) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        for _ in range(5):
            await trio.lowlevel.checkpoint()
        running -= 1
        await text(sink, b"")

    config = ServerConfig(pipeline_policy=policy, max_in_flight=3)  # type: ignore[arg-type]
    data = get("/") * 4 + post("/", b"x") * 4
    out = await exchange(handler, data, config)
    assert len(parse_responses(out)) == 8
    assert peak == {"serial": 1, "safe": 3, "all": 3}[policy]


async def test_max_in_flight_stops_reading() -> None:
    started = 0
    gate = trio.Event()

    async def handler(request: HttpRequest, sink: ResponseSink) -> None:
        nonlocal started
        started += 1
        await gate.wait()
        await text(sink, b"")

    client, server = trio.testing.memory_stream_pair()
    config = ServerConfig(max_in_flight=2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_connection, server, handler, config)
        for _ in range(5):
            await client.send_all(get("/"))
        await trio.testing.wait_all_tasks_blocked()
        assert started == 2
        gate.set()
        await client.send_eof()
        received = b""
        while data := await client.receive_some():
            received += data
    assert len(parse_responses(received)) == 5


async def test_handler_exception_gives_500_and_the_rest_is_answered() -> None:
    async def handler(request: HttpRequest, sink: ResponseSink) -> None:
        if request.target == b"/boom":
            raise ValueError("boom")
        await text(sink, request.target)

    out = await exchange(handler, get("/a") + get("/boom") + get("/c"))
    assert parse_responses(out) == [
        (200, b"/a"),
        (500, b"500 Internal Server Error\n"),
        (200, b"/c"),
    ]


async def test_connection_close_answers_then_nothing_after() -> None:
    seen: list[bytes] = []

    async def handler(request: HttpRequest, sink: ResponseSink) -> None:
        seen.append(request.target)
        await text(sink, request.target)

    out = await exchange(handler, get("/a") + get("/b", "Connection: close") + get("/c"))
    assert parse_responses(out) == [(200, b"/a"), (200, b"/b")]
    assert seen == [b"/a", b"/b"]
    assert b"connection: close" in out


async def test_protocol_error_after_valid_requests() -> None:
    seen: list[bytes] = []

    async def handler(request: HttpRequest, sink: ResponseSink) -> None:
        seen.append(request.target)
        await text(sink, request.target)

    bad = b"GET /bad HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
    out = await exchange(handler, get("/a") + get("/b") + bad + get("/c"))
    assert [s for s, _ in parse_responses(out)] == [200, 200, 400]
    assert seen == [b"/a", b"/b"]
    assert out.count(b"HTTP/1.1") == 3


async def test_body_larger_than_the_buffer_streams() -> None:
    body = bytes(range(256)) * 400  # 100 KiB through a 20 KiB buffer
    config = ServerConfig(buffer_size=20 * 1024, limits=Limits(max_head_size=4096))

    async def handler(request: HttpRequest, sink: ResponseSink) -> None:
        total = bytearray()
        async for piece in request.stream():
            total += piece
        await text(sink, b"%d %d" % (len(total), total == body))

    out = await exchange(handler, post("/", body) + get("/after"), config, chunk=4096)
    assert parse_responses(out) == [(200, b"102400 1"), (200, b"0 0")]


async def test_expect_100_continue() -> None:
    async def handler(request: HttpRequest, sink: ResponseSink) -> None:
        await text(sink, bytes(await request.read()))

    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_connection, server, handler, ServerConfig())
        await client.send_all(
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = await client.receive_some()
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        await client.send_all(b"abc")
        await client.send_eof()
        rest = bytes(interim[len(b"HTTP/1.1 100 Continue\r\n\r\n") :])
        while data := await client.receive_some():
            rest += data
    assert parse_responses(rest) == [(200, b"abc")]


async def test_streamed_response_is_chunked() -> None:
    async def handler(request: HttpRequest, sink: ResponseSink) -> None:
        await sink.start(200, [])
        await sink.send(b"ab", more=True)
        await sink.send(b"cd", more=True)
        await sink.send(b"", more=False)

    out = await exchange(handler, get("/") + get("/"))
    assert b"transfer-encoding: chunked" in out
    assert parse_responses(out) == [(200, b"abcd"), (200, b"abcd")]


async def test_head_and_204_have_no_body() -> None:
    async def handler(request: HttpRequest, sink: ResponseSink) -> None:
        await text(sink, b"hello", 204 if request.target == b"/204" else 200)

    data = b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n" + get("/204") + get("/")
    out = await exchange(handler, data)
    assert parse_responses(out, [b"HEAD", b"GET", b"GET"]) == [
        (200, b""),
        (204, b""),
        (200, b"hello"),
    ]
    assert b"content-length: 5" in out.split(b"\r\n\r\n")[0]


async def test_http10_closes_without_keep_alive() -> None:
    data = b"GET /a HTTP/1.0\r\n\r\nGET /b HTTP/1.0\r\n\r\n"
    out = await exchange(echo_target, data)
    assert out.count(b"HTTP/1.1 200") == 1
    assert b"connection: close" in out


async def test_idle_connection_closes_after_keep_alive_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = trio.testing.memory_stream_pair()
    config = ServerConfig(keep_alive_timeout=5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_connection, server, echo_target, config)
        await client.send_all(get("/a"))
        start = trio.current_time()
        received = b""
        while data := await client.receive_some():
            received += data
        assert trio.current_time() - start >= 5
    assert parse_responses(received) == [(200, b"/a ")]


async def _partial_exchange(handler: Handler, data: bytes, config: ServerConfig) -> bytes:
    """Send `data`, never finish it, read until the server closes."""
    client, server = trio.testing.memory_stream_pair()
    received = b""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_connection, server, handler, config)
        await client.send_all(data)
        while chunk_ := await client.receive_some():
            received += chunk_
    return received


async def test_header_timeout_answers_408(autojump_clock: trio.testing.MockClock) -> None:
    config = ServerConfig(header_timeout=3, keep_alive_timeout=100)
    start = trio.current_time()
    out = await _partial_exchange(echo_target, get("/a") + b"GET /slow HTTP/1.1\r\nHo", config)
    assert trio.current_time() - start >= 3
    assert [s for s, _ in parse_responses(out)] == [200, 408]


async def test_body_timeout_answers_408(autojump_clock: trio.testing.MockClock) -> None:
    config = ServerConfig(body_timeout=4, keep_alive_timeout=100)
    data = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc"
    start = trio.current_time()
    out = await _partial_exchange(echo_target, data, config)
    assert trio.current_time() - start >= 4
    assert [s for s, _ in parse_responses(out)] == [408]


async def test_request_timeout_answers_503_and_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def handler(request: HttpRequest, sink: ResponseSink) -> None:
        if request.target == b"/stuck":
            await trio.sleep_forever()
        await text(sink, request.target)

    config = ServerConfig(request_timeout=7)
    out = await exchange(handler, get("/stuck") + get("/b"), config)
    assert parse_responses(out) == [(503, b"503 Service Unavailable\n"), (200, b"/b")]


async def test_keep_alive_timer_does_not_run_while_requests_are_in_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def handler(request: HttpRequest, sink: ResponseSink) -> None:
        await trio.sleep(20)  # longer than the keep-alive timeout
        await text(sink, b"late")

    config = ServerConfig(keep_alive_timeout=5, request_timeout=60)
    out = await _partial_exchange(handler, get("/"), config)
    assert parse_responses(out) == [(200, b"late")]


async def test_a_client_that_never_reads_is_held_back() -> None:
    """Back-pressure: with no buffering between the ends, a client that pipelines without
    reading stops being read once the server's bounded buffer and in-flight slots fill."""
    handled = 0

    async def handler(request: HttpRequest, sink: ResponseSink) -> None:
        nonlocal handled
        handled += 1
        await text(sink, b"x" * 100)

    client, server = trio.testing.lockstep_stream_pair()
    request = get("/")
    config = ServerConfig(buffer_size=32 * 1024, max_in_flight=8)
    sent = 0

    async def pipeline() -> None:
        nonlocal sent
        for _ in range(100_000):
            await client.send_all(request)
            sent += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_connection, server, handler, config)
        nursery.start_soon(pipeline)
        await trio.testing.wait_all_tasks_blocked()
        # The server answered what it could send, then stopped reading: bounded work.
        bound = config.buffer_size // len(request) + config.max_in_flight + 1
        assert 0 < handled <= bound
        assert handled <= sent <= bound + 1
        nursery.cancel_scope.cancel()


async def test_streamed_body_of_a_closing_request_is_still_received() -> None:
    """Connection: close stops dispatching, not receiving the last request's own body."""

    async def handler(request: HttpRequest, sink: ResponseSink) -> None:
        await text(sink, b"%d" % len(await request.read()))

    client, server = trio.testing.memory_stream_pair()
    head = (
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n"
        b"Connection: close\r\n\r\n"
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_connection, server, handler, ServerConfig())
        await client.send_all(head)
        interim = await client.receive_some()
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        await client.send_all(b"hello")
        rest = bytes(interim[len(b"HTTP/1.1 100 Continue\r\n\r\n") :])
        while data := await client.receive_some():
            rest += data
    assert parse_responses(rest) == [(200, b"5")]


async def test_many_tiny_chunks_stream_through_a_small_buffer() -> None:
    """Chunk-size lines are released as the pieces go, so they never fill the buffer."""
    n = 30_000
    body = b"".join(b"1\r\nx\r\n" for _ in range(n)) + b"0\r\n\r\n"
    data = b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    config = ServerConfig(buffer_size=32 * 1024, limits=Limits(max_head_size=4096))

    async def handler(request: HttpRequest, sink: ResponseSink) -> None:
        await text(sink, b"%d" % len(await request.read()))

    with trio.fail_after(30):
        out = await exchange(handler, data + get("/after"), config, chunk=8192)
    assert parse_responses(out) == [(200, b"%d" % n), (200, b"0")]


@pytest.mark.parametrize("last", ["connection-close", "http10"])
async def test_body_larger_than_the_buffer_streams_on_the_last_request(last: str) -> None:
    """A closing request stops dispatching, not back-pressure: while its slow handler lags,
    the leader waits for space instead of receiving into a full buffer (BufferFull)."""
    body = bytes(range(256)) * 400  # 100 KiB through a 20 KiB buffer
    config = ServerConfig(buffer_size=20 * 1024, limits=Limits(max_head_size=4096))
    if last == "http10":
        head = b"POST / HTTP/1.0\r\nContent-Length: %d\r\n\r\n" % len(body)
    else:
        head = b"POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
        head %= len(body)

    async def handler(request: HttpRequest, sink: ResponseSink) -> None:
        total = bytearray()
        async for piece in request.stream():
            total += piece
            for _ in range(5):  # slower than the receives: the buffer fills up
                await trio.lowlevel.checkpoint()
        await text(sink, b"%d %d" % (len(total), total == body))

    with trio.fail_after(30):
        out = await exchange(handler, head + body, config, chunk=4096)
    assert parse_responses(out) == [(200, b"102400 1")]


def _close_while_blocked_handlers(seen: list[str]) -> dict[str, Handler]:
    """The same app twice: a plain sink handler, and an ASGI app through `asgi_handler`."""

    async def sink_handler(request: HttpRequest, sink: ResponseSink) -> None:
        seen.append(request.target.decode())
        if request.target == b"/slow":
            await trio.sleep(1)  # blocks: the leader role moves on while it sleeps
        await text(sink, request.target)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["path"])
        if scope["path"] == "/slow":
            await trio.sleep(1)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})

    return {"sink": sink_handler, "asgi": asgi_handler(app)}


@pytest.mark.parametrize("path", ["sink", "asgi"])
async def test_nothing_after_a_blocked_closing_request_runs(
    path: str, autojump_clock: trio.testing.MockClock
) -> None:
    """`Connection: close` on a request whose handler blocks: the request framed after it is
    never dispatched while it sleeps (RFC 9112 §9.6), on the sink and ASGI paths too."""
    seen: list[str] = []
    handler = _close_while_blocked_handlers(seen)[path]
    data = get("/a") + get("/slow", "Connection: close") + get("/never")
    out = await exchange(handler, data)
    assert parse_responses(out) == [(200, b"/a"), (200, b"/slow")]
    assert seen == ["/a", "/slow"]


@pytest.mark.parametrize(
    ("name", "pieces", "expected"),
    [
        ("length-one-receive", [post("/", b"hello")], memoryview),
        ("length-two-receives", [post("/", b"hello")[:-2], b"lo"], bytes),
        ("one-chunk", [b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"5\r\nhello\r\n0\r\n\r\n"], memoryview),
        ("two-chunks", [b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n"], bytes),
    ],
)  # fmt: skip
async def test_request_body_is_a_view_only_when_it_is_one_piece(
    name: str, pieces: list[bytes], expected: type
) -> None:
    """What the README promises: `request.body` is a view into the receive buffer when the
    body is one piece, else a joined copy."""
    seen: list[tuple[type, bytes]] = []

    async def handler(request: HttpRequest, sink: ResponseSink) -> None:
        seen.append((type(request.body), bytes(request.body)))
        await text(sink, b"ok")

    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_connection, server, handler, ServerConfig())
        for piece in pieces:
            await client.send_all(piece)
            await trio.testing.wait_all_tasks_blocked()  # the engine receives each alone
        await client.send_eof()
        while await client.receive_some():
            pass
    assert seen == [(expected, b"hello")]
