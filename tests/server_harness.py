"""A harness for engine tests: run an engine over trio memory streams, parse what it answers.

Strategy: an engine is any ``serve_connection(stream, handler, config, client)``; `ENGINES` names
them and `parametrize_engines` runs a test once per engine, so one suite covers every engine.
`exchange` runs the engine on one end of `trio.testing.memory_stream_pair()`, writes the client's
bytes whole, byte by byte, or in random chunks (fixed seed; between pieces it waits until every
task is blocked, so the engine really sees each piece alone), shuts the client's write side, and
returns everything the engine sent until it closed. `parse_responses` is a small, strict
response parser written for these tests (independent of h11, which one engine is built on).
`RecordingSink`, `ScriptedSource` and `make_request` test handlers without any engine.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing

from pipeparse import HttpRequest
from pipeparse.servers import engine_h11, engine_pipeparse
from pipeparse.servers.config import ServerConfig
from pipeparse.servers.protocol import Handler

__all__ = [
    "CHUNKINGS",
    "CLIENT",
    "ENGINES",
    "ParsedResponse",
    "RecordingSink",
    "ScriptedSource",
    "ServeConnection",
    "exchange",
    "make_request",
    "open_connection",
    "parametrize_chunkings",
    "parametrize_engines",
    "parse_responses",
    "receive_all",
    "receive_until",
    "request",
    "send_chunked",
]

ServeConnection = Callable[
    [trio.abc.Stream, Handler, ServerConfig, tuple[str, int] | None], Awaitable[None]
]

ENGINES: dict[str, ServeConnection] = {
    "pipeparse": engine_pipeparse.serve_connection,
    "h11": engine_h11.serve_connection,
}

CHUNKINGS = ("whole", "bytes", "random")
SEED = 20240917
CLIENT = ("127.0.0.1", 54321)

parametrize_engines = pytest.mark.parametrize("serve", list(ENGINES.values()), ids=list(ENGINES))
parametrize_chunkings = pytest.mark.parametrize("chunking", CHUNKINGS)


async def send_chunked(
    stream: trio.abc.SendStream, data: bytes, chunking: str = "whole", seed: int = SEED
) -> None:
    """Write `data`: ``whole``, ``bytes`` (one byte at a time) or ``random`` (1..64 bytes)."""
    if chunking == "whole":
        await stream.send_all(data)
        return
    if chunking not in CHUNKINGS:
        raise ValueError(f"unknown chunking {chunking!r}")
    rng = random.Random(seed)
    pos = 0
    while pos < len(data):
        size = 1 if chunking == "bytes" else rng.randint(1, 64)
        await stream.send_all(data[pos : pos + size])
        pos += size
        await trio.testing.wait_all_tasks_blocked()


async def receive_all(stream: trio.abc.ReceiveStream) -> bytes:
    """Everything `stream` receives until its end."""
    received = bytearray()
    while chunk := await stream.receive_some():
        received += chunk
    return bytes(received)


async def receive_until(stream: trio.abc.ReceiveStream, marker: bytes, received: bytearray) -> int:
    """Receive into `received` until it contains `marker`; the index just past the marker.

    Raises AssertionError if the stream ends first.
    """
    while (index := received.find(marker)) < 0:
        chunk = await stream.receive_some()
        if not chunk:
            raise AssertionError(f"stream ended before {marker!r}; got {bytes(received)!r}")
        received += chunk
    return index + len(marker)


@asynccontextmanager
async def open_connection(
    serve: ServeConnection,
    handler: Handler,
    config: ServerConfig | None = None,
    client: tuple[str, int] | None = CLIENT,
) -> AsyncIterator[trio.StapledStream[Any, Any]]:
    """Run `serve` on one end of a memory stream pair; yield the client's end.

    On exit, the client's end is closed and the engine must finish (a hung engine fails the
    test through the caller's timeout).
    """
    config = config if config is not None else ServerConfig()
    server_end, client_end = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve, server_end, handler, config, client)
        try:
            yield client_end
        finally:
            await client_end.aclose()


async def exchange(
    serve: ServeConnection,
    handler: Handler,
    data: bytes,
    chunking: str = "whole",
    config: ServerConfig | None = None,
    *,
    close_write: bool = True,
    timeout: float = 60.0,
) -> bytes:
    """Send `data` to an engine, then everything it answered until it closed.

    Args:
        close_write: shut the client's write side after `data` (the engine sees EOF); without
            it, the engine must close by itself (``Connection: close``, an error, a timeout).
        timeout: fail if the engine has not closed by then (virtual time under autojump_clock).
    """
    with trio.fail_after(timeout):
        async with open_connection(serve, handler, config) as client_end:
            try:
                await send_chunked(client_end, data, chunking)
                if close_write:
                    await client_end.send_eof()
            except trio.BrokenResourceError:
                pass  # the engine closed before reading everything (after an error, say)
            return await receive_all(client_end)


def request(
    method: str = "GET",
    target: str = "/",
    *,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes | None = None,
    version: str = "1.1",
    host: str | None = "example.test",
    chunked: bool = False,
) -> bytes:
    """One request's bytes. A `body` gets Content-Length, or is sent in 2 chunks if `chunked`."""
    lines = [f"{method} {target} HTTP/{version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{n}: {v}" for n, v in headers]
    payload = b""
    if body is not None:
        if chunked:
            lines.append("Transfer-Encoding: chunked")
            half = len(body) // 2
            for piece in (body[:half], body[half:]):
                if piece:
                    payload += b"%x\r\n%s\r\n" % (len(piece), piece)
            payload += b"0\r\n\r\n"
        else:
            lines.append(f"Content-Length: {len(body)}")
            payload = body
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + payload


