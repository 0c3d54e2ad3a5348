"""Random and mutated byte streams through the pipeparse engine (over memory streams).

Whatever arrives, the server never crashes and never hangs, answers exactly the requests that
`parse_requests` frames before the first error (up to the first that closes the connection),
answers a framing error with its 4xx, and never answers anything after it.
"""

from __future__ import annotations

import h11
import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeparse import HttpRequest, ProtocolError, Request, parse_requests
from pipeparse.servers.config import ServerConfig
from pipeparse.servers.engine_pipeparse import serve_connection
from pipeparse.servers.protocol import ResponseSink
from tests.server_harness import parse_responses
from tests.test_engine_pipeparse import exchange

PIECES = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /x?y=1 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3;e=1\r\nabc\r\n0\r\nT: v\r\n\r\n",
    b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /close HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"GET /old HTTP/1.0\r\n\r\n",
    b"POST /smuggle HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: v\r\n\r\n",
]


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    parts = draw(st.lists(st.sampled_from(PIECES), min_size=1, max_size=6))
    data = bytearray(b"".join(parts))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["flip", "insert", "delete"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif data:
            del data[at : at + draw(st.integers(1, 4))]
    return bytes(data)


def expected(data: bytes) -> tuple[list[Request], ProtocolError | None]:
    try:
        requests, error = parse_requests(data, allow_partial=True), None
    except ProtocolError as e:
        requests, error = e.requests_before, e
    for i, r in enumerate(requests):
        # Connection is a list of tokens (RFC 9110 §7.6.1): "!close" is not "close".
        values = b",".join(v for n, v in r.headers if n == b"connection")
        tokens = {t.strip().lower() for t in values.split(b",")}
        if b"close" in tokens or (r.http_version == b"1.0" and b"keep-alive" not in tokens):
            return requests[: i + 1], None  # nothing after a closing request is answered
    return requests, error


def statuses(out: bytes, methods: list[bytes]) -> list[int]:
    client = h11.Connection(h11.CLIENT)
    client.receive_data(out)
    client.receive_data(b"")
    found: list[int] = []
    for method in [*methods, b"GET"]:
        client.send(h11.Request(method=method, target="/", headers=[("Host", "a")]))
        client.send(h11.EndOfMessage())
        while True:
            try:
                event = client.next_event()
            except h11.RemoteProtocolError:  # the server closed before this response
                return found
            if isinstance(event, h11.Response):
                found.append(event.status_code)
            if isinstance(event, h11.EndOfMessage):
                break
            if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                return found
        if client.their_state is h11.MUST_CLOSE:
            return found
        client.start_next_cycle()
    return found


async def echo(request: HttpRequest, sink: ResponseSink) -> None:
    body = await request.read()
    await sink.start(200, [(b"content-type", b"text/plain")])
    await sink.send(bytes(body))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=streams(), chunk=st.sampled_from([0, 1, 5, 64]))
@example(  # found by hypothesis: "!close" is a token of its own, not "close"
    data=b"GET /close HTTP/1.1\r\nHost: a\r\nConnection:!close\r\n\r\n"
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    chunk=0,
)
@example(  # a 400's body quotes the request line: responses are counted by parsing
    data=b"POST /p HTTP/1.1 \r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", chunk=0
)
async def test_server_answers_exactly_what_frames_before_an_error(data: bytes, chunk: int) -> None:
    requests, error = expected(data)
    config = ServerConfig(keep_alive_timeout=1, header_timeout=1, body_timeout=1)
    with trio.fail_after(30):
        out = await exchange(echo, data, config, chunk=chunk)
    methods = [r.method for r in requests]
    got = statuses(out, methods)
    want = [200] * len(requests) + ([error.status_hint] if error is not None else [])
    assert got == want
    # Nothing after the last complete response: no stray bytes from a later request (a strict
    # parse of the whole output; counting "HTTP/1.1 " would also count quotes in 4xx bodies).
    parsed = parse_responses(out, [m.decode() for m in methods])
    assert [r.status for r in parsed] == want


async def test_serve_connection_with_only_garbage_closes() -> None:
    async def never(request: HttpRequest, sink: ResponseSink) -> None:
        raise AssertionError("no request should reach the app")

    out = await exchange(never, b"\x00\x01garbage\r\n\r\n", ServerConfig())
    assert out.startswith(b"HTTP/1.1 400 ")
    assert out.count(b"HTTP/1.1") == 1


async def test_serve_connection_returns_on_immediate_eof() -> None:
    with trio.fail_after(5):
        out = await exchange(echo, b"", ServerConfig())
    assert out == b""
    assert serve_connection is not None
