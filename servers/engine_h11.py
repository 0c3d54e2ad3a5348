"""The h11 engine: the control group, one request at a time, as uvicorn and hypercorn serve.

Strategy: one task per connection drives an `h11.Connection`. It reads (64 KiB at a time) until
h11 yields a request, pulls whatever body is already buffered without awaiting (a body that is
all there is handed to the handler whole; the rest is read on demand: `h11_body`), runs the
handler, and only then reads the next request: pipelined requests wait in h11's buffer, so they
are answered in order by construction, and a slow request holds up every request behind it.

Responses: the sink holds the status and headers until the first `send`; a single final `send`
goes out as one write with Content-Length, otherwise h11 chunks (HTTP/1.1) or delimits by close
(HTTP/1.0); HEAD, 204 and 304 responses carry no body. The fields h11 is given (Date, Server,
the app's Content-Length checked) are `pipeparse.servers.h11_rules.response_fields`'s.

What h11 leaves to the server is done with the core's rules: the head checks h11 lacks
(`pipeparse.servers.h11_rules.check_head`: limits, Content-Length with Transfer-Encoding, Host,
the request-target's form, CONNECT answered 501); up to ``limits.max_empty_lines`` empty lines
before a request line are ignored (h11 rejects any: it is restarted past them); the head size
limit is h11's ``max_incomplete_event_size``; ``100 Continue`` goes out when the handler first
reads the body; idle, head, body and handler timeouts. A protocol error is answered with its
status and ``Connection: close`` (`pipeparse._serialize.render_error`, as the core answers),
then the connection closes in stages (`pipeparse.servers.closing.linger`). Nothing is answered
after a bad request.

Errors in handlers: an exception before the response head went out is a 500 (the connection
stays usable); one after the whole response went out is only logged; one in between closes the
connection. A handler over `config.request_timeout` is cancelled and answered 503 (or the
connection closed if its head went out).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any, NoReturn

import h11
import trio

from pipeparse import HttpDate, HttpRequest, KiB, ProtocolError
from pipeparse._serialize import render_error

from . import closing
from .admission import current_admission
from .config import ServerConfig
from .h11_body import H11Body
from .h11_rules import check_head, response_fields
from .logs import log_access
from .protocol import Handler
from .shutdown import current_shutdown
from .tls import close_stream
from .trio_writing import WritesStream

__all__ = ["RECEIVE_SIZE", "serve_connection"]

logger = logging.getLogger("pipeparse.server")

RECEIVE_SIZE = 64 * KiB  # bytes asked for per read (capped by config.buffer_size)
SINGLE_WRITE_MAX = 64 * KiB  # a body up to this size is joined with its head into one write

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_NO_BODY_STATUS = frozenset({204, 304})
_BODY_500 = b"Internal Server Error\n"
_TEXT_PLAIN = ((b"content-type", b"text/plain; charset=utf-8"),)


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


class _Connection(WritesStream):
    """One connection's state: the h11 machine, the stream, and what reading has seen."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        handler: Handler,
        config: ServerConfig,
        client: tuple[str, int] | None,
    ) -> None:
        self.stream = stream
        # Writes go straight to the socket when it takes everything, as the pipeparse
        # engines' do (`WritesStream`); -1: through the stream (TLS, memory streams).
        self.fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else -1
        self.large_sends = False
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
        self.body = H11Body(self)
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
            await self._send_one(data)
            # A checkpoint per response, as the stream's send_all made: without it, wrk at depth
            # 16 saw requests time out (2 s) in 3 of 7 runs, with it in none of 6.
            await trio.lowlevel.checkpoint()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.broken = True
            raise
        except OSError as exc:  # (straight to the socket: the peer is gone)
            self.broken = True
            raise trio.BrokenResourceError(str(exc)) from exc

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
            response = render_error(
                status, message, date=_date(), server=self.server_name, head_only=head_only
            )
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
        """Shut our write side and drain the client's bytes, bounded (the staged close)."""
        await closing.linger(self.stream, receive_size=self.receive_size)

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

    async def serve_request(self, event: h11.Request, seq: int) -> None:
        head_request = event.method == b"HEAD"
        try:
            check_head(event, self.limits)
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
        headers = response_fields(
            500,
            _TEXT_PLAIN,
            head_request=sink.head_request,
            length=len(_BODY_500),
            close=h.they_are_waiting_for_100_continue or self.shutdown.is_set(),
            date=_date,
            server=self.server_name,
        )
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
        """The h11 head: the app's fields, framing decided, Date and Server added."""
        connection = self.connection
        # The client holds its body back (without reading it the connection cannot be
        # reused), or the server is shutting down: this response is the last.
        close = connection.h11.they_are_waiting_for_100_continue or connection.shutdown.is_set()
        status = self.status
        headers = response_fields(
            status,
            self.headers,
            head_request=self.head_request,
            length=length,
            close=close,
            date=_date,
            server=connection.server_name,
        )
        return h11.Response(status_code=status, headers=headers, reason=_REASONS.get(status, b""))
