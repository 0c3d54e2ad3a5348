"""The contract between the engines and the app adapters.

Both engines (pipeparse, h11) run every request as ``await handler(request, sink)``: `request` is
a `pipeparse.HttpRequest`, and the handler answers through `sink`. The adapters in
`pipeparse.servers.handlers` turn an ASGI 3 app or a native ``async def (request) -> Response``
into such a
handler, so each engine serves both interfaces through one path.

The engine owns framing: it adds Date and Server, sends Content-Length when the first `send` is
also the last (``more=False``), otherwise chunked on HTTP/1.1 (close-delimited on HTTP/1.0), and
sends no body for HEAD, 1xx, 204 and 304. A handler that raises before any of its response was
written (its first `send`) gets a 500 for its request; after that, the connection is closed once
earlier responses are out.

A handler made from a native handler carries it as its ``native`` attribute (`native_of`): an
engine may call it directly and render the `Response` itself, skipping the sink on its hot path
(the pipeparse engine does); the result must be the same as going through the handler.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, MutableMapping, Sequence
from typing import Any, Protocol

from pipeparse import HttpRequest, Response

__all__ = [
    "AsgiApp",
    "Handler",
    "Message",
    "NativeHandler",
    "Receive",
    "ResponseSink",
    "Scope",
    "Send",
    "native_of",
]

# ASGI 3's types, as the adapters (HTTP and WebSocket) use them.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ResponseSink(Protocol):
    """Where a handler writes its one response. The engine keeps responses in request order."""

    @property
    def started(self) -> bool:
        """True once `start` was called."""
        ...

    async def start(self, status: int, headers: Sequence[tuple[bytes, bytes]]) -> None:
        """Begin the response: status and the app's header fields."""
        ...

    async def send(self, data: bytes | bytearray | memoryview, more: bool = False) -> None:
        """Body bytes; ``more=False`` ends the response (call it exactly once)."""
        ...


# Coroutine functions, not any awaitable: the pipeparse engine drives the coroutine itself
# (`send`), so a handler that never waits runs inline.
Handler = Callable[[HttpRequest, ResponseSink], Coroutine[Any, Any, None]]
NativeHandler = Callable[[HttpRequest], Coroutine[Any, Any, Response]]


def native_of(handler: Handler) -> NativeHandler | None:
    """The native handler `handler` was made from, or None (an ASGI app, a plain handler)."""
    fn: NativeHandler | None = getattr(handler, "native", None)
    return fn
