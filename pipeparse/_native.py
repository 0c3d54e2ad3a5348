"""The native handler interface: ``async def handler(request: HttpRequest) -> Response``.

The fast path. A handler gets the parsed head and, when the whole body had arrived before it
started (the usual case), the body: no per-request channel. The pipeparse engine gives a body
of one piece (one chunk at most, in one receive) as a view into the receive buffer, with no
copy, and joins a body of several pieces into one `bytes`. A larger body streams through
`stream()` / `read()`. Pick ASGI for frameworks and portability; pick native when per-request
overhead matters (see the README).

A view is valid while the handler runs; copy it (``bytes(view)``) to keep it longer.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from mypy_extensions import mypyc_attr

__all__ = ["NATIVE_MARK", "BodySource", "BodyStream", "HttpRequest", "Response", "native"]

Headers = Sequence[tuple[bytes, bytes]]
NATIVE_MARK = "__pipeparse_native__"
_F = TypeVar("_F", bound=Callable[..., Any])


def native(fn: _F) -> _F:
    """Mark ``async def handler(request: HttpRequest) -> Response`` as a native handler."""
    if not callable(fn):
        raise TypeError(f"@native needs an async function, got {fn!r}")
    setattr(fn, NATIVE_MARK, True)
    return fn


class BodySource(Protocol):
    """What an engine gives a request for the parts of its life that are still to come."""

    async def next_chunk(self) -> bytes | memoryview | None:
        """The next piece of the body, or None at its end."""
        ...

    async def wait_disconnect(self) -> None:
        """Return once the client has gone (or the connection is closing)."""
        ...


@mypyc_attr(allow_interpreted_subclasses=True)  # (a public record: users may subclass it)
class HttpRequest:
    """A request as a native handler sees it.

    Attributes:
        method, target: bytes as sent. http_version: ``b"1.1"`` or ``b"1.0"``.
        headers: ``(lowercased name, value)`` pairs in the order sent.
        seq: the request's index on its connection, from 0.
        client: the peer's ``(host, port)``, when known (behind a trusted proxy with proxy
            headers on, the address the proxy forwarded for).
        scheme: ``"http"`` or ``"https"`` (TLS, or what a trusted proxy said).
    """

    __slots__ = (
        "_body",
        "_source",
        "client",
        "headers",
        "http_version",
        "method",
        "scheme",
        "seq",
        "target",
    )

    def __init__(
        self,
        method: bytes,
        target: bytes,
        http_version: bytes,
        headers: Headers,
        seq: int,
        body: bytes | memoryview | None,
        source: BodySource,
        client: tuple[str, int] | None = None,
        scheme: str = "http",
    ) -> None:
        self.method = method
        self.target = target
        self.http_version = http_version
        self.headers = headers
        self.seq = seq
        self._body = body  # the whole body when it had all arrived; None: it streams
        self._source = source
        self.client = client
        self.scheme = scheme

    @property
    def body_complete(self) -> bool:
        """True when `body` holds the whole body already (no await needed)."""
        return self._body is not None

    @property
    def body(self) -> bytes | memoryview:
        """The whole body, only when `body_complete` (else use `read()`): a view into the
        receive buffer when it arrived in one piece, else a joined copy (see the module)."""
        if self._body is None:
            raise RuntimeError("the body is still arriving: use `await request.read()`")
        return self._body

    async def read(self) -> bytes | memoryview:
        """The whole body (joined if it streamed in pieces)."""
        if self._body is not None:
            return self._body
        parts = [bytes(c) async for c in self.stream()]
        self._body = b"".join(parts)
        return self._body

    def stream(self) -> BodyStream:
        """The body piece by piece, as it arrives (each piece once): ``async for``."""
        return BodyStream(self)

    async def wait_disconnect(self) -> None:
        """Return once the client has gone."""
        await self._source.wait_disconnect()

    def header(self, name: bytes, default: bytes | None = None) -> bytes | None:
        """The first value of the field `name` (lowercase), or `default`."""
        for n, v in self.headers:
            if n == name:
                return v
        return default

    def __repr__(self) -> str:
        return f"HttpRequest(seq={self.seq}, {self.method!r} {self.target!r})"


class BodyStream:
    """`HttpRequest.stream()`: an async iterator over the body's pieces (a class rather than
    an async generator, which the optional compiled build could not compile). `aclose` ends
    it early, as an async generator's would."""

    __slots__ = ("_done", "_request")

    def __init__(self, request: HttpRequest) -> None:
        self._request = request
        self._done = False

    def __aiter__(self) -> BodyStream:
        return self

    async def __anext__(self) -> bytes | memoryview:
        if self._done:
            raise StopAsyncIteration
        request = self._request
        body = request._body
        if body is not None:  # it had all arrived: one piece (none if empty)
            self._done = True
            if body:
                return body
            raise StopAsyncIteration
        chunk = await request._source.next_chunk()
        if chunk is None:
            self._done = True
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        self._done = True


@mypyc_attr(allow_interpreted_subclasses=True)
class Response:
    """What a native handler returns.

    Args:
        body: bytes (or a bytearray or memoryview, sent without a copy), or an async iterable
            of bytes to stream (sent chunked on HTTP/1.1).
        status: the status code.
        headers: ``(name, value)`` bytes pairs; Date, Server and the framing headers
            (Content-Length, Transfer-Encoding) are the server's to add.
    """

    __slots__ = ("body", "headers", "status")

    def __init__(
        self,
        body: bytes | bytearray | memoryview | AsyncIterable[bytes] = b"",
        status: int = 200,
        headers: Headers = (),
    ) -> None:
        self.body = body
        self.status = status
        self.headers = headers
