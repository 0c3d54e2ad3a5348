"""Bodies larger than the receive buffer, over real sockets, on every request of a connection.

A body larger than the buffer streams to its handler piece by piece. The last request of a
connection (``Connection: close``, or HTTP/1.0 without keep-alive) stops dispatching, not
receiving: its own body must still stream in and be answered (issue 11, item 6). Each test
runs the built-in ``echo`` app with `pipeparse.serve` on a loopback port, sends one large body
and checks the answer's ``body_len`` and ``body_sha256``; both engines, both interfaces.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

import pipeparse
from pipeparse import MiB
from pipeparse.servers.listen import Server
from tests.server_harness import parse_responses, receive_all

SAFETY = 60.0  # seconds: only a hang ever gets near this
SIZES = {"1MiB": 1 * MiB, "16MiB": 16 * MiB}
ENGINES = ("pipeparse", "h11")
INTERFACES = ("native", "asgi")

parametrize_servers = pytest.mark.parametrize(
    ("engine", "interface"),
    [(e, i) for e in ENGINES for i in INTERFACES],
    ids=[f"{e}-{i}" for e in ENGINES for i in INTERFACES],
)
parametrize_sizes = pytest.mark.parametrize("size", list(SIZES.values()), ids=list(SIZES))


def payload(size: int) -> bytes:
    """`size` bytes that are not all alike (a lost or repeated piece changes the digest)."""
    return (bytes(range(256)) * (size // 256 + 1))[:size]


@asynccontextmanager
async def echo_server(engine: str, interface: str) -> AsyncIterator[Server]:
    """The echo app on a free loopback port (its default buffer is smaller than these bodies)."""
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(
            partial(pipeparse.serve, "echo", port=0, engine=engine, interface=interface)
        )
        try:
            yield server
        finally:
            server.abort()


def check_echo(document: dict[str, Any], body: bytes) -> None:
    assert document["body_len"] == len(body)
    assert document["body_sha256"] == hashlib.sha256(body).hexdigest()


async def post_and_read(port: int, head: bytes, body: bytes) -> bytes:
    """Send `head` and `body` on a fresh connection; everything received until the server
    closes (the requests here are all the connection's last)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(head)
        await stream.send_all(body)
        return bytes(await receive_all(stream))


@parametrize_servers
@parametrize_sizes
@pytest.mark.parametrize("last", ["connection-close", "http10"])
async def test_a_large_body_on_the_last_request_is_answered(
    engine: str, interface: str, size: int, last: str
) -> None:
    body = payload(size)
    if last == "http10":
        head = b"POST /upload HTTP/1.0\r\nContent-Length: %d\r\n\r\n" % size
    else:
        head = b"POST /upload HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        head += b"Content-Length: %d\r\n\r\n" % size
    with trio.fail_after(SAFETY):
        async with echo_server(engine, interface) as server:
            received = await post_and_read(server.port, head, body)
    [response] = parse_responses(received)
    assert response.status == 200
    check_echo(response.json(), body)


@parametrize_servers
async def test_a_large_chunked_body_on_the_last_request_is_answered(
    engine: str, interface: str
) -> None:
    body = payload(1 * MiB)
    piece = 64 * 1024
    chunked = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + piece]), body[i : i + piece])
        for i in range(0, len(body), piece)
    )
    head = b"POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
    with trio.fail_after(SAFETY):
        async with echo_server(engine, interface) as server:
            received = await post_and_read(server.port, head, chunked + b"0\r\n\r\n")
    [response] = parse_responses(received)
    assert response.status == 200
    check_echo(response.json(), body)


@parametrize_servers
async def test_large_bodies_before_the_last_request_and_on_it(engine: str, interface: str) -> None:
    """Keep-alive requests with large bodies, then a closing one: all answered, in order."""
    bodies = [payload(1 * MiB), payload(MiB // 2)[::-1], payload(2 * MiB)]
    data = b""
    for i, body in enumerate(bodies):
        close = b"Connection: close\r\n" if i == len(bodies) - 1 else b""
        data += b"POST / HTTP/1.1\r\nHost: t\r\n%sContent-Length: %d\r\n\r\n" % (close, len(body))
        data += body
    with trio.fail_after(SAFETY):
        async with echo_server(engine, interface) as server:
            received = await post_and_read(server.port, b"", data)
    responses = parse_responses(received)
    assert [r.status for r in responses] == [200, 200, 200]
    for response, body in zip(responses, bodies, strict=True):
        check_echo(response.json(), body)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("interface", INTERFACES)
@pytest.mark.parametrize("flags", [["-H", "Connection: close"], ["-0"]], ids=["close", "http10"])
async def test_curl_uploads_a_large_body_on_its_last_request(
    interface: str, flags: list[str], tmp_path: Path
) -> None:
    """What a user tried: ``curl --data-binary @file -H 'Connection: close'`` (and ``-0``)."""
    body = payload(1 * MiB)
    upload = tmp_path / "upload.bin"
    upload.write_bytes(body)
    with trio.fail_after(SAFETY):
        async with echo_server("pipeparse", interface) as server:
            command = ["curl", "-sS", "--max-time", str(SAFETY), *flags, "--data-binary"]
            command += [f"@{upload}", f"{server.url}/"]
            done = await trio.run_process(command, capture_stdout=True, capture_stderr=True)
    check_echo(json.loads(done.stdout), body)
