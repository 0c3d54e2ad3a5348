"""The asyncio driver: moves bytes between an asyncio transport and a `ServerConnection`.

Strategy
--------
Nothing here decides anything about HTTP: `pipeparse.ServerConnection` does. `HttpProtocol` (an
`asyncio.Protocol`, so it runs on asyncio's and uvloop's transports, not streams) feeds it what
arrives and performs the actions it returns, in order, until it has none: `Start` runs a
handler, `Write` goes to the transport, `Timer`s become `loop.call_at` handles, pause and resume
go to the transport, `ShutWrite` is `write_eof`, `Close` closes.

Handlers run inline: the driver drives the handler's coroutine itself (one ``coro.send(None)``),
so a handler that never waits finishes right there, with no task, and its response is in the
same `Write` as the rest of the batch. Only a handler that suspends becomes a task, which goes
on awaiting from the very point it suspended (`_resume`): the protocol then arms its request
timeout, and a `Cancel` (after the 503) cancels the task.

Native handlers (`protocol.native_of`) are called directly and their `Response` reported with
`ServerConnection.respond`; any other handler (the ASGI adapter) answers through
`sink.ConnectionSink`.

Access log and load limits: with the log on, the connection is a `ReportingConnection`, which
reports every complete response (`_log_access`);
`servers.admission.Admission` (shared by the server's connections) is asked before each
handler starts, and counts connections and handlers that suspended, as on trio.

Back-pressure: the protocol pauses reading (its buffer is full, or `max_in_flight` requests are
unanswered); the transport's `pause_writing` pauses reading too, and a handler streaming its
response waits for `resume_writing`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, cast

from pipeparse import (
    ConnectionTimeouts,
    HttpRequest,
    ProtocolError,
    RequestHead,
    Response,
    ServerConnection,
)
from pipeparse._gather import gather
from pipeparse._reporting import ReportingConnection
from pipeparse.actions import (
    BodyData,
    BodyEnd,
    BodyError,
    Cancel,
    Close,
    PauseReading,
    ResumeReading,
    ShutWrite,
    Start,
    Timer,
    TimerKey,
    Upgrade,
    Write,
)

from .admission import Admission
from .config import ServerConfig
from .deadline_queue import DeadlineQueue
from .handlers import send_stream
from .logs import log_access
from .protocol import Handler, native_of
from .sink import ConnectionSink
from .trampoline import resume as _resume
from .trampoline import run_inline
from .websocket import websocket_of
from .websocket_asyncio import AsyncioWebSocket

__all__ = ["HttpProtocol"]

log = logging.getLogger("pipeparse.server")
_BYTES = (bytes, bytearray, memoryview)
_REFUSED_HEADERS = ((b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close"))
_REFUSED_BODY = b"503 Service Unavailable: the server is at its concurrency limit\n"


class HttpProtocol(asyncio.Protocol):
    """One connection: an asyncio `Protocol` driving a `ServerConnection`."""

    def __init__(
        self,
        handler: Handler,
        config: ServerConfig,
        connections: set[HttpProtocol],
        shutting_down: Callable[[], bool],
        admission: Admission | None = None,
        first_data: bytes = b"",
    ) -> None:
        self.handler = handler
        self.first_data = first_data  # read before it was ours (taken at a graceful stop)
        self.native = native_of(handler)
        self.endpoint = websocket_of(handler) if config.ws != "none" else None
        self.websocket: AsyncioWebSocket | None = None  # after an `Upgrade`: its callbacks
        self.config = config
        self.connections = connections
        self.shutting_down = shutting_down
        self.loop = asyncio.get_running_loop()
        options: dict[str, Any] = {}
        connection: type[ServerConnection] = ServerConnection
        if config.access_log:  # (a subclass: without the log, nothing is paid for it)
            connection = ReportingConnection
            options["on_answered"] = self._log_access
        self.conn = connection(
            **options,
            limits=config.limits,
            policy=config.pipeline_policy,
            max_in_flight=config.max_in_flight,
            buffer_size=config.buffer_size,
            fixed_buffer=config.fixed_buffer,
            timeouts=ConnectionTimeouts(
                header=config.header_timeout,
                body=config.body_timeout,
                keep_alive=config.keep_alive_timeout,
                request=config.request_timeout,
            ),
            server_name=config.server_name,
            clock=self.loop.time,
            upgrades=self.endpoint is not None,
        )
        self.admission = admission  # None: no limit on load (the usual case)
        self.transport: asyncio.Transport | None = None
        self.client: tuple[str, int] | None = None
        self.closed = self.loop.create_future()  # done when the connection is gone
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._cancelled: set[int] = set()
        self._bodies: dict[int, _Body] = {}
        self._timers: dict[TimerKey, asyncio.TimerHandle] = {}  # the read and linger timers
        self._request_deadlines = DeadlineQueue()
        self._request_handle: asyncio.TimerHandle | None = None  # at the earliest of them
        self._pumping = False
        self._flush_pending = False  # a `_flush` is due (`_task`)
        self._read_paused = False  # by the protocol
        self._write_paused = False  # by the transport
        self._drained: asyncio.Future[None] | None = None
        self._no_body = _NoBody(self)  # the body source of every request with a whole body

    # -- transport callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports implement the interface without subclassing it)
        self.transport = transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.client = (str(peer[0]), int(peer[1]))
        self.connections.add(self)
        if self.admission is not None:
            self.admission.connection_opened()
        if self.first_data:  # what a client sent while it waited in the backlog is answered
            self.conn.receive_data(self.first_data)
            self.first_data = b""
        if self.shutting_down():
            self.conn.shutdown()
        self.pump()

    def data_received(self, data: bytes) -> None:
        if self.websocket is not None:
            self.websocket.data_received(data)
            return
        self.conn.receive_data(data)
        self.pump()

    def eof_received(self) -> bool:
        if self.websocket is not None:
            self.websocket.data_received(b"")
            return True
        self.conn.receive_eof()
        self.pump()
        return True  # keep the write side open for the answers still to come

    def connection_lost(self, exc: Exception | None) -> None:
        if self.websocket is not None:
            self.websocket.connection_lost()
        self.connections.discard(self)
        if self.admission is not None:
            self.admission.connection_closed()
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if self._request_handle is not None:
            self._request_handle.cancel()
            self._request_handle = None
        for task in self._tasks.values():
            task.cancel()
        for body in self._bodies.values():
            body.put(ProtocolError("client closed the connection", 400))
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        if self.websocket is not None:
            self.websocket.pause_writing()
        self._write_paused = True
        if self.transport is not None and not self._read_paused:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.websocket is not None:
            self.websocket.resume_writing()
        self._write_paused = False
        if self.transport is not None and not self._read_paused:
            self.transport.resume_reading()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._drained = None

    def shutdown(self) -> None:
        """Graceful shutdown: answer what was read, then close."""
        if self.websocket is not None:
            self.websocket.going_away()
            return
        self.conn.shutdown()
        self.pump()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- performing actions --------------------------------------------------------------

    def pump(self) -> None:
        """Perform the protocol's actions until it has none (not reentrant: a nested call
        returns, and the outer loop picks up what it would have done)."""
        if self._pumping:
            return
        self._pumping = True
        conn = self.conn
        transport = self.transport
        assert transport is not None
        try:
            while actions := conn.actions():
                for action in actions:
                    kind = type(action)
                    if kind is Start:
                        self._start(action)  # type: ignore[arg-type]
                    elif kind is Write:
                        parts = action.parts  # type: ignore[union-attr]
                        buffers = parts if len(parts) == 1 else gather(parts)
                        if len(buffers) == 1:
                            transport.write(buffers[0])
                        else:  # large bodies uncopied where the transport can (uvloop)
                            transport.writelines(buffers)
                    elif kind is Timer:
                        self._timer(action)  # type: ignore[arg-type]
                    elif kind is BodyData:
                        self._bodies[action.seq].put(action.data)  # type: ignore[union-attr, arg-type]
                    elif kind is BodyEnd:
                        self._bodies[action.seq].put(None)  # type: ignore[union-attr]
                    elif kind is BodyError:
                        self._bodies[action.seq].put(action.error)  # type: ignore[union-attr]
                    elif kind is PauseReading:
                        self._read_paused = True
                        if not self._write_paused:
                            transport.pause_reading()
                    elif kind is ResumeReading:
                        self._read_paused = False
                        if not self._write_paused:
                            transport.resume_reading()
                    elif kind is Cancel:
                        self._cancel(action.seq)  # type: ignore[union-attr]
                    elif kind is ShutWrite:
                        if transport.can_write_eof():
                            transport.write_eof()
                        if self._read_paused:  # drain what the client still sends
                            self._read_paused = False
                            transport.resume_reading()
                    elif kind is Close:
                        transport.close()
                    elif kind is Upgrade:
                        self._upgrade(action)  # type: ignore[arg-type]
        finally:
            self._pumping = False

    def _upgrade(self, action: Upgrade) -> None:
        """The connection is a WebSocket's now: its callbacks go to `AsyncioWebSocket`."""
        assert self.endpoint is not None and self.transport is not None
        if self._read_paused and not self._write_paused:
            self.transport.resume_reading()
        self._read_paused = False
        self.websocket = AsyncioWebSocket(
            self.transport, self.endpoint, action.head, self.client, action.data,
            self.config.websocket_options(), self.conn.date(),
        )  # fmt: skip
        if self.config.access_log:  # once it is over: 101, or the handshake's answer
            head = action.head
            self.websocket.done.add_done_callback(
                lambda done: self._log_access(head, done.result(), 0)
            )

    def _timer(self, action: Timer) -> None:
        key, deadline = action.key, action.deadline
        if isinstance(key, int):  # a request timeout: data, and one handle for the earliest
            self._request_timer(key, deadline)
            return
        timers = self._timers
        handle = timers.get(key)
        if deadline is None:
            return  # ("read": left to fire; the protocol ignores it then)
        if handle is not None:
            if handle.when() <= deadline:
                return  # it fires first; the protocol re-arms it for the real deadline
            handle.cancel()
        timers[key] = self.loop.call_at(deadline, self._fire, key)

    def _fire(self, key: TimerKey) -> None:
        self._timers.pop(key, None)
        self.conn.timer_expired(key)
        self.pump()

    def _request_timer(self, seq: int, deadline: float | None) -> None:
        pending = self._request_deadlines
        pending.set(seq, deadline)
        if deadline is None:
            return
        handle = self._request_handle
        if handle is not None:
            if handle.when() <= deadline:
                return  # it fires first, and arms the next
            handle.cancel()
        self._request_handle = self.loop.call_at(deadline, self._requests_due)

    def _requests_due(self) -> None:
        """The earliest request deadline passed: the protocol answers 503 for those still
        armed; the handle is armed again for the next live one."""
        self._request_handle = None
        pending = self._request_deadlines
        for seq in pending.due(self.loop.time()):
            self.conn.timer_expired(seq)
        deadline = pending.next_deadline()
        if deadline is not None:
            self._request_handle = self.loop.call_at(deadline, self._requests_due)
        self.pump()

    def _log_access(self, head: RequestHead | None, status: int, sent: int) -> None:
        if head is None:  # a protocol error's answer
            log_access(self.client, b"-", b"-", status, sent)
        else:
            log_access(self.client, head.method, head.target, status, sent)

    def _refuse(self, seq: int) -> None:
        """Over `--limit-concurrency`: 503 with Connection: close. A request started after it
        (in the same batch) does not run (`ServerConnection.may_start`), as on trio."""
        self.conn.respond(seq, 503, _REFUSED_HEADERS, _REFUSED_BODY)

    def _cancel(self, seq: int) -> None:
        task = self._tasks.get(seq)
        if task is not None:
            self._cancelled.add(seq)
            task.cancel()

    # -- running handlers ----------------------------------------------------------------

    def _start(self, start: Start) -> None:
        seq, head = start.seq, start.head
        if not self.conn.may_start(seq):
            return  # a response before it (in this batch) closed the connection
        if self.admission is not None and not self.admission.admit():
            self._refuse(seq)
            return
        source: _Body | _NoBody
        if start.body is None:
            source = self._bodies[seq] = _Body(self, seq)
        else:
            source = self._no_body
        request = HttpRequest(
            head.method, head.target, head.http_version, head.headers, seq, start.body, source,
            self.client,
        )  # fmt: skip
        try:  # run inline: an instant handler finishes right here
            sink, coro, trap = run_inline(self.native, self.handler, request, self._new_sink)
            if coro is None:
                self._finished(seq, sink, trap)  # (its result)
                return
        except Exception as exc:
            self._failed(seq, exc)
            return
        self._in_task(seq, self._go_on(seq, sink, coro, trap))

    def _new_sink(self, seq: int) -> ConnectionSink:
        return ConnectionSink(self, seq)

    def _in_task(self, seq: int, work: Coroutine[Any, Any, None]) -> None:
        """Go on with request `seq`'s `work` in a task of its own (its handler suspended, or
        its native response streams)."""
        self.conn.handler_suspended(seq)
        task = self._tasks[seq] = self.loop.create_task(self._task(seq, work))
        admission = self.admission
        if admission is not None:
            admission.blocked()  # in flight (an instant handler is over before others start)
            # (a callback, not `_task`'s finally: a task cancelled before it ran skips that)
            task.add_done_callback(lambda _: admission.unblocked())

    async def _task(self, seq: int, work: Coroutine[Any, Any, None]) -> None:
        """Run `work`: a timeout's cancellation ends it quietly, a failure is reported, and
        either way the connection goes on."""
        try:
            await work
        except asyncio.CancelledError:
            if seq not in self._cancelled:
                raise
        except Exception as exc:
            self._failed(seq, exc)
        finally:
            work.close()  # (a no-op once it ran; one cancelled before it started stays quiet)
            self._tasks.pop(seq, None)
            self._cancelled.discard(seq)
            self._bodies.pop(seq, None)
            if self._tasks:  # others may finish in this pass of the loop: one write for all
                if not self._flush_pending:
                    self._flush_pending = True
                    self.loop.call_soon(self._flush)
            elif self.transport is not None and not self.transport.is_closing():
                self.pump()

    def _flush(self) -> None:
        """Perform what the handlers that finished in the last pass of the loop left (their
        responses go in one write)."""
        self._flush_pending = False
        if self.transport is not None and not self.transport.is_closing():
            self.pump()

    async def _go_on(
        self, seq: int, sink: ConnectionSink | None, coro: Coroutine[Any, Any, Any], trap: Any
    ) -> None:
        """A handler that suspended, going on from where it did."""
        result = await _resume(coro, trap)
        self._finished(seq, sink, result)
        if sink is None and isinstance(result, Response) and not isinstance(result.body, _BYTES):
            await self._stream_native(seq, result)

    def _finished(self, seq: int, sink: ConnectionSink | None, result: Any) -> None:
        """The handler of `seq` returned `result`: report its response."""
        if sink is not None:  # a generic handler: it answered through its sink
            if not sink.finished:
                raise RuntimeError("handler returned without a response")
            if self._bodies:
                self._bodies.pop(seq, None)
            return
        if not isinstance(result, Response):
            raise TypeError(f"a native handler must return a Response, got {result!r}")
        if isinstance(result.body, _BYTES):
            self.conn.respond(seq, result.status, result.headers, result.body)
            if self._bodies:
                self._bodies.pop(seq, None)
        elif seq not in self._tasks:  # inline: stream it from a task
            self._in_task(seq, self._stream_native(seq, result))

    async def _stream_native(self, seq: int, response: Response) -> None:
        sink = ConnectionSink(self, seq)
        await sink.start(response.status, response.headers)
        await send_stream(response.body, sink)

    def _failed(self, seq: int, exc: Exception) -> None:
        if isinstance(exc, ProtocolError):
            log.debug("request %d: %s", seq, exc)
        else:
            log.exception("handler failed", exc_info=exc)
        self.conn.handler_failed(seq, exc)
        self._bodies.pop(seq, None)

    async def stream_out(self) -> None:
        """A streamed piece was reported (`ConnectionSink`): write it, wait for room."""
        self.pump()
        await self.wait_writable()

    async def wait_writable(self) -> None:
        """Wait while the transport's write buffer is over its high-water mark."""
        while self._write_paused and not self.closed.done():
            if self._drained is None:
                self._drained = self.loop.create_future()
            await self._drained