@dataclass
class ParsedResponse:
    """One response as the client saw it. Header names are lowercased, in order."""

    http_version: bytes
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    chunked: bool = False
    informational: list[ParsedResponse] = field(default_factory=list)

    def header(self, name: str) -> bytes | None:
        """The only value of field `name` (None if absent); fails if it appears twice."""
        values = self.header_values(name)
        assert len(values) <= 1, f"field {name!r} appears {len(values)} times: {values!r}"
        return values[0] if values else None

    def header_values(self, name: str) -> list[bytes]:
        key = name.lower().encode()
        return [v for n, v in self.headers if n == key]

    def json(self) -> Any:
        return json.loads(self.body)


_STATUS_LINE = re.compile(rb"HTTP/(1\.[01]) ([0-9]{3}) ([^\r\n]*)")
_FIELD = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([^\r\n]*?)[ \t]*")


def parse_responses(data: bytes, methods: Sequence[str] | None = None) -> list[ParsedResponse]:
    """Parse every response in `data`, strictly; fail on anything malformed or incomplete.

    Args:
        methods: the request methods in order, when some were HEAD (their responses have no
            body whatever their Content-Length); default all GET.
    """
    responses: list[ParsedResponse] = []
    interim: list[ParsedResponse] = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        assert end >= 0, f"incomplete response head at {pos}: {data[pos : pos + 200]!r}"
        lines = data[pos:end].split(b"\r\n")
        m = _STATUS_LINE.fullmatch(lines[0])
        assert m, f"bad status line {lines[0]!r}"
        headers = []
        for line in lines[1:]:
            fm = _FIELD.fullmatch(line)
            assert fm, f"bad field line {line!r}"
            headers.append((fm.group(1).lower(), fm.group(2)))
        status = int(m.group(2))
        response = ParsedResponse(m.group(1), status, m.group(3), headers, b"")
        pos = end + 4
        if 100 <= status < 200:
            interim.append(response)
            continue
        method = methods[len(responses)] if methods and len(responses) < len(methods) else "GET"
        encoding = response.header("transfer-encoding")
        length = response.header("content-length")
        if method == "HEAD" or status in (204, 304):
            pass
        elif encoding is not None:
            assert encoding.lower() == b"chunked", f"unexpected Transfer-Encoding {encoding!r}"
            assert length is None, "both Transfer-Encoding and Content-Length in a response"
            response.body, pos = _parse_chunked(data, pos)
            response.chunked = True
        elif length is not None:
            assert length.isdigit(), f"bad Content-Length {length!r}"
            size = int(length)
            assert pos + size <= len(data), f"body cut short: {len(data) - pos} of {size} bytes"
            response.body = data[pos : pos + size]
            pos += size
        else:  # delimited by the close
            response.body = data[pos:]
            pos = len(data)
        response.informational = interim
        interim = []
        responses.append(response)
    assert not interim, "an informational response with no final response after it"
    return responses


def _parse_chunked(data: bytes, pos: int) -> tuple[bytes, int]:
    body = bytearray()
    while True:
        end = data.find(b"\r\n", pos)
        assert end >= 0, "incomplete chunk size line"
        size_text = data[pos:end].split(b";", 1)[0]
        assert re.fullmatch(rb"[0-9A-Fa-f]+", size_text), f"bad chunk size {size_text!r}"
        size = int(size_text, 16)
        pos = end + 2
        if size == 0:
            end = data.find(b"\r\n\r\n", pos - 2)
            assert end >= 0, "incomplete chunked trailer"
            return bytes(body), end + 4
        assert data[pos + size : pos + size + 2] == b"\r\n", "chunk data not followed by CRLF"
        body += data[pos : pos + size]
        pos += size + 2


# --- handler-level helpers (no engine) -----------------------------------------------------


class RecordingSink:
    """A `ResponseSink` that records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.started = False

    async def start(self, status: int, headers: Sequence[tuple[bytes, bytes]]) -> None:
        assert not self.started
        self.started = True
        self.calls.append(("start", status, list(headers)))

    async def send(self, data: bytes | bytearray | memoryview, more: bool = False) -> None:
        assert self.started
        self.calls.append(("send", bytes(data), more))


class ScriptedSource:
    """A `BodySource` that yields scripted pieces; `gone` ends `wait_disconnect`."""

    def __init__(self, pieces: Sequence[bytes | Exception] = ()) -> None:
        self.pieces = list(pieces)
        self.gone = trio.Event()

    async def next_chunk(self) -> bytes | memoryview | None:
        await trio.lowlevel.checkpoint()
        if not self.pieces:
            return None
        piece = self.pieces.pop(0)
        if isinstance(piece, Exception):
            raise piece
        return piece

    async def wait_disconnect(self) -> None:
        await self.gone.wait()


def make_request(
    method: bytes = b"GET",
    target: bytes = b"/",
    body: bytes | memoryview | None = b"",
    source: ScriptedSource | None = None,
    headers: Sequence[tuple[bytes, bytes]] = ((b"host", b"a"),),
    seq: int = 0,
) -> HttpRequest:
    return HttpRequest(
        method, target, b"1.1", headers, seq, body, source or ScriptedSource(), ("10.0.0.1", 5)
    )
