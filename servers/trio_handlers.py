"""Running handlers on the trio driver: the part of `TrioDriver` that performs a `Start`.

A handler runs inline (the shared trampoline, `servers/trampoline.py`); its response goes to
the protocol (`ServerConnection.respond`, or a `ConnectionSink`); one that suspends goes on in
the task it suspended in, which frees the leader role first (`_run_suspended`). That task may
be one of the run's `Readiness` pool, which performs the input it read in line
(`_serve_inline`): the handler then goes on there (`_run_pooled`), outside the connection's
nursery. A base class, so `TrioDriver` stays one class per concern; the state it reads is
`TrioDriver`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from http import HTTPStatus
from typing import Any

import trio

from pipeparse import HttpRequest, ProtocolError, Response, ServerConnection
from pipeparse.actions import Start, Timer

from .admission import Admission
from .config import ServerConfig
from .handlers import send_stream
from .listen import log_access
from .protocol import Handler, NativeHandler
from .sink import ConnectionSink
from .trampoline import resume as _resume
from .trampoline import run_inline
from .trio_bodies import NoBody, StreamedBody
from .trio_reading import ReadsStream
from .trio_writing import FLUSH_AT

__all__ = ["RunsHandlers", "Step", "Worker"]

log = logging.getLogger("pipeparse.server")

_BYTES = (bytes, bytearray, memoryview)
_TEXT_PLAIN = ((b"content-type", b"text/plain; charset=utf-8"),)
_REFUSED = b"503 Service Unavailable: the server is at its concurrency limit\n"


class Worker:
    """One task of the connection: the task, whether it leads, its cancel scope (cancelled
    only by a `Cancel` of the request it runs, or by the connection's end if the task is not
    the connection's own), and that request while its handler is suspended."""

    __slots__ = ("cancelled", "leading", "method", "scope", "seq", "target", "task")

    def __init__(self, scope: trio.CancelScope, leading: bool) -> None:
        self.scope = scope
        self.task = trio.lowlevel.current_task()  # (asked once, not at every wait for input)
        self.leading = leading
        self.cancelled = False
        self.seq = -1
        self.method = b""
        self.target = b""


# What `TrioDriver._perform` stopped at: nothing, a write to await, or a handler that suspended
# (its `Start`, coroutine, trap and sink).
Step = (
    Coroutine[Any, Any, None]
    | tuple[Start, Coroutine[Any, Any, Any], Any, ConnectionSink | None]
    | None
)


class RunsHandlers(ReadsStream):
    """See the module comment; every attribute is set by `TrioDriver.__init__`. (It
    derives from `ReadsStream` only because just one slotted base may define a layout.)"""

    __slots__ = (
        "error_logged",
        "flush_pending",
        "pending",
        "pumping",
        "stalled",
        "starting",
    )

    conn: ServerConnection
    handler: Handler
    native: NativeHandler | None
    config: ServerConfig
    client: tuple[str, int] | None
    admission: Admission | None
    access_log: bool
    pending: list[Any]
    pumping: bool
    flush_pending: bool
    leader_vacant: bool
    running: dict[int, Worker]
    bodies: dict[int, StreamedBody]
    no_body: NoBody
    error_logged: bool
    done: bool
    gone: trio.Event
    progress: trio.lowlevel.ParkingLot
    progress_waiting: int
    starting: bool
    outside: list[Worker]

    def _kick(self) -> None:
        raise NotImplementedError

    def _perform(self, starts: bool) -> Step:
        raise NotImplementedError

    def _timer(self, action: Timer) -> None:
        raise NotImplementedError

    async def _pump(self, worker: Worker | None, starts: bool = True) -> None:
        raise NotImplementedError

    async def perform_soon(self) -> None:
        raise NotImplementedError

    async def wait_progress(self) -> None:
        raise NotImplementedError

    # -- running handlers ----------------------------------------------------------------

    def _start(self, start: Start) -> tuple[Coroutine[Any, Any, Any], Any, Any] | None:
        """Run the handler of `start` inline. None when it finished (its response is
        reported); else (its coroutine, the trap it suspended on, its sink or None)."""
        seq, head = start.seq, start.head
        conn = self.conn
        if not conn.may_start(seq):
            return None  # a response before it closed the connection
        if self.admission is not None and not self.admission.admit():
            self._refuse(start)
            return None
        source: StreamedBody | NoBody
        if start.body is None:
            source = self.bodies[seq] = StreamedBody(self, seq)
        else:
            source = self.no_body
        request = HttpRequest(
            head.method, head.target, head.http_version, head.headers, seq, start.body, source,
            self.client,
        )  # fmt: skip
        try:  # run inline: an instant handler finishes right here
            sink, started, trap = run_inline(self.native, self.handler, request, self._new_sink)
            if started is not None:
                coro: Coroutine[Any, Any, Any] = started
            else:
                response = self._finished(seq, sink, trap)  # (`trap`: its result)
                if response is None:
                    if self.access_log:
                        self._done(start, sink, trap)
                    return None
                sink = ConnectionSink(self, seq)  # a native response whose body streams
                coro = self._stream(sink, response)
                try:
                    trap = coro.send(None)
                except StopIteration:
                    self._done(start, sink, None)
                    return None
        except Exception as exc:
            self._failed(start, exc)
            return None
        return coro, trap, sink

    def _serve_inline(self, scope: trio.CancelScope) -> Coroutine[Any, Any, None] | None:
        """Input was read by the run's `Readiness` pool, in its leading task (`_input_came`):
        perform what follows right there. None when all is done; else the rest to go on
        with in that task (a handler suspended: `_run_pooled`, cancelled through `scope`).
        A write that must wait for room is left to a task of the connection."""
        self.pumping = True
        try:
            step = self._perform(True)
        finally:
            self.pumping = False
        if self.progress_waiting:
            self.progress.unpark_all()
        if isinstance(step, tuple):
            return self._run_pooled(Worker(scope, False), *step)
        if step is not None:
            self.stalled = step
            self._wake(1)
            return None
        self._settle()
        return None

    async def _run_pooled(
        self, worker: Worker, start: Start, coro: Coroutine[Any, Any, Any], trap: Any,
        sink: ConnectionSink | None,
    ) -> None:  # fmt: skip
        """A handler that suspended in a task of the `Readiness` pool goes on there (the pool
        has another task lead); `serve_connection` waits for it before it closes."""
        self.outside.append(worker)
        try:
            await self._run_suspended(worker, start, coro, trap, sink)
        except Exception:  # (a bug of the driver's: it must not reach the pool)
            log.exception("serving a connection failed")
            self._end()
        except BaseExceptionGroup as group:  # a cancelled handler's nursery, say
            cancelled, errors = group.split(trio.Cancelled)
            if errors is not None:  # (in a task of the connection, they would end it)
                log.error("handler failed", exc_info=errors)
                self._end()
            if cancelled is not None:
                raise cancelled from None  # (the pool task's scope takes its own cancel)
        finally:
            self.outside.remove(worker)
            if self.progress_waiting:
                self.progress.unpark_all()
        self._settle()

    def _settle(self) -> None:
        """A task that does not lead performed: if no task leads, have the socket watched,
        or wake a task to lead when there is more to do than wait for input."""
        if self.done or not self.leader_vacant or self.watching or self.pumping:
            return
        idle = not self.pending and self.stalled is None and self.conn.reading
        if not idle or not self._watch_input():
            self._wake(1)

    async def stream_out(self) -> None:
        """A handler reported a streamed piece: write it (if no other task is writing), and
        wait while the output is over its high-water mark."""
        await self._pump(None, starts=False)
        while self.pumping and self.conn.responses.out_size > FLUSH_AT and not self.done:
            if self.starting:
                # The handler runs inline, in the very task that performs: its yield ends that
                # (and a task cannot be woken from a lot it has not parked in yet).
                await trio.lowlevel.checkpoint()
            else:
                await self.wait_progress()  # another task is writing: wait for it

    def _new_sink(self, seq: int) -> ConnectionSink:
        return ConnectionSink(self, seq)

    async def _run_suspended(
        self, worker: Worker, start: Start, coro: Coroutine[Any, Any, Any], trap: Any,
        sink: ConnectionSink | None,
    ) -> None:  # fmt: skip
        """The handler of `start` suspended in this task: free the leader role (if this task
        has it) and get the pending actions performed, then go on with it here."""
        seq = start.seq
        self.conn.handler_suspended(seq)
        self.running[seq] = worker
        worker.seq = seq
        worker.method, worker.target = start.head.method, start.head.target
        pending = self.pending
        if worker.leading:
            worker.leading = False
            self.leader_vacant = True
        if self.leader_vacant and not self.watching:  # no task leads, and none is due to
            if pending or not self._arm_timers() or not self._watch_input():
                self._wake(1 + sum(type(a) is Start for a in self.pending))
        elif pending:
            wanted = sum(type(a) is Start for a in pending)
            if wanted:
                self._wake(wanted)
            else:
                self._kick()
        elif not self._arm_timers():
            self._kick()
        admission = self.admission
        if admission is not None:
            admission.blocked()
        try:
            result = await _resume(coro, trap)
            response = self._finished(seq, sink, result)
            if response is not None:  # a native response whose body streams
                sink = ConnectionSink(self, seq)
                await self._stream(sink, response)
                result = None
        except trio.Cancelled:
            if not worker.cancelled:
                raise  # not ours: the connection is going away
            return  # over its timeout: its 503 is out (`timer_fired`)
        except Exception as exc:
            self._failed(start, exc)
        else:
            self._done(start, sink, result)
        finally:
            coro.close()
            worker.seq = -1
            self.running.pop(seq, None)
            self.bodies.pop(seq, None)
            if admission is not None:
                admission.unblocked()
        await self._flush_soon(worker)

    async def _flush_soon(self, worker: Worker) -> None:
        """After a suspended handler finished: perform what follows, once per wave
        (handlers whose waits end together finish in one pass of the scheduler, so the first
        yields once and then sends all their responses in one write). Alone (no other
        handler of the connection waits), it performs at once."""
        if self.flush_pending:
            return
        if self.running:
            self.flush_pending = True
            try:
                await trio.lowlevel.checkpoint()
            finally:
                self.flush_pending = False
        if self.pumping:
            return
        await self._pump(worker)

    def _arm_timers(self) -> bool:
        """A handler suspended (its request timeout starts): perform the protocol's new
        actions right here if they are only timers, so no task is woken for them. False
        when another action came too (it is left pending) or one is pending before them."""
        if self.pumping:
            return True  # the task that performs asks the protocol again before it stops
        if self.pending:
            return False
        actions = self.conn.actions()
        timers = [action for action in actions if type(action) is Timer]
        if len(timers) < len(actions):
            self.pending = actions
            return False
        for timer in timers:
            self._timer(timer)
        return True

    async def _stream(self, sink: ConnectionSink, response: Response) -> None:
        await sink.start(response.status, response.headers)
        await send_stream(response.body, sink)

    def _finished(self, seq: int, sink: ConnectionSink | None, result: Any) -> Response | None:
        """The handler of `seq` returned `result`: report its response. A native `Response`
        whose body streams is returned, for the caller to stream."""
        if sink is not None:  # a generic handler: it answered through its sink
            if not sink.finished:
                raise RuntimeError("handler returned without a response")
            if self.bodies:
                self.bodies.pop(seq, None)
            return None
        if not isinstance(result, Response):
            raise TypeError(f"a native handler must return a Response, got {result!r}")
        body = result.body
        if not isinstance(body, _BYTES):
            return result
        self.conn.respond(seq, result.status, result.headers, body)
        if self.bodies:
            self.bodies.pop(seq, None)
        return None

    def _done(self, start: Start, sink: ConnectionSink | None, result: Any) -> None:
        if self.access_log:  # (the instant path asks first: it saves a call per request)
            if sink is not None:
                status, sent = sink.status, sink.sent
            else:
                status, sent = result.status, len(result.body)
            self._log(start, status, sent)

    def _log(self, start: Start, status: int, sent: int) -> None:
        """The access log's line for `start` (`sent`: the body bytes, if the framing sends
        a body: none for HEAD, 1xx, 204 and 304)."""
        method = start.head.method
        if method == b"HEAD" or status < 200 or status == 204 or status == 304:
            sent = 0
        log_access(self.client, method, start.head.target, status, sent)

    def _failed(self, start: Start, exc: Exception) -> None:
        seq = start.seq
        if isinstance(exc, ProtocolError):
            log.debug("request %d: %s", seq, exc)
            status = exc.status_hint
        else:
            log.exception("handler failed", exc_info=exc)
            status = 500
        self.conn.handler_failed(seq, exc)
        self.bodies.pop(seq, None)
        if self.access_log:
            self._log(start, status, len(b"%d %s\n" % (status, HTTPStatus(status).phrase.encode())))

    def _log_error(self) -> None:
        """The access log's line for a protocol error's 4xx (the connection closes after)."""
        error = self.conn.error
        if error is not None and self.access_log and not self.error_logged:
            self.error_logged = True
            sent = len((error.message + "\n").encode("utf-8", "replace"))
            log_access(self.client, b"-", b"-", error.status_hint, sent)

    def _refuse(self, start: Start) -> None:
        """Over `--limit-concurrency`: answer 503 with Connection: close (nothing after it
        starts)."""
        self.conn.respond(start.seq, 503, (*_TEXT_PLAIN, (b"connection", b"close")), _REFUSED)
        if self.access_log:
            self._log(start, 503, len(_REFUSED))
