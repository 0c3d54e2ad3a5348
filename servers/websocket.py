"""WebSockets (RFC 6455) for ASGI apps: the handshake, wsproto's framing, the ASGI messages.

Strategy
--------
An upgrade request ends the HTTP stream (`RequestIndex(upgrades=True)` holds it and frames
nothing after it); the driver answers every request before it, in order, and then hands the
connection to a `WebSocketSession` with the bytes that arrived after the upgrade request's head.

`WebSocketSession` is sans-I/O: bytes from the client go in (`feed`), and it keeps the ASGI
messages they make for the app; ASGI messages from the app go in (`app_sent`) and come out as
bytes to send. Framing is wsproto's frame layer (`wsproto.connection.Connection`); the
handshake is checked here, on the head pipeparse already parsed strictly, so the request is
never parsed twice. A driver supplies a `WebSocketChannel` (send, wait, wake, sleep, abort):
its reader feeds the session as bytes arrive (so pings are answered and pongs noticed while the
app is busy), and `AsgiWebSocket` runs the app's receive/send on top. Loop-specific code is
only in the channels (`servers.websocket_trio`, the asyncio driver).

Outcomes, as uvicorn's: the app closes before accepting: 403; it returns or fails before
accepting: 500; a malformed handshake: 400 (426 for another protocol version); it returns
after accepting: close 1000; it fails: close 1011; a message over `max_size`: close 1009; a
graceful shutdown: close 1012 ("service restart"). permessage-deflate is not negotiated (a
compressed frame's size says nothing about its message's, so `max_size` could not hold).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.utilities import generate_accept_token

from pipeparse import RequestHead, render_head

from .protocol import AsgiApp, Scope
from .protocol import Message as AsgiMessage

__all__ = [
    "AsgiWebSocket",
    "ClientDisconnected",
    "WebSocketChannel",
    "WebSocketEndpoint",
    "WebSocketOptions",
    "WebSocketSession",
    "handshake_problem",
    "websocket_of",
]

log = logging.getLogger("pipeparse.server")


_TEXT_PLAIN = ((b"content-type", b"text/plain; charset=utf-8"),)
_GOING_AWAY_CODE = 1012  # service restart: a graceful shutdown
_TOO_BIG_CODE = 1009
_INTERNAL_ERROR_CODE = 1011
_ABNORMAL_CODE = 1006  # never sent: the connection ended without a close frame


@dataclass(frozen=True)
class WebSocketOptions:
    """The limits and timers of every WebSocket (`ServerConfig`'s ``ws_*`` fields).

    Attributes:
        max_size: the largest message accepted, in bytes; a larger one closes with 1009.
        ping_interval: seconds between the server's pings (None: no pings).
        ping_timeout: seconds a pong may take before the connection is dropped (None: wait).
        server_name: the Server field of handshake responses.
    """

    max_size: int = 16 * 1024 * 1024
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    server_name: bytes = b"pipeparse"


class ClientDisconnected(OSError):
    """The app sent on a WebSocket that is closed (ASGI: an `OSError`)."""


class WebSocketChannel(Protocol):
    """What a driver gives a WebSocket: its connection, and its loop's waiting."""

    async def send(self, data: bytes) -> None:
        """Send `data` (calls may overlap: the channel keeps them in order)."""
        ...

    async def wait(self) -> None:
        """Sleep until `wake` is called (a spurious return is allowed)."""
        ...

    def wake(self) -> None:
        """Wake every `wait`."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    def abort(self) -> None:
        """Drop the connection now (the reader sees the end of the stream)."""
        ...


# What an ASGI handler gives the drivers for a WebSocket: the app, ready to run on the session
# of an upgrade request from the client (the address the driver knows).
WebSocketEndpoint = Callable[
    [RequestHead, "tuple[str, int] | None", "WebSocketSession", WebSocketChannel],
    "AsgiWebSocket",
]


def websocket_of(handler: object) -> WebSocketEndpoint | None:
    """The handler's WebSocket endpoint (ASGI handlers have one), or None."""
    endpoint: WebSocketEndpoint | None = getattr(handler, "websocket", None)
    return endpoint


def handshake_problem(head: RequestHead) -> tuple[int, str] | None:
    """What is wrong with `head` as an RFC 6455 opening handshake (§4.2.1), as a status and
    a reason; None when it is valid. (Method, version, Upgrade and Connection were checked
    when the head was marked `websocket`.)"""
    keys = [v for n, v in head.headers if n == b"sec-websocket-key"]
    versions = [v for n, v in head.headers if n == b"sec-websocket-version"]
    if versions != [b"13"]:
        return 426, "WebSocket version 13 is required (Sec-WebSocket-Version)"
    if len(keys) != 1:
        return 400, "one Sec-WebSocket-Key is required"
    try:
        nonce = base64.b64decode(keys[0], validate=True)
    except (binascii.Error, ValueError):
        nonce = b""
    if len(nonce) != 16:
        return 400, "Sec-WebSocket-Key is not 16 bytes in base64"
    return None


def offered_subprotocols(head: RequestHead) -> list[str]:
    """The Sec-WebSocket-Protocol values, in order (ASGI's ``scope["subprotocols"]``)."""
    out: list[str] = []
    for name, value in head.headers:
        if name == b"sec-websocket-protocol":
            out.extend(p.strip() for p in value.decode("latin-1").split(",") if p.strip())
    return out


class WebSocketSession:
    """One WebSocket, sans-I/O: see the module comment.

    Attributes:
        accepted: the app accepted and the 101 was produced.
        closed: the WebSocket is over for the app (closed by either side, or lost);
            `disconnect` is the ASGI message that says how.
    """

    def __init__(
        self, head: RequestHead, data: bytes, options: WebSocketOptions, date: bytes
    ) -> None:
        self.head = head
        self.options = options
        self.date = date
        self.subprotocols = offered_subprotocols(head)
        self.accepted = False
        self.rejected = False  # answered with an HTTP response instead of 101
        self.status = 0  # the handshake's answer: 101, or the rejection's status
        self.closed = False
        self.connect_delivered = False
        self.disconnect: AsgiMessage | None = None
        self.pong_pending = False
        self._frames = Connection(ConnectionType.SERVER)
        self._early = bytearray(data)  # frames sent before the 101 (fed once accepted)
        self._messages: deque[AsgiMessage] = deque()
        self._queued = 0  # bytes of the messages waiting for the app
        self._parts: list[bytes | str] = []  # the message being received
        self._size = 0

    # -- from the client -----------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """Nothing more will be exchanged: both close frames went, an HTTP answer replaced the
        101, or the connection was lost."""
        return (
            self.rejected
            or self._frames.state is ConnectionState.CLOSED
            or (self.disconnect is not None and self.disconnect["code"] == _ABNORMAL_CODE)
        )

    @property
    def backlog(self) -> int:
        """Bytes of messages received and not yet taken by the app (a reader stops over
        `max_size`, so a client cannot queue without bound)."""
        return self._queued

    def feed(self, data: bytes | bytearray) -> bytes:
        """Bytes from the client (b"": the end of the stream); returns bytes to send (pongs,
        the reply to a close, a close for a protocol error or an oversized message)."""
        if not data:
            self.lost()
            return b""
        if not self.accepted:
            if not self.rejected:
                self._early += data
                if len(self._early) > self.options.max_size:  # a client that will not wait
                    self.lost()
            return b""
        if self.closed and self._frames.state is ConnectionState.CLOSED:
            return b""  # after both close frames: ignored
        self._frames.receive_data(bytes(data))
        return self._events()

    def _events(self) -> bytes:
        out = bytearray()
        frames = self._frames
        for event in frames.events():
            if isinstance(event, Message):
                out += self._message_part(event)
            elif isinstance(event, Ping):
                if frames.state is ConnectionState.OPEN:
                    out += frames.send(event.response())
            elif isinstance(event, Pong):
                self.pong_pending = False
            elif isinstance(event, CloseConnection):
                if frames.state is ConnectionState.REMOTE_CLOSING:
                    out += frames.send(event.response())  # the client closed: echo it
                elif frames.state is ConnectionState.OPEN:  # a protocol error (wsproto's code)
                    out += frames.send(CloseConnection(event.code, event.reason))
                self._end(int(event.code), event.reason or "")
            if self.closed:
                break
        return bytes(out)

    def _message_part(self, event: Message[Any]) -> bytes:
        if self.closed:
            return b""
        self._size += len(event.data)
        if self._size > self.options.max_size:
            self._parts.clear()
            self._end(_TOO_BIG_CODE, "message too big")
            if self._frames.state is ConnectionState.OPEN:
                reason = f"message over {self.options.max_size} bytes"
                return self._frames.send(CloseConnection(_TOO_BIG_CODE, reason))
            return b""
        self._parts.append(event.data)
        if event.message_finished:
            if isinstance(event, TextMessage):
                text = "".join(p for p in self._parts if isinstance(p, str))
                message: AsgiMessage = {"type": "websocket.receive", "text": text}
            else:
                data = b"".join(p for p in self._parts if isinstance(p, bytes))
                message = {"type": "websocket.receive", "bytes": data}
            self._messages.append(message)
            self._queued += self._size
            self._parts = []
            self._size = 0
        return b""

    def _end(self, code: int, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.disconnect = {"type": "websocket.disconnect", "code": code, "reason": reason}

    def lost(self) -> None:
        """The connection broke (or a pong did not come): the app sees a disconnect (1006)."""
        self._end(_ABNORMAL_CODE, "")

    # -- to the app ----------------------------------------------------------------------

    def next_message(self) -> AsgiMessage | None:
        """The next ASGI message for the app's receive, or None until more bytes arrive."""
        if not self.connect_delivered:
            self.connect_delivered = True
            return {"type": "websocket.connect"}
        if self._messages:
            message = self._messages.popleft()
            self._queued -= len(message.get("bytes") or message.get("text") or "")
            return message
        return self.disconnect  # (None while open)

    # -- from the app --------------------------------------------------------------------

    def app_sent(self, message: AsgiMessage) -> bytes:
        """An ASGI message from the app; returns the bytes to send. Raises `RuntimeError` for
        a message out of turn, and `ClientDisconnected` for a send after the close."""
        kind = message["type"]
        if not self.accepted and not self.rejected:
            if kind == "websocket.accept":
                return self._accept(message)
            if kind == "websocket.close":
                return self.reject(403, "the application refused the WebSocket")
            raise RuntimeError(f"ASGI {kind!r} before 'websocket.accept' or 'websocket.close'")
        if kind == "websocket.send":
            if self.closed or self._frames.state is not ConnectionState.OPEN:
                raise ClientDisconnected("the WebSocket is closed")
            data = message.get("bytes")
            if data is None:
                text = message.get("text")
                if text is None:
                    raise RuntimeError("ASGI 'websocket.send' with neither bytes nor text")
                return self._frames.send(TextMessage(data=text))
            return self._frames.send(BytesMessage(data=data))
        if kind == "websocket.close":
            return self.close(message.get("code") or 1000, message.get("reason") or "")
        if kind == "websocket.accept":
            raise RuntimeError("ASGI 'websocket.accept' sent twice, or after the close")
        raise RuntimeError(f"unexpected ASGI message type {kind!r} for a WebSocket")

    def _accept(self, message: AsgiMessage) -> bytes:
        subprotocol = message.get("subprotocol")
        if subprotocol is not None and subprotocol not in self.subprotocols:
            raise RuntimeError(f"subprotocol {subprotocol!r} was not offered by the client")
        key = next(v for n, v in self.head.headers if n == b"sec-websocket-key")
        headers = [
            (b"upgrade", b"websocket"),
            (b"sec-websocket-accept", generate_accept_token(key)),
        ]
        if subprotocol is not None:
            headers.append((b"sec-websocket-protocol", subprotocol.encode("ascii")))
        headers.extend(
            (bytes(n).lower(), bytes(v))
            for n, v in message.get("headers") or ()
            if bytes(n).lower() != b"connection"
        )
        head, _ = render_head(
            101, headers, method=b"GET", http11=True, keep_alive=True, body_length=None,
            date=self.date, server=self.options.server_name,
        )  # fmt: skip
        # (render_head checks the app's fields, but Connection is its own: add it last)
        head = head[:-2] + b"connection: Upgrade\r\n\r\n"
        self.accepted = True
        self.status = 101
        early, self._early = bytes(self._early), bytearray()
        if early:
            self._frames.receive_data(early)
            return head + self._events()
        return head

    def reject(self, status: int, reason: str) -> bytes:
        """An HTTP response instead of the 101 (a refusal, a bad handshake, a failed app);
        the connection closes after it."""
        self.rejected = True
        self.status = status
        self._end(_ABNORMAL_CODE, "")
        body = (reason + "\n").encode()
        headers: tuple[tuple[bytes, bytes], ...] = _TEXT_PLAIN
        if status == 426:
            headers += ((b"sec-websocket-version", b"13"),)
        head, _ = render_head(
            status, headers, method=b"GET", http11=True, keep_alive=False,
            body_length=len(body), date=self.date, server=self.options.server_name,
        )  # fmt: skip
        return head + body

    def close(self, code: int, reason: str = "") -> bytes:
        """The server closes (the app, an error, a shutdown); the bytes of its close frame."""
        if self.closed or self._frames.state is not ConnectionState.OPEN:
            return b""  # closed already (by either side), or the connection is lost
        self._end(code, reason)
        return self._frames.send(CloseConnection(code, reason))

    def ping(self) -> bytes:
        """A ping's bytes (`pong_pending` until its pong comes), or b"" when not open."""
        if not self.accepted or self._frames.state is not ConnectionState.OPEN:
            return b""
        self.pong_pending = True
        return self._frames.send(Ping(b"pipeparse"))


class AsgiWebSocket:
    """Run an ASGI app on one WebSocket: the app's receive and send, over a `WebSocketSession`
    and the driver's `WebSocketChannel` (whose reader calls `received`)."""

    def __init__(
        self, app: AsgiApp, scope: Scope, session: WebSocketSession, channel: WebSocketChannel
    ) -> None:
        self.app = app
        self.scope = scope
        self.session = session
        self.channel = channel

    async def run(self) -> None:
        """Run the app to its end, then end the WebSocket as its outcome says."""
        session = self.session
        problem = handshake_problem(session.head)
        if problem is not None:
            await self.channel.send(session.reject(*problem))
            return
        try:
            await self.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            log.debug("WebSocket app sent after the client closed")
        except Exception:
            log.exception("exception in the ASGI app's WebSocket")
            if not session.accepted and not session.rejected:
                await self.channel.send(session.reject(500, "Internal Server Error"))
            else:
                await self.channel.send(session.close(_INTERNAL_ERROR_CODE))
            return
        if not session.accepted and not session.rejected:
            log.error("ASGI app returned without accepting or closing the WebSocket")
            await self.channel.send(session.reject(500, "Internal Server Error"))
        elif session.accepted:
            await self.channel.send(session.close(1000))

    async def received(self, data: bytes | bytearray) -> None:
        """The reader's bytes (b"": the end of the stream): answer what needs answering, and
        wake the app's receive."""
        out = self.session.feed(data)
        self.channel.wake()
        if out:
            await self.channel.send(out)

    async def receive(self) -> AsgiMessage:
        session = self.session
        while True:
            message = session.next_message()
            if message is not None:
                self.channel.wake()  # a reader waiting for the backlog to drain
                return message
            await self.channel.wait()

    async def send(self, message: AsgiMessage) -> None:
        out = self.session.app_sent(message)
        self.channel.wake()  # a close or a rejection ends the reader's wait too
        if out:
            await self.channel.send(out)

    async def going_away(self) -> None:
        """A graceful shutdown: close with 1012 (the app sees its disconnect when the
        client's close frame comes back)."""
        session = self.session
        if session.accepted:
            out = session.close(_GOING_AWAY_CODE, "server shutting down")
            self.channel.wake()
            if out:
                with contextlib.suppress(ClientDisconnected):
                    await self.channel.send(out)

    async def keep_alive(self) -> None:
        """Ping every `ping_interval`; drop the connection when a pong is later than
        `ping_timeout` (the app sees a disconnect, 1006). Runs until cancelled."""
        with contextlib.suppress(ClientDisconnected):
            await self._keep_alive()

    async def _keep_alive(self) -> None:
        options = self.session.options
        interval = options.ping_interval
        if interval is None:
            return
        session = self.session
        channel = self.channel
        while True:
            await channel.sleep(interval)
            ping = session.ping()
            if not ping:
                if session.closed:
                    return
                continue
            await channel.send(ping)
            if options.ping_timeout is None:
                continue
            await channel.sleep(options.ping_timeout)
            if session.pong_pending and not session.closed:
                log.debug("WebSocket pong not received in %s s: closing", options.ping_timeout)
                session.lost()
                channel.wake()
                channel.abort()
                return
