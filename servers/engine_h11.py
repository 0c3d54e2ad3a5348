"""The h11 engine: the control group, one request at a time, as uvicorn and hypercorn serve.

Strategy: one task per connection drives an `h11.Connection`. It reads (64 KiB at a time) until
h11 yields a request, pulls whatever body is already buffered without awaiting (a body that is
all there is handed to the handler whole), runs the handler, and only then reads the next
request: pipelined requests wait in h11's buffer, so they are answered in order by
construction, and a slow request holds up every request behind it.

Responses: the sink holds the status and headers until the first `send`; a single final `send`
goes out as one write with Content-Length, otherwise h11 chunks (HTTP/1.1) or delimits by close
(HTTP/1.0). Date (cached per second) and Server are added unless the app set them; an app's own
Transfer-Encoding is dropped and its Content-Length checked (kept for HEAD and streaming).
HEAD, 204 and 304 responses carry no body.

What h11 leaves to the server is done here, with the core's rules: Content-Length with
Transfer-Encoding is a 400; so are a Host value that is not ``uri-host [":" port]`` and a
request-target in a form its method does not allow (`pipeparse._head.check_target`); CONNECT is
answered 501 and the connection closed (no tunnels); up to ``limits.max_empty_lines`` empty
lines before a request line are ignored (h11 rejects any: it is restarted past them); the
target (414), header count (431) and body size (413) limits come from `config.limits` (the head
size limit is h11's ``max_incomplete_event_size``); ``100 Continue`` goes out when the handler
first reads the body; idle, head, body and handler timeouts. A protocol error is answered with
its status and ``Connection: close``, then the connection closes in stages: the response, then
the write side shut (``send_eof``), then what the client still sends is drained for a short,
bounded while, then the socket is closed. Nothing is answered after a bad request.

Errors in handlers: an exception before the response head went out is a 500 (the connection
stays usable); one after the whole response went out is only logged; one in between closes the
connection. A handler over `config.request_timeout` is
cancelled and answered 503 (or the connection closed if its head went out).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections import deque
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any, NoReturn

import h11
import trio

from pipeparse import HttpDate, HttpRequest, KiB, MiB, ProtocolError, render_head
from pipeparse._head import check_host, check_target

from .admission import current_admission
from .config import ServerConfig
from .listen import current_shutdown, log_access
from .protocol import Handler
from .tls import close_stream

__all__ = ["DRAIN_MAX_BYTES", "DRAIN_TIMEOUT", "RECEIVE_SIZE", "serve_connection"]

logger = logging.getLogger("pipeparse.server")

RECEIVE_SIZE = 64 * KiB  # bytes asked for per read (capped by config.buffer_size)
DRAIN_TIMEOUT = 2.0  # seconds: after an error response, how long to drain the client's bytes
DRAIN_MAX_BYTES = 1 * MiB  # ... and at most how many bytes
SINGLE_WRITE_MAX = 64 * KiB  # a body up to this size is joined with its head into one write

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_TEXT_PLAIN = ((b"content-type", b"text/plain; charset=utf-8"),)
_NO_BODY_STATUS = frozenset({204, 304})
_BODY_500 = b"Internal Server Error\n"


_date = HttpDate()  # the Date value, formatted once a second


class _Closing(Exception):
    """The connection ends: stop serving (any answer was already sent)."""


async def serve_connection(
    stream: trio.abc.Stream,
    handler: Handler,
    config: ServerConfig,
    client: tuple[str, int] | None = None,
) -> None:
    """Serve HTTP/1.1 on `stream` until the connection ends; closes `stream`.

    Args:
        stream: a connected stream (a `trio.SocketStream`, or memory streams in tests).
        handler: ``async (HttpRequest, ResponseSink) -> None`` (see `pipeparse.servers.handlers`).
        config: limits and timeouts.
        client: the peer's ``(host, port)``, given to the handler.
    """
    connection = _Connection(stream, handler, config, client)
    try:
        await connection.run()
    finally:
        await close_stream(stream)  # close_notify first over TLS


_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]").search


class _Connection:
    """One connection's state: the h11 machine, the stream, and what reading has seen."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        handler: Handler,
        config: ServerConfig,
        client: tuple[str, int] | None,
    ) -> None:
        self.stream = stream
        self.handler = handler
        self.config = config
        self.limits = config.limits
        self.client = client
        self.h11 = self.new_h11()
        self.empty_lines = 0  # empty lines skipped before the next request line
        self.receive_size = min(RECEIVE_SIZE, config.buffer_size)
        self.server_name = config.server_name
        self.read_lock = trio.Lock()
        self.reads = 0  # bumped on every read: a waiter for the lock knows if it must still read
        self.eof = False
        self.eof_event = trio.Event()
        self.broken = False  # a send failed: the peer is gone
        self.body = _Body(self)
        self.access_log = config.access_log
        self.shutdown = current_shutdown()
        self.admission = current_admission()  # None: no limit on load
        self.idle_scope: trio.CancelScope | None = None  # the wait for a request's first bytes
        self.request_scope = trio.CancelScope()
        self.sink: _Sink | None = None  # the response in progress

    def new_h11(self) -> h11.Connection:
        return h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_head_size)

    def skip_empty_lines(self) -> bool:
        """Before a request line, drop the empty lines h11 would reject (RFC 9112 §2.2 lets a
        server ignore them): h11 is restarted on the bytes after them, which between requests
        is a new connection's state. True when a lone CR waits for its LF."""
        data, closed = self.h11.trailing_data
        if data[:1] != b"\r":
            return False
        n = 0
        while data[n : n + 2] == b"\r\n":
            n += 2
            self.empty_lines += 1
            if self.empty_lines > self.limits.max_empty_lines:
                raise ProtocolError(
                    f"more than {self.limits.max_empty_lines} empty lines before a request line"
                )
        if n:
            self.h11 = self.new_h11()
            if data[n:]:
                self.h11.receive_data(data[n:])  # (receive_data(b"") would mean EOF)
            if closed:
                self.h11.receive_data(b"")
        return data[n:] == b"\r" and not closed

    # --- reading ---------------------------------------------------------------------------

    async def receive(self, reads_seen: int) -> int:
        """Read once into h11, unless another task read since `reads_seen` (or EOF was seen).

        Returns the number of bytes read (0 when another task read instead).
        """
        async with self.read_lock:
            if self.reads != reads_seen or self.eof:
                return 0
            try:
                data = await self.stream.receive_some(self.receive_size)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            self.reads += 1
            if not data:
                self.eof = True
                self.eof_event.set()
            # h11 annotates bytes; it appends the data to its own buffer, so any buffer works.
            self.h11.receive_data(data)  # type: ignore[arg-type]
            return len(data)

    async def next_request(self, first: bool) -> h11.Request | None:
        """The next request's head, or None when the connection should end quietly."""
        config = self.config
        now = trio.current_time()
        # The first request must arrive whole within header_timeout; later ones may idle for
        # keep_alive_timeout, then have header_timeout from their first byte.
        deadline = now + (config.header_timeout if first else config.keep_alive_timeout)
        head_started = first
        while True:
            try:
                waiting = self.skip_empty_lines()
                h = self.h11
                event = h11.NEED_DATA if waiting else h.next_event()
            except h11.RemoteProtocolError as exc:
                await self.fail(exc.error_status_hint, str(exc))
            except ProtocolError as exc:
                await self.fail(exc.status_hint, exc.message)
            if type(event) is h11.Request:
                self.empty_lines = 0
                return event
            if event is h11.NEED_DATA:
                if not head_started and h.trailing_data[0]:
                    head_started = True
                    deadline = trio.current_time() + config.header_timeout
                if self.shutdown.is_set():
                    return None  # shutting down: read no new request
                reads = self.reads
                with trio.move_on_at(deadline) as self.idle_scope:
                    await self.receive(reads)
                    continue
                self.idle_scope = None
                if self.shutdown.is_set():
                    return None
                if head_started and h.trailing_data[0]:
                    await self.fail(408, "the request head did not arrive in time")
                return None  # idle: close quietly
            return None  # ConnectionClosed (PAUSED cannot happen between cycles)

    def take_what_was_sent(self) -> bool:
        """A connection that starts during a graceful shutdown (it waited in the backlog): take
        what the client already sent, without waiting, so its requests are answered rather
        than dropped. False when there is nothing (or no socket to read without waiting)."""
        sock = getattr(self.stream, "socket", None)
        if sock is None:
            return False
        try:
            data = os.read(sock.fileno(), self.receive_size)  # (trio's sockets never block)
        except OSError:  # BlockingIOError: nothing sent yet; or the client is gone
            return False
        self.reads += 1
        self.h11.receive_data(data)
        return bool(data)

    async def watch_shutdown(self) -> None:
        """On the server's graceful shutdown, stop waiting for a next request."""
        await self.shutdown.wait()
        if self.idle_scope is not None:
            self.idle_scope.cancel()

    # --- writing ---------------------------------------------------------------------------

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.broken = True
            raise

    def error_response(self, status: int, message: str, head_only: bool = False) -> bytes:
        """A complete ``Connection: close`` error response (h11's state no longer allows one:
        rendered by `pipeparse.render_head`, as the pipeparse engine renders its own)."""
        body = _REASONS.get(status, b"Error") + b": " + message.encode("utf-8", "replace") + b"\n"
        head, _ = render_head(
            status,
            _TEXT_PLAIN,
            method=b"HEAD" if head_only else b"GET",
            http11=True,
            keep_alive=False,
            body_length=len(body),
            date=_date(),
            server=self.server_name,
        )
        return head if head_only else head + body

    async def fail(
        self,
        status: int,
        message: str,
        head_only: bool = False,
        request: tuple[bytes, bytes] = (b"-", b"-"),
    ) -> NoReturn:
        """Answer a connection-ending error, close in stages, and stop serving.

        `request` is the ``(method, target)`` for the access log, when the head was parsed.
        """
        if not self.broken:
            response = self.error_response(status, message, head_only)
            try:
                await self.write(response)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise _Closing from None
            if self.access_log:
                nbytes = 0 if head_only else len(response) - response.index(b"\r\n\r\n") - 4
                log_access(self.client, request[0], request[1], status, nbytes)
            await self.linger()
        raise _Closing

    async def linger(self) -> None:
        """Shut our write side, then drain the client's bytes for a bounded while.

        Closing a socket with unread input makes the kernel send a reset, which can destroy
        the response before the client reads it: draining first avoids that.
        """
        stream = self.stream
        try:
            if isinstance(stream, trio.abc.HalfCloseableStream):
                await stream.send_eof()
            if self.eof:
                return
            drained = 0
            with trio.move_on_after(DRAIN_TIMEOUT):
                while drained < DRAIN_MAX_BYTES:
                    data = await stream.receive_some(self.receive_size)
                    if not data:
                        break
                    drained += len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
            pass

    # --- the request cycle -----------------------------------------------------------------

    async def run(self) -> None:
        if self.shutdown.is_set() and not self.take_what_was_sent():
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.watch_shutdown)
            try:
                await self.serve()
            finally:
                nursery.cancel_scope.cancel()

    async def serve(self) -> None:
        seq = 0
        # One cancel scope for the connection's handlers, its deadline set around each call:
        # cheaper than a scope per request. When it fires, the connection ends (503 or close).
        timeout = self.request_scope
        try:
            with timeout:
                while True:
                    event = await self.next_request(seq == 0)
                    if event is None:
                        return
                    await self.serve_request(event, seq)
                    if not await self.end_cycle():
                        return
                    seq += 1
            sink = self.sink
            if timeout.cancelled_caught and sink is not None and not sink.done:
                message = f"the handler took over {self.config.request_timeout}s"
                await self.fail_request(sink, 503, message)
        except _Closing:
            return

    def check_head(self, event: h11.Request) -> None:
        """What h11 accepts and pipeparse does not: raise `ProtocolError` for it."""
        limits = self.limits
        if len(event.target) > limits.max_target_size:
            raise ProtocolError(
                f"request-target of {len(event.target)} bytes exceeds the limit of "
                f"{limits.max_target_size}",
                414,
            )
        check_target(event.method, event.target)
        if event.method == b"CONNECT":
            raise ProtocolError("CONNECT: this server does not tunnel", 501)
        headers = event.headers
        if len(headers) > limits.max_headers:
            raise ProtocolError(
                f"{len(headers)} header fields exceed the limit of {limits.max_headers}", 431
            )
        content_length = None
        chunked = False
        # h11 bounds only a head that arrives in pieces: measure one that came whole. The
        # size is rebuilt from the parsed fields (optional whitespace is not counted).
        head_size = len(event.method) + len(event.target) + 14
        for name, value in headers.raw_items():
            head_size += len(name) + len(value) + 4
            if _CONTROL(value):  # h11 lets controls other than CR, LF and NUL through
                raise ProtocolError(f"control character in the value of field {name!r}")
            if len(name) == 14 and name.lower() == b"content-length":
                content_length = int(value)
            elif len(name) == 17 and name.lower() == b"transfer-encoding":
                chunked = True
            elif len(name) == 4 and name.lower() == b"host":
                check_host(value)
        if head_size > limits.max_head_size:
            raise ProtocolError(
                f"request head of {head_size} bytes exceeds the limit of {limits.max_head_size}",
                431,
            )
        if chunked and content_length is not None:
            raise ProtocolError("both Transfer-Encoding and Content-Length")
        if content_length is not None and content_length > limits.max_body_size:
            raise ProtocolError(
                f"Content-Length {content_length} exceeds the body limit of {limits.max_body_size}",
                413,
            )

    async def serve_request(self, event: h11.Request, seq: int) -> None:
        head_request = event.method == b"HEAD"
        try:
            self.check_head(event)
            body = self.body.begin()
        except ProtocolError as exc:
            await self.fail(
                exc.status_hint, exc.message, head_request, (event.method, event.target)
            )
        admission = self.admission
        if admission is not None and not admission.admit():
            message = "the server is at its concurrency limit"
            await self.fail(503, message, head_request, (event.method, event.target))
        request = HttpRequest(
            event.method,
            event.target,
            event.http_version,
            event.headers,
            seq,
            body,
            self.body,
            self.client,
        )
        self.sink = sink = _Sink(self, event.method, event.target)
        timeout = self.request_scope
        timeout.deadline = trio.current_time() + self.config.request_timeout
        if admission is not None:
            admission.blocked()  # in flight while its handler runs
        try:
            await self.handler(request, sink)
        except Exception as exc:
            timeout.deadline = math.inf
            if self.broken:
                raise _Closing from None
            error = self.body.error
            if error is not None:
                await self.fail_request(sink, error.status_hint, error.message)
            if sink.done:
                # The response went out whole (Starlette re-raises after sending its own 500):
                # the connection is intact, serve on.
                logger.error("handler failed after its response was complete", exc_info=exc)
                return
            if sink.head_sent:
                logger.error("handler failed after its response started", exc_info=exc)
                raise _Closing from None
            logger.error("handler failed", exc_info=exc)
            await self.answer_500(sink)
            return
        finally:
            if admission is not None:
                admission.unblocked()
        timeout.deadline = math.inf
        if self.body.error is not None:
            await self.fail_request(sink, self.body.error.status_hint, self.body.error.message)
        if not sink.done:
            # A handler that returns without completing its response (the adapters raise
            # instead; a raw handler may not).
            if not sink.head_sent:
                logger.error("handler returned without a response")
                await self.answer_500(sink)
                return
            raise _Closing

    async def fail_request(self, sink: _Sink, status: int, message: str) -> NoReturn:
        """End the connection over a request that cannot complete: answer if nothing went out."""
        if sink.head_sent:
            raise _Closing
        await self.fail(status, message, sink.head_request, (sink.method, sink.target))

    async def answer_500(self, sink: _Sink) -> None:
        """A 500 through h11, so the connection stays usable."""
        h = self.h11
        if h.our_state is not h11.SEND_RESPONSE:
            raise _Closing
        body = b"" if sink.head_request else _BODY_500
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(_BODY_500)),
            (b"date", _date()),
            (b"server", self.server_name),
        ]
        if h.they_are_waiting_for_100_continue or self.shutdown.is_set():
            headers.append((b"connection", b"close"))
        response = h11.Response(status_code=500, reason=b"Internal Server Error", headers=headers)
        parts = h.send_with_data_passthrough(response) or []
        if body:
            parts += h.send_with_data_passthrough(h11.Data(data=body)) or []
        parts += h.send_with_data_passthrough(h11.EndOfMessage()) or []
        try:
            await self.write(b"".join(parts))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise _Closing from None
        if self.access_log:
            log_access(self.client, sink.method, sink.target, 500, len(body))

    async def end_cycle(self) -> bool:
        """After a response: read off an unread body, then True to serve the next request."""
        h = self.h11
        if h.their_state is h11.SEND_BODY and h.our_state is h11.DONE:
            try:
                await self.body.discard()
            except ProtocolError:
                await self.linger()
                return False
        if h.our_state is h11.DONE and h.their_state is h11.DONE:
            h.start_next_cycle()
            return True
        if h.their_state is not h11.CLOSED and not self.broken:
            await self.linger()  # e.g. Connection: close with more requests behind it
        return False