class _NoBody:
    """The body source of a request whose body had all arrived."""

    __slots__ = ("proto",)

    def __init__(self, proto: HttpProtocol) -> None:
        self.proto = proto

    async def next_chunk(self) -> bytes | memoryview | None:
        return None

    async def wait_disconnect(self) -> None:
        await asyncio.shield(self.proto.closed)


class _Body:
    """The streamed body of request `seq`: pieces as the protocol delivers them."""

    __slots__ = ("_waiter", "proto", "seq")

    def __init__(self, proto: HttpProtocol, seq: int) -> None:
        self.proto = proto
        self.seq = seq
        self._waiter: asyncio.Future[memoryview | ProtocolError | None] | None = None

    def put(self, item: memoryview | ProtocolError | None) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(item)

    async def next_chunk(self) -> bytes | memoryview | None:
        proto = self.proto
        if proto.closed.done():
            raise ProtocolError("client closed the connection", 400)
        waiter: asyncio.Future[memoryview | ProtocolError | None] = proto.loop.create_future()
        self._waiter = waiter
        proto.conn.read_body(self.seq)
        proto.pump()
        item = await waiter
        self._waiter = None
        if isinstance(item, ProtocolError):
            raise item
        return item

    async def wait_disconnect(self) -> None:
        await asyncio.shield(self.proto.closed)
