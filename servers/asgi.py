"""The ASGI 3 adapter for HTTP requests: `AsgiHandler`, the engines' `Handler` for an ASGI app.

Per request one scope dict and one small `_AsgiCall` object whose bound methods are ``receive``
and ``send``; no task, no channel. A body that had all arrived is handed over in the first
``http.request`` message; a streaming body is pulled from ``request.stream()`` one piece per
``receive()``. The sink is started only at the first ``http.response.body``, so an app that
fails between ``http.response.start`` and its body still gets a clean 500 from the engine, and
a one-message body is sent with Content-Length.

pipeparse's ASGI extension: ``scope["extensions"]["pipeparse"]`` is ``{"seq": n, "target": t}``,
the request's index on its connection (from 0) and its request-target as sent (bytes).

The per-request path of the ASGI interface, so the optional compiled build (setup.py) compiles
this module: it keeps to what mypyc compiles well (a class, not a closure with attributes; no
await in a finally block).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote_to_bytes

from pipeparse import BodyStream, HttpRequest, ProtocolError, RequestHead

from .protocol import AsgiApp, Message, ResponseSink, Scope
from .proxy import TrustedProxies, forwarded_client
from .sink import ConnectionSink
from .websocket import AsgiWebSocket, WebSocketChannel, WebSocketSession

__all__ = ["AsgiHandler", "asgi_handler", "split_target"]

Client = tuple[str, int] | None
_HTTP_VERSIONS = {b"1.1": "1.1", b"1.0": "1.0"}
_METHODS = {
    m: m.decode() for m in (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS")
}

# _AsgiCall states
_INIT, _HEAD_READY, _STREAMING, _DONE = range(4)
# request body states
_BODY_PENDING, _BODY_STREAMING, _BODY_DONE, _BODY_BROKEN = range(4)


@functools.lru_cache(maxsize=1024)  # pipelined clients repeat targets; the result is immutable
def split_target(target: bytes) -> tuple[str, bytes, bytes]:
    """``(path, raw_path, query_string)`` of a request-target, the path percent-decoded."""
    raw_path, _, query = target.partition(b"?")
    if raw_path[:1] != b"/" and b"://" in raw_path:  # absolute-form: drop scheme and authority
        slash = raw_path.find(b"/", raw_path.index(b"://") + 3)
        raw_path = raw_path[slash:] if slash >= 0 else b"/"
    decoded = unquote_to_bytes(raw_path) if b"%" in raw_path else raw_path
    return decoded.decode("utf-8", "replace"), raw_path, query


class _AsgiCall:
    """The receive/send pair of one ASGI request."""

    __slots__ = ("body_iter", "body_state", "headers", "request", "sink", "state", "status")

    def __init__(self, request: HttpRequest, sink: ResponseSink) -> None:
        self.request = request
        self.sink = sink
        self.state = _INIT
        self.body_state = _BODY_PENDING
        self.body_iter: BodyStream | None = None
        self.status = 0
        self.headers: Any = ()

    async def receive(self) -> Message:
        state = self.body_state
        if state == _BODY_PENDING:
            request = self.request
            if request.body_complete:
                body = request.body
                self.body_state = _BODY_DONE
                if type(body) is not bytes:
                    body = bytes(body)
                return {"type": "http.request", "body": body, "more_body": False}
            self.body_iter = request.stream()
            self.body_state = state = _BODY_STREAMING
        if state == _BODY_STREAMING:
            body_iter = self.body_iter
            assert body_iter is not None
            try:
                chunk = await body_iter.__anext__()
            except StopAsyncIteration:
                self.body_state = _BODY_DONE
                return {"type": "http.request", "body": b"", "more_body": False}
            except ProtocolError:
                # The body cannot be completed (bad framing, a limit, the client went away):
                # the engine answers the error and closes; the app sees a disconnect.
                self.body_state = _BODY_BROKEN
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": bytes(chunk), "more_body": True}
        if state == _BODY_DONE and self.state != _DONE:
            await self.request.wait_disconnect()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        state = self.state
        if kind == "http.response.body":
            if state == _HEAD_READY:
                sink = self.sink
                if type(sink) is ConnectionSink and not message.get("more_body", False):
                    # The usual whole response: one call, no awaits (see ConnectionSink.respond).
                    self.state = _DONE
                    sink.respond(self.status, self.headers, message.get("body", b""))
                    return
                self.state = _STREAMING
                await sink.start(self.status, self.headers)
            elif state != _STREAMING:
                raise RuntimeError(
                    "ASGI 'http.response.body' before 'http.response.start'"
                    if state == _INIT
                    else "ASGI message sent after the response was complete"
                )
            body = message.get("body", b"")
            if message.get("more_body", False):
                await self.sink.send(body, True)
            else:
                self.state = _DONE
                await self.sink.send(body, False)
        elif kind == "http.response.start":
            if state != _INIT:
                raise RuntimeError(
                    "ASGI 'http.response.start' sent twice"
                    if state != _DONE
                    else "ASGI message sent after the response was complete"
                )
            self.status = message["status"]
            self.headers = message.get("headers", ())
            self.state = _HEAD_READY
        else:
            raise RuntimeError(f"unexpected ASGI message type {kind!r} for an HTTP request")

    async def aclose(self) -> None:
        body_iter = self.body_iter
        if body_iter is not None:
            self.body_iter = None
            await body_iter.aclose()


class AsgiHandler:
    """The engine handler for the ASGI 3 app `app` (made by `asgi_handler`): called once per
    HTTP request; `websocket` makes the app's side of an upgraded connection (the engines
    find it with `servers.websocket.websocket_of`)."""

    __slots__ = ("app", "root_path", "root_raw", "scheme", "server", "state", "trusted")

    def __init__(
        self,
        app: AsgiApp,
        server: tuple[str, int] | None,
        state: dict[str, Any] | None,
        scheme: str,
        root_path: str,
        trusted: TrustedProxies | None,
    ) -> None:
        self.app = app
        self.server = server
        self.state = state
        self.scheme = scheme
        self.root_path = root_path
        self.root_raw = root_path.encode("ascii")
        self.trusted = trusted

    async def __call__(self, request: HttpRequest, sink: ResponseSink) -> None:
        method = request.method
        target = request.target
        path, raw_path, query, client, scheme = self._where(
            target, request.headers, request.client
        )
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": _HTTP_VERSIONS.get(request.http_version)
            or request.http_version.decode(),
            "method": _METHODS.get(method) or method.decode("latin-1"),
            "scheme": scheme,
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "root_path": self.root_path,
            "headers": list(request.headers),
            "client": client,
            "server": self.server,
            "extensions": {"pipeparse": {"seq": request.seq, "target": target}},
        }
        state = self.state
        if state:
            scope["state"] = state.copy()
        call = _AsgiCall(request, sink)
        # Not `try`/`finally`: compiled by mypyc (2.4), a coroutine whose finally block awaits
        # leaves the exception it re-raises in `sys.exc_info()`, where a later bare raise in
        # the task (trio's, the driver's) raised it again: an app's error escaped the driver.
        try:
            await self.app(scope, call.receive, call.send)
        except BaseException:
            await call.aclose()
            raise
        if call.body_iter is not None:  # (only a streamed request body has one)
            await call.aclose()
        if call.state != _DONE:
            raise RuntimeError(
                "ASGI app returned without sending a response"
                if call.state in (_INIT, _HEAD_READY)
                else "ASGI app returned before completing its response"
            )

    def _where(
        self, target: bytes, headers: Sequence[tuple[bytes, bytes]], client: Client
    ) -> tuple[str, bytes, bytes, Client, str]:
        """``(path, raw_path, query_string, client, scheme)`` of a request's scope: the path
        under `root_path`, the client and scheme as a trusted proxy forwarded them."""
        path, raw_path, query = split_target(target)
        scheme = self.scheme
        trusted = self.trusted
        if trusted is not None:
            client, scheme = forwarded_client(headers, client, scheme, trusted)
        root_path = self.root_path
        if root_path:
            path, raw_path = root_path + path, self.root_raw + raw_path
        return path, raw_path, query, client, scheme

    def websocket(
        self,
        head: RequestHead,
        client: tuple[str, int] | None,
        session: WebSocketSession,
        channel: WebSocketChannel,
    ) -> AsgiWebSocket:
        path, raw_path, query, client, scheme = self._where(head.target, head.headers, client)
        secure = scheme in ("https", "wss")
        scope: Scope = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "scheme": "wss" if secure else "ws",
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "root_path": self.root_path,
            "headers": list(head.headers),
            "client": client,
            "server": self.server,
            "subprotocols": session.subprotocols,
            "extensions": {},
        }
        state = self.state
        if state:
            scope["state"] = state.copy()
        return AsgiWebSocket(self.app, scope, session, channel)


def asgi_handler(
    app: AsgiApp,
    *,
    server: tuple[str, int] | None = None,
    state: dict[str, Any] | None = None,
    scheme: str = "http",
    root_path: str = "",
    trusted: TrustedProxies | None = None,
) -> AsgiHandler:
    """The engine handler for the ASGI 3 app `app`.

    Args:
        server: the listening ``(host, port)``, given to the app as ``scope["server"]``.
        state: the lifespan state; once it holds anything, each request's scope gets a
            shallow copy of it as ``"state"``.
        scheme: the connection's, ``"http"`` or ``"https"`` (TLS).
        root_path: ``scope["root_path"]``; ``path`` and ``raw_path`` start with it too, as
            uvicorn's do (Starlette's routing strips it).
        trusted: the proxies whose forwarding headers count (`servers.proxy`); None: none.
    """
    return AsgiHandler(app, server, state, scheme, root_path, trusted)