class _Body:
    """The body of the current request, read on demand: the engine's `BodySource`.

    One per connection (requests are served one at a time); `begin` resets it per request.
    """

    def __init__(self, connection: _Connection) -> None:
        self.connection = connection
        self.pending: deque[bytes] = deque()
        self.done = True
        self.received = 0
        self.error: ProtocolError | None = None

    def begin(self) -> bytes | None:
        """Take the body parts already buffered (no I/O); the whole body if it is all there."""
        self.pending.clear()
        self.done = False
        self.received = 0
        self.error = None
        h = self.connection.h11
        parts: list[bytes] = []
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                raise ProtocolError(str(exc), exc.error_status_hint) from None
            kind = type(event)
            if isinstance(event, h11.Data):  # (isinstance: so the type checker knows `data`)
                self._count(len(event.data))
                parts.append(event.data)
            elif kind is h11.EndOfMessage:
                self.done = True
                if not parts:
                    return b""
                return b"".join(parts)
            else:  # NEED_DATA
                self.pending.extend(bytes(p) for p in parts)
                return None

    def _count(self, size: int) -> None:
        self.received += size
        limit = self.connection.limits.max_body_size
        if self.received > limit:
            raise ProtocolError(f"the request body exceeds the limit of {limit} bytes", 413)

    async def next_chunk(self) -> bytes | None:
        """The next piece of the body, or None at its end; `ProtocolError` if it breaks."""
        if self.pending:
            return self.pending.popleft()
        if self.done:
            return None
        if self.error is not None:
            raise self.error
        try:
            return await self._next_chunk()
        except ProtocolError as exc:
            self.error = exc
            raise

    async def _next_chunk(self) -> bytes | None:
        connection = self.connection
        h = connection.h11
        if h.they_are_waiting_for_100_continue:
            interim = h.send(h11.InformationalResponse(status_code=100, headers=[]))
            if interim:
                await connection.write(interim)
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                if connection.eof:
                    raise ProtocolError("the client closed the connection mid-body", 400) from None
                raise ProtocolError(str(exc), exc.error_status_hint) from None
            kind = type(event)
            if isinstance(event, h11.Data):  # (isinstance: so the type checker knows `data`)
                self._count(len(event.data))
                return bytes(event.data)
            if kind is h11.EndOfMessage:
                self.done = True
                return None
            reads = connection.reads
            with trio.move_on_after(connection.config.body_timeout):
                await connection.receive(reads)
                continue
            raise ProtocolError(f"no request body bytes for {connection.config.body_timeout}s", 408)

    async def discard(self) -> None:
        """Read off the rest of a body the handler left unread."""
        while await self.next_chunk() is not None:
            pass

    async def wait_disconnect(self) -> None:
        """Return once the client has closed (or broken) the connection.

        Reads ahead while it waits, into h11's buffer, at most `config.buffer_size` bytes per
        wait; past that it waits for another reader to see the end.
        """
        connection = self.connection
        budget = connection.config.buffer_size
        while not connection.eof and not connection.broken:
            if budget <= 0:
                await connection.eof_event.wait()
                return
            budget -= await connection.receive(connection.reads)


