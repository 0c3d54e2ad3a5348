"""Request smuggling resistance, end to end over real loopback sockets, for both engines.

Each malformed request comes after two valid pipelined requests, and is followed by a valid
request and a stretch of junk that the client is still sending while the server closes. The two
earlier requests are answered, the bad one gets its 4xx, nothing after it is answered, and the
client reads all of it without a reset: the server closed in stages (RFC 9112 §9.6).
"""

from __future__ import annotations

import contextlib
import functools

import pytest
import trio

import pipeparse
from pipeparse.servers.listen import Server

GOOD = b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n"
AFTER = b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n"

BAD = {
    "CL and TE": (
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n",
        400,
    ),
    "TE and CL": (
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
        b"0\r\n\r\n",
        400,
    ),
    "two Content-Lengths": (
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        400,
    ),
    "Content-Length with a sign": (
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +3\r\n\r\nabc",
        400,
    ),
    "unknown coding": (
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: zork\r\n\r\n",
        501,
    ),
    "chunked not final": (
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        400,
    ),
    "bad chunk size": (
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
        400,
    ),
    "chunk data without its CRLF": (
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXX0\r\n\r\n",
        400,
    ),
    "obs-fold": (b"GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n b\r\n\r\n", 400),
    "space before colon": (b"GET / HTTP/1.1\r\nHost: t\r\nX : a\r\n\r\n", 400),
    "control character": (b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x01b\r\n\r\n", 400),
    "missing Host": (b"GET / HTTP/1.1\r\nX: a\r\n\r\n", 400),
    "two Hosts": (b"GET / HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n", 400),
    "bad request line": (b"GET  / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    "Host with a space": (b"GET / HTTP/1.1\r\nHost: exa mple.com\r\n\r\n", 400),
    "Host with userinfo": (b"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n", 400),
    "Host with a bad port": (b"GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", 400),
    "Host with an unclosed IPv6 literal": (b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400),
    "asterisk form with GET": (b"GET * HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    "authority form with GET": (b"GET t:443 HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    "absolute form with userinfo": (b"GET http://u@t/ HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    "CONNECT with the origin form": (b"CONNECT / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    # Answered by the server itself; what follows (AFTER) would be tunnel data, never parsed.
    "CONNECT": (b"CONNECT t:443 HTTP/1.1\r\nHost: t:443\r\n\r\n", 501),
    "Transfer-Encoding over two lines, chunked not final": (
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: deflate\r\n\r\n0\r\n\r\n",
        400,
    ),
    "Transfer-Encoding over two lines, deflate then chunked": (
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: deflate\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        501,
    ),
    "too many empty lines": (b"\r\n" * 5 + GOOD, 400),
    "a bare LF as an empty line": (b"\n" + GOOD, 400),
    "a bare CR as an empty line": (b"\rX" + GOOD, 400),
}


async def _exchange(port: int, data: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    received = bytearray()
    async with stream:
        await stream.send_all(data)
        # Keep sending after the bad request, as a pipelining client would, while reading.
        with contextlib.suppress(trio.BrokenResourceError):  # it may have closed already
            await stream.send_all(b"X" * 65536)
        while chunk := await stream.receive_some(65536):
            received += chunk
    return bytes(received)


# Where the h11 engine answers differently, and why that is still safe.
# h11: "only Transfer-Encoding: chunked is supported".
H11_STATUS = {"chunked not final": 501, "Transfer-Encoding over two lines, chunked not final": 501}
H11_UNFOLDS = "obs-fold"  # RFC 9112 §5.2 lets a server replace obs-fold with SP (h11 does)


@pytest.mark.parametrize("engine", ["pipeparse", "h11"])
@pytest.mark.parametrize("case", list(BAD))
async def test_a_malformed_request_after_valid_ones(engine: str, case: str) -> None:
    bad, status = BAD[case]
    if engine == "h11":
        status = H11_STATUS.get(case, status)
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(
            functools.partial(pipeparse.serve, "echo", port=0, engine=engine)
        )
        with trio.fail_after(30):
            out = await _exchange(server.port, GOOD + GOOD + bad + AFTER)
        server.shutdown()
    if engine == "h11" and case == H11_UNFOLDS:
        # One request, unfolded, then the junk is a bad request: nothing is smuggled.
        assert out.count(b"HTTP/1.1 200 OK") == 4
        assert out.count(b"HTTP/1.1 ") == 5
        return
    assert out.count(b"HTTP/1.1 200 OK") == 2
    assert out.count(b"HTTP/1.1 ") == 3
    assert out[out.rindex(b"HTTP/1.1 ") :].startswith(b"HTTP/1.1 %d " % status)
    assert b"/after" not in out


@pytest.mark.parametrize("engine", ["pipeparse", "h11"])
async def test_empty_lines_before_request_lines_are_ignored(engine: str) -> None:
    # RFC 9112 §2.2: at the start, between requests, after a body (some clients add a CRLF
    # after a POST body), up to `max_empty_lines` (4) in a row, split across sends.
    post = b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nab"
    sends = [b"\r\n" + GOOD + b"\r\n\r", b"\n" + post + b"\r\n", b"\r\n" * 3 + GOOD]
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(
            functools.partial(pipeparse.serve, "echo", port=0, engine=engine)
        )
        received = bytearray()
        with trio.fail_after(30):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                for data in sends:
                    await stream.send_all(data)
                    await trio.testing.wait_all_tasks_blocked()
                while received.count(b"HTTP/1.1 ") < 3:
                    chunk = await stream.receive_some(65536)
                    assert chunk, bytes(received)
                    received += chunk
        server.shutdown()
    assert received.count(b"HTTP/1.1 200 OK") == 3
    assert b'"method":"POST"' in received or b'"method": "POST"' in received