class _Sink:
    """The response of one request: held until the first `send`, then written through h11."""

    __slots__ = (
        "connection",
        "done",
        "head_request",
        "head_sent",
        "headers",
        "method",
        "nbytes",
        "started",
        "status",
        "target",
    )

    def __init__(self, connection: _Connection, method: bytes, target: bytes) -> None:
        self.connection = connection
        self.method = method
        self.target = target
        self.head_request = method == b"HEAD"
        self.nbytes = 0
        self.started = False
        self.head_sent = False
        self.done = False
        self.status = 0
        self.headers: Sequence[tuple[bytes, bytes]] = ()

    async def start(self, status: int, headers: Sequence[tuple[bytes, bytes]]) -> None:
        if self.started:
            raise RuntimeError("the response was already started")
        if type(status) is not int or not 200 <= status <= 999:
            raise ValueError(f"a response status must be an int from 200 to 999, got {status!r}")
        self.status = status
        self.headers = headers
        self.started = True

    async def send(self, data: bytes | bytearray | memoryview, more: bool = False) -> None:
        if self.done:
            raise RuntimeError("the response is already complete")
        if not self.started:
            raise RuntimeError("send() before start()")
        connection = self.connection
        h = connection.h11
        parts: list[Any] = []
        if not self.head_sent:
            error = connection.body.error
            if error is not None:
                raise RuntimeError(f"the request failed ({error.message}): no response possible")
            parts = h.send_with_data_passthrough(self._response(None if more else len(data))) or []
            self.head_sent = True
        if data and not (self.head_request or self.status in _NO_BODY_STATUS):
            self.nbytes += len(data)
            if parts and len(data) > SINGLE_WRITE_MAX:
                await connection.write(b"".join(parts))  # no copy of a large body
                parts = []
            # h11 annotates `data` as bytes; with data passthrough it takes any buffer, uncopied.
            parts += h.send_with_data_passthrough(h11.Data(data=data)) or []  # type: ignore[arg-type]
        if not more:
            self.done = True
            parts += h.send_with_data_passthrough(h11.EndOfMessage()) or []
        if parts:
            await connection.write(parts[0] if len(parts) == 1 else b"".join(parts))
        if not more and connection.access_log:
            log_access(connection.client, self.method, self.target, self.status, self.nbytes)

    def _response(self, length: int | None) -> h11.Response:
        """The h11 head: the app's fields, framing decided here, Date and Server added."""
        status = self.status
        headers: list[tuple[bytes, bytes]] = []
        app_length: bytes | None = None
        has_date = has_server = False
        for name, value in self.headers:
            lname = name.lower()
            if lname == b"content-length":
                app_length = value
                continue
            if lname == b"transfer-encoding":
                continue
            if lname == b"date":
                has_date = True
            elif lname == b"server":
                has_server = True
            headers.append((name, value))
        if status == 204:
            pass  # never a Content-Length (RFC 9110 §8.6)
        elif status == 304 or self.head_request:
            # The fields a GET would get: the app's length, or the body it produced anyway.
            if app_length is not None:
                headers.append((b"content-length", app_length))
            elif self.head_request and length is not None:
                headers.append((b"content-length", b"%d" % length))
        elif length is not None:
            if app_length is not None and app_length.strip() != b"%d" % length:
                raise RuntimeError(
                    f"the response's Content-Length {app_length!r} does not match its body of "
                    f"{length} bytes"
                )
            headers.append((b"content-length", b"%d" % length))
        elif app_length is not None:
            headers.append((b"content-length", app_length))  # h11 holds the stream to it
        connection = self.connection
        if connection.h11.they_are_waiting_for_100_continue or connection.shutdown.is_set():
            # The client holds its body back (without reading it the connection cannot be
            # reused), or the server is shutting down: this response is the last.
            headers.append((b"connection", b"close"))
        if not has_date:
            headers.append((b"date", _date()))
        if not has_server:
            headers.append((b"server", connection.server_name))
        return h11.Response(status_code=status, headers=headers, reason=_REASONS.get(status, b""))
