"""The pipeparse engine: the requests of one pipelined connection run concurrently.

Strategy
--------
Per connection, bytes land once in a `SeekableBuffer`; a `RequestIndex` frames every request a
receive brings (receive batching); handlers get views into the buffer; `OrderedResponses` puts
the answers back in request order and the writer sends every contiguous ready response at once.

Who runs what: leader/followers. The connection's tasks share one *leader* role: the leader
takes the next request that `DispatchPolicy` lets start and runs its handler inline, in its own
task: no spawn, no channel. A handler that completes without suspending costs one call. The
first time a handler suspends (it sleeps, waits for I/O or a lock), the engine notices (it
drives the coroutine itself: one ``coro.send(None)``, then `_resume`) and, before the suspension
reaches trio, frees the leader role and wakes a parked follower to take it, plus one more per
request queued behind (they likely block too), or spawns them (at most `max_in_flight` handler
tasks plus a leader per connection). Woken tasks that do not get the role help: they run the
requests that may start (`_assist`), so a batch of blocking requests starts in one pass of the
scheduler. So only a handler that blocks pays for a task switch, and a connection of instant
handlers runs on one task. When a blocked handler finishes, its task writes its response, takes
the leader role if it is free, helps if a request may start, and otherwise parks.

Hot path: a native handler (`protocol.native_of`) is called directly with the `HttpRequest`
and its `Response` rendered by the engine (no sink); the response of any handler that finishes
without blocking goes straight to the output (`OrderedResponses.emit`) and needs a response
slot only if earlier responses are still pending. Requests that finished inline give their
bytes back to the buffer in one release per batch.

Adaptive batching (after the Oracle datagram paper's batch sizing):
- receive size: starts at 4 KiB; a receive that fills its request doubles the next one, up to
  256 KiB (or the buffer); one that brings less than a quarter of it halves the next, down to
  4 KiB. So a deep pipeline is read in few large receives and a trickle in small ones.

Receive memory: the buffer's block grows with the receive size and the bytes held (see
`pipeparse._buffer`). A connection that has waited idle for `_TRIM_AFTER` gives its block
back (its keep-alive wait wakes once, early, to do it; a client that is back sooner keeps
it), and `pipeparse.servers.heap` returns the freed pages to the system in steps. At the same moment
the tasks that only wait for work end (parked followers, an idle watchdog; they start again
when a handler blocks). So an idle connection costs its objects and one waiting task: about
13 KiB of RSS at 10,000 (15-17 KiB once its handlers had blocked).
- flush: responses of instant handlers are not sent one by one: the leader writes when it runs
  out of runnable requests (before it receives again or waits), so every response of one
  receive's batch leaves in one send, while a lone request is answered at once. Output over
  64 KiB is written without waiting; a response streamed by a handler at the head of the line
  goes out as it is produced. `flush="each"` and a fixed `recv_size` turn both off (benchmarks).

Back-pressure: the leader stops receiving while `max_in_flight` requests are framed and not yet
answered, or the buffer is full; TCP then pushes back on the client. Every receive passes this
one gate (`_receive_more`), the last request's body too (after `Connection: close`). A body
larger than the buffer streams to its handler piece by piece (chunk-size lines are released
with the pieces) and never has to fit. A request whose body fits waits for all of it before it
starts, so a framing error in its body is answered alone.

Request timeout: a handler that blocks gets `request_timeout` seconds (then its request gets a
503). Its task notes the deadline (a plain attribute, `_TaskTimer`) and queues it for the
connection's watchdog task (`_watch_timeouts`, started at the first blocked handler), which
sleeps until the earliest deadline still armed and cancels that task's scope. So a blocked
handler costs no cancel-scope deadline of its own (setting one costs trio a context manager and
a deadline-heap update, twice per request), and the watchdog wakes about once per timeout.

Closing: after `Connection: close`, an HTTP/1.0 request without keep-alive, or a protocol
error, nothing later is dispatched; once every earlier response is out, the last response (the
error's 4xx) is sent, the write side is shut, what the client still sends is drained for a
short while, and only then is the socket closed, so the answers are not lost to a reset.
"""

from __future__ import annotations

import logging
import math
import os
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from http import HTTPStatus
from typing import Any, NamedTuple

import trio

from pipeparse import (
    CONTINUE_100,
    LAST_CHUNK,
    MIN_BLOCK,
    DispatchPolicy,
    FramedRequest,
    HttpDate,
    HttpRequest,
    OrderedResponses,
    ProtocolError,
    RequestIndex,
    Response,
    ResponseFraming,
    ResponseSlot,
    SeekableBuffer,
    chunk,
    render_head,
)
from pipeparse._gather import gather

from . import closing
from .admission import current_admission
from .config import ServerConfig
from .handlers import send_stream
from .heap import gave_back
from .listen import current_shutdown, log_access
from .protocol import Handler, native_of
from .tls import close_stream
from .trampoline import resume as _resume
from .trio_writing import WritesStream
from .websocket import websocket_of
from .websocket_trio import serve_websocket

__all__ = ["serve_connection"]

log = logging.getLogger("pipeparse.server")

_MIN_RECV = 4 * 1024
_FIRST_RECV = 4 * 1024
_MAX_RECV = 256 * 1024
_FLUSH_AT = 64 * 1024  # output bytes written without waiting for the batch to end
_SLOT_BUFFER = 1024 * 1024  # a streamed response not yet at the head waits beyond this
_TRIM_AFTER = 0.05  # seconds idle before a connection's receive block is given back
_date = HttpDate()
_TEXT_PLAIN = ((b"content-type", b"text/plain; charset=utf-8"),)
_BYTES = (bytes, bytearray, memoryview)
_NO_TIMEOUTS: deque[tuple[float, _TaskTimer]] = deque(maxlen=0)  # until a handler blocks


async def serve_connection(
    stream: trio.abc.Stream,
    handler: Handler,
    config: ServerConfig,
    client: tuple[str, int] | None = None,
) -> None:
    """Serve one connection until it closes; the stream is closed on return."""
    conn = _Connection(stream, handler, config, client)
    shutdown = current_shutdown()
    try:
        async with trio.open_nursery() as nursery:
            conn.nursery = nursery
            shutdown.add_callback(conn.shut_down)  # no watcher task: idle costs one task
            if shutdown.is_set():
                # It waited in the backlog through a graceful stop: its first receive (which
                # reads at once) still takes what the client already sent, to be answered.
                nursery.start_soon(_call, conn.shut_down)
            await conn.work(leader=True)
        if conn.upgrading():
            await conn.upgrade()
        elif conn.linger or conn.responses.closing:
            await conn.linger_close()
    finally:
        shutdown.discard_callback(conn.shut_down)
        await close_stream(stream)  # close_notify first over TLS


async def _call(function: Callable[[], None]) -> None:
    function()


class _Connection(WritesStream):
    __slots__ = (
        "access_log",
        "admission",
        "body_since",
        "buf",
        "client",
        "config",
        "date",
        "done",
        "eager_misses",
        "eager_reads",
        "eof",
        "fd",
        "fixed_recv",
        "flush_each",
        "flush_pending",
        "followers",
        "generation",
        "gone",
        "handler",
        "head_since",
        "index",
        "keep_alive_at",
        "leader_vacant",
        "linger",
        "max_recv",
        "native",
        "no_body",
        "nursery",
        "policy",
        "progress",
        "queue",
        "recv_scope",
        "recv_size",
        "release_from",
        "release_to",
        "responses",
        "shutting_down",
        "stop_dispatch",
        "stream",
        "streaming",
        "tasks",
        "timeout_error",
        "timeouts",
        "watchdog",
        "watchdog_scope",
        "websocket",
        "writing",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        handler: Handler,
        config: ServerConfig,
        client: tuple[str, int] | None,
    ) -> None:
        self.stream = stream
        self.handler = handler
        self.native = native_of(handler)  # called directly on the hot path
        self.config = config
        self.client = client
        self.nursery: trio.Nursery
        # Grows with the bytes in flight, and is trimmed to nothing before an idle wait.
        self.buf = SeekableBuffer(
            config.buffer_size, min_block=config.buffer_size if config.fixed_buffer else MIN_BLOCK
        )
        # An upgrade request ends the HTTP stream when the app takes WebSockets (`upgrade`).
        self.websocket = websocket_of(handler) if config.ws != "none" else None
        self.index = RequestIndex(self.buf, config.limits, upgrades=self.websocket is not None)
        self.policy = DispatchPolicy(config.pipeline_policy, config.max_in_flight)
        self.responses = OrderedResponses()
        self.queue: deque[FramedRequest] = deque()  # framed, not yet started
        sock = stream.socket if isinstance(stream, trio.SocketStream) else None
        self.fd = sock.fileno() if sock is not None else -1  # -1: use the stream
        self.large_sends = False  # TCP_NOTSENT_LOWAT lifted (`WritesStream._send_gathered`)
        self.eager_reads = 0  # receives in a row that found data without waiting
        self.eager_misses = 0  # receives in a row whose attempt to read at once found nothing
        self.flush_pending = False  # a finished handler's task will flush after one yield
        self.fixed_recv = config.recv_size
        self.recv_size = config.recv_size or min(_FIRST_RECV, config.buffer_size)
        self.max_recv = min(_MAX_RECV, config.buffer_size)
        self.flush_each = config.flush == "each"
        self.eof = False
        self.stop_dispatch = False  # a closing request or an error: nothing more starts
        self.done = False
        self.gone = trio.Event()  # the client went away (or the connection is closing)
        self.tasks = 1
        self.generation = 0  # bumped to end the parked followers (`_retire_helpers`)
        self.leader_vacant = False
        self.followers = trio.lowlevel.ParkingLot()
        self.progress = trio.lowlevel.ParkingLot()  # the leader waits here for a completion
        self.writing = False
        self.streaming: _StreamingBody | None = None
        self.date = _date()  # the Date value for responses of the current batch
        self.access_log = config.access_log
        self.admission = current_admission()  # None: no limit on load (the usual case)
        self.shutting_down = False
        self.linger = False  # the connection closes after a last response: in stages
        self.timeout_error: ProtocolError | None = None
        self.recv_scope: trio.CancelScope | None = None  # the leader's receive, while it waits
        self.keep_alive_at = math.inf  # while the leader waits idle: when the connection closes
        self.head_since = math.inf  # when the partial head now buffered began
        self.body_since = 0.0  # when the body now arriving last made progress
        self.no_body = _NoBody(self)
        self.release_from = self.release_to = -1  # finished requests' bytes not yet released
        # Armed request timeouts, in deadline order (all have the same length); an entry whose
        # timer was disarmed since is stale and dropped. Behind the oldest live entry there
        # can only be later requests, all unanswered: at most `max_in_flight` entries.
        self.timeouts = _NO_TIMEOUTS  # a deque of its own from the first blocked handler
        self.watchdog: trio.lowlevel.ParkingLot | None = None  # where it waits for an entry
        self.watchdog_scope = trio.CancelScope()  # cancelled at the end

    # -- the worker loop -----------------------------------------------------------------

    async def work(self, leader: bool) -> None:
        """One task's life: lead while it can, help or follow while another leads.

        The task's cancel scope lasts until a request timeout fires in it (the watchdog
        cancels it; the hot path never enters or leaves a scope): the task then goes on in a
        new one.
        """
        flush = False
        while not self.done:
            with trio.CancelScope() as scope:
                timer = _TaskTimer(scope)
                while not self.done:
                    if flush:  # a request this task ran has finished: write, once per wave
                        flush = False
                        await self._flush_soon()
                    elif leader or self.leader_vacant:
                        self.leader_vacant = False
                        if await self._lead(timer):
                            self._end()
                            return
                        leader = False
                        flush = True
                        if timer.fired:  # (only a blocked handler can time out)
                            break
                    elif self._runnable():  # woken to help, or a wave's waits ended
                        await self._assist(timer)
                        flush = True
                        if timer.fired:
                            break
                    else:
                        generation = self.generation
                        await self.followers.park()  # unparked: to lead, to help, or done
                        if self.generation != generation:  # (`_retire_helpers`)
                            self.tasks -= 1
                            return
            leader = False  # a request timed out in the scope: its 503 is written next
            flush = True

    async def _flush_soon(self) -> None:
        """Flush after a blocked handler finished, once per wave: handlers whose waits end
        together finish in one pass of the scheduler, so the first yields once and then
        sends all their responses in one write."""
        if self.flush_pending:
            return
        self.flush_pending = True
        try:
            await trio.lowlevel.checkpoint()
        finally:
            self.flush_pending = False
        await self.flush()

    async def _lead(self, timer: _TaskTimer) -> bool:
        """Run requests inline until one blocks (False) or the connection is done (True)."""
        queue = self.queue
        policy = self.policy
        while True:
            request: FramedRequest | None
            if (
                queue
                and not self.stop_dispatch
                and queue[0].end is not None
                and policy.can_start(queue[0].head.method)
            ):
                request = queue.popleft()  # the hot path: no await
            else:
                request = await self._next()
                if request is None:
                    return True
            if self.native is not None and request.end is not None:  # (`_dispatch`, inline)
                suspended = self._start_native(request)
                if suspended is not None:
                    await self._finish_native(request, suspended, timer, True)
                    return False
                if self.flush_each or self.responses.out_size >= _FLUSH_AT:
                    await self.flush()
            elif await self._run(request, timer, True):
                return False

    def _runnable(self) -> bool:
        """May the next framed request start now (and be run by whichever task is free)?"""
        queue = self.queue
        return (
            bool(queue)
            and not self.stop_dispatch
            and queue[0].end is not None
            and self.policy.can_start(queue[0].head.method)
        )

    async def _assist(self, timer: _TaskTimer) -> None:
        """Help while another task leads: run the requests that may start now, inline, until
        one blocks (then finish it in this task) or none may start. Never receives."""
        try:
            while self._runnable():
                if await self._dispatch(self.queue.popleft(), timer, lead=False):
                    return
        finally:
            self._release_pending()  # the leader may be waiting for space right now

    async def _dispatch(self, request: FramedRequest, timer: _TaskTimer, lead: bool) -> bool:
        """Run `request` inline; True if its handler blocked (and has now finished)."""
        if self.native is not None and request.end is not None:
            suspended = self._start_native(request)
            if suspended is not None:
                await self._finish_native(request, suspended, timer, lead)
                return True
            if self.flush_each or self.responses.out_size >= _FLUSH_AT:
                await self.flush()
            return False
        return await self._run(request, timer, lead)

    def shut_down(self) -> None:
        """Graceful shutdown (the server's `ShutdownSignal` calls it): read nothing new,
        answer what was read, close when idle."""
        if self.done or self.shutting_down:
            return
        self.shutting_down = True
        self.eof = True  # no more reads: the requests already framed are still answered
        if self.recv_scope is not None:
            self.recv_scope.cancel()  # the leader waits for input: stop waiting
        if self.streaming is not None:
            self.streaming.arrived()  # a body still arriving will not complete: tell it

    def last_before_shutdown(self, slot: ResponseSlot | None) -> bool:
        """During a graceful shutdown, is `slot` the connection's last response? (None: the
        response of the request running inline, which has no slot yet, comes last.)"""
        return (
            self.shutting_down and not self.queue and (slot is None or self.responses.is_last(slot))
        )

    def _end(self) -> None:
        self.watchdog_scope.cancel()
        self.done = True
        self.gone.set()  # an app waiting for http.disconnect must not outlive the connection
        self.followers.unpark_all()
        self.progress.unpark_all()

    def _retire_helpers(self) -> None:
        """The connection is idle: end the tasks that only wait for work (parked followers,
        an idle watchdog), so it is one waiting task again; they are started anew when a
        handler blocks."""
        if self.followers:
            self.generation += 1  # every follower parked now sees it and ends
            self.followers.unpark_all()
        if self.watchdog is not None and not self.timeouts:
            self.watchdog_scope.cancel()  # it waits for an entry: end it
            self.watchdog = None
            self.watchdog_scope = trio.CancelScope()
            self.timeouts = _NO_TIMEOUTS

    def _hand_over(self) -> None:
        """The leader's handler suspended: the leader role is free for another task.

        Its handler blocked, so the requests queued behind it probably will too: besides the
        one task that is to lead, one more per queued request is woken (or spawned) to help
        (`_assist`), so a batch of blocking requests starts in one pass of the scheduler, not
        one pass per request. The first of them to run takes the role.
        """
        self.leader_vacant = True
        if self.done:
            return
        wanted = 1 + len(self.queue)
        followers = self.followers
        woken = min(wanted, len(followers))
        if woken:
            followers.unpark(count=woken)
        spawn = min(wanted - woken, self.policy.max_in_flight + 1 - self.tasks)
        for _ in range(spawn):
            self.tasks += 1
            self.nursery.start_soon(self.work, False)

    async def _wait_progress(self) -> None:
        """Write what is ready, else sleep until a request completes (then re-check)."""
        responses = self.responses
        if (responses.has_output or responses.closing) and not self.writing:
            await self.flush()  # it may suspend: the caller re-checks before parking
        elif not self.done:
            await self.progress.park()  # a completion or the writer finishing wakes us

    # -- dispatch ------------------------------------------------------------------------

    def _all_sent(self) -> bool:
        responses = self.responses
        return not len(responses) and not responses.has_output and not self.writing

    def _ready(self, request: FramedRequest) -> bool:
        """May `request` start? Its body has all arrived, or it has to stream: it asked for
        100 Continue, or the buffer is too full to receive the rest first."""
        return (
            request.end is not None
            or request.head.expect_continue
            or self.buf.writable() < _MIN_RECV
        )

    async def _next(self) -> FramedRequest | None:
        """The next request to run (the leader's job); None when the connection is done.

        A request whose body is still arriving waits for it (so a framing error in the body
        is answered alone, with its 4xx), unless it has to stream (see `_ready`).
        """
        queue = self.queue
        policy = self.policy
        while not self.done:
            self._release_pending()
            if self.stop_dispatch:
                if self._all_sent():
                    return None
                streaming = self.streaming
                if streaming is not None and streaming.waiting and not self.eof:
                    # The last request (Connection: close) streams its body: keep receiving
                    # it, under the same back-pressure as any other body.
                    await self._receive_more(needs_body=True)
                    continue
                await self._wait_progress()
                continue
            body_pending = False
            if queue:
                request = queue[0]
                if not policy.can_start(request.head.method):
                    await self._wait_progress()
                    continue
                if self._ready(request):
                    queue.popleft()
                    return request
                if self.index.error is not None or self.timeout_error is not None:
                    queue.pop()  # (it is the last) its body broke: its 4xx follows the others
                    continue
                if self.eof:  # its body will never complete: close without an answer
                    queue.clear()
                    self.stop_dispatch = True
                    continue
                body_pending = True  # receive the rest of its body first
            else:
                error = self.index.error or self.timeout_error
                if error is not None:
                    if self.streaming is not None and not self.streaming.abandoned:
                        self.streaming.arrived()  # its handler gets the error and answers it
                        await self._wait_progress()
                        continue
                    self._answer_error(error)
                    continue
                if self.eof:
                    if self._all_sent():
                        return None
                    await self._wait_progress()
                    continue
            needs_body = body_pending or (self.streaming is not None and self.streaming.waiting)
            await self._receive_more(needs_body)
        return None

    async def _receive_more(self, needs_body: bool) -> None:
        """The leader's one gate to the socket (back-pressure): receive once more, or wait
        for progress while `max_in_flight` requests are unanswered (unless a body must come
        in first: `needs_body`) or while the buffer is full (always: the handler of a
        streaming body frees space as it takes the pieces)."""
        framed_unanswered = len(self.responses) + len(self.queue)
        if (
            framed_unanswered >= self.policy.max_in_flight and not needs_body
        ) or self.buf.writable() == 0:
            await self._wait_progress()
            return
        await self.flush()
        await self._receive(idle=framed_unanswered == 0 and self.index.at_boundary)

    async def _receive(self, idle: bool) -> None:
        """One receive into the buffer, then frame what it brought. Reads at once what is
        there; waits (with a timer, `_wait_and_receive`) only when nothing is."""
        buf = self.buf
        index = self.index
        size = self.recv_size
        n = -1
        # A busy pipeline's next batch is usually there already: read it at once, no timer.
        # A client that waits for each batch's answers (wrk) never has it there: after two
        # misses in a row, only every eighth receive tries (a failed read is a system call).
        misses = self.eager_misses
        if self.fd < 0:
            pass  # not a socket: the stream's own receive_some
        elif misses >= 2 and misses & 7:
            self.eager_misses = misses + 1
        else:
            try:
                n = self._read_ready(size)
            except OSError:
                self._client_gone()
                return
            if n < 0:
                self.eager_misses = misses + 1
            else:
                self.eager_misses = 0
                # Every fourth receive that did not wait yields anyway, so a client that
                # never pauses cannot starve the others.
                self.eager_reads += 1
                if self.eager_reads >= 4:
                    self.eager_reads = 0
                    await trio.lowlevel.checkpoint()
        if n < 0:
            self.eager_reads = 0
            n = await self._wait_and_receive(size, idle)
            if n < 0:
                return
        if n == 0:
            self.eof = True
            self.gone.set()  # ASGI's http.disconnect: the client closed its side (as h11's)
            if self.streaming is not None:
                self.streaming.arrived()
            return
        if not self.fixed_recv:  # adaptive receive size
            if n >= size:
                self.recv_size = min(size * 2, self.max_recv)
            elif n < size // 4:
                self.recv_size = max(size // 2, _MIN_RECV)
        framed = index.advance()
        if framed:
            self.queue.extend(framed)
            self.date = _date()  # one clock read per batch, not per response
        if index.upgrade is not None:
            self.eof = True  # what follows is the WebSocket's: answer the rest, then `upgrade`
        now = trio.current_time()
        if index.current is not None:
            self.body_since = now  # body bytes keep coming: the body timer restarts
        elif index.position == buf.tail:
            self.head_since = math.inf
        elif self.head_since == math.inf:
            self.head_since = now  # a new head has begun
        if self.streaming is not None:
            self.streaming.arrived()

    def _timed_out(self) -> None:
        index = self.index
        if index.current is not None:
            error = ProtocolError("request body not received in time", 408)
            if self.queue and self.queue[-1] is index.current:
                self.queue.pop()  # not started: its 408 follows the earlier responses
        elif index.position < self.buf.tail:
            error = ProtocolError("request head not received in time", 408)
        else:  # idle past the keep-alive timeout: close quietly
            self.eof = self.stop_dispatch = True
            return
        self.timeout_error = error
        self.eof = True  # nothing more is read
        if self.streaming is not None:
            self.streaming.arrived()

    def _read_ready(self, size: int) -> int:
        """Read what the socket holds now, straight into the buffer: the bytes read (0 at the
        end of the stream), or -1 when it has nothing yet. trio's own receive would cost a
        trip through the scheduler every time, even when the bytes are there."""
        view = self.buf.write_view(size)
        try:
            n = os.readv(self.fd, [view])
        except BlockingIOError:
            return -1
        finally:
            view.release()
        self.buf.commit(n)
        return n

    async def _wait_and_receive(self, size: int, idle: bool) -> int:
        """Wait for input under the timer that applies, and receive it: the bytes received (0
        at the end of the stream), or -1 when there is nothing to frame (a timeout, a
        shutdown, or the client went away).

        Timers run only while they should: `header_timeout` while part of a head is buffered,
        `body_timeout` between pieces of a body, `keep_alive_timeout` while the connection is
        idle (nothing in flight, nothing partial). A busy connection waits without a timer.
        """
        buf = self.buf
        index = self.index
        deadline = math.inf
        if index.current is not None:
            deadline = self.body_since + self.config.body_timeout
        elif index.position < buf.tail:
            deadline = self.head_since + self.config.header_timeout
        elif idle:
            now = trio.current_time()
            deadline = self.keep_alive_at = now + self.config.keep_alive_timeout
            if buf.block_size:  # a connection still idle a moment from now gives it back
                deadline = min(deadline, now + _TRIM_AFTER)
        try:
            while True:
                n = -1
                try:
                    with trio.move_on_at(deadline) as scope:
                        self.recv_scope = scope
                        if self.fd >= 0:
                            while n < 0:
                                await trio.lowlevel.wait_readable(self.fd)
                                n = self._read_ready(size)
                        else:
                            data = await self.stream.receive_some(min(size, buf.writable()))
                            n = len(data)
                            buf.feed(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    self._client_gone()
                    return -1
                finally:
                    self.recv_scope = None
                if not scope.cancelled_caught:
                    return n
                if self.eof:  # the server is shutting down, not a timeout
                    return -1
                if self.keep_alive_at != math.inf and trio.current_time() < self.keep_alive_at:
                    gave_back(buf.trim())  # idle for a moment: memory given back; wait on
                    self._retire_helpers()
                    deadline = self.keep_alive_at
                    continue
                self._timed_out()
                return -1
        finally:
            self.keep_alive_at = math.inf

    def upgrading(self) -> bool:
        """Every request before an upgrade request is answered, and nothing closed the
        connection (a closing request, an error, a shutdown, the client leaving)."""
        return (
            self.index.upgrade is not None
            and not self.stop_dispatch
            and not self.shutting_down
            and not self.responses.closing
            and self.timeout_error is None
        )

    async def upgrade(self) -> None:
        """Serve the WebSocket the upgrade request asked for (the HTTP part is over)."""
        request = self.index.upgrade
        assert request is not None and self.websocket is not None  # (`upgrading`)
        buf = self.buf
        data = buf.scan_bytes(request.head_end, buf.tail)  # the WebSocket's first bytes
        options = self.config.websocket_options()
        status = await serve_websocket(
            self.stream, self.websocket, request.head, self.client, data, options, _date()
        )
        if self.access_log:
            log_access(self.client, b"GET", request.head.target, status, 0)

    def _client_gone(self) -> None:
        self.eof = True
        self.stop_dispatch = True
        self.gone.set()
        self.nursery.cancel_scope.cancel()

    def _refuse(self, request: FramedRequest) -> None:
        """Over `--limit-concurrency`: answer 503 with Connection: close, start nothing more."""
        head = request.head
        self.stop_dispatch = True
        self.queue.clear()
        body = b"503 Service Unavailable: the server is at its concurrency limit\n"
        sent = self._respond(
            request.seq, head.method, head.http_version == b"1.1", False, None, 503,
            _TEXT_PLAIN, body, False,
        )  # fmt: skip
        if request.end is not None:
            self._release_later(request)
        if self.access_log:
            log_access(self.client, head.method, head.target, 503, sent)

    def _answer_error(self, error: ProtocolError) -> None:
        """Queue the 4xx for a protocol error after every earlier response; then close."""
        body = (error.message + "\n").encode("utf-8", "replace")
        slot = self.responses.reserve(-1)
        sent = self._respond(
            -1, b"GET", True, False, slot, error.status_hint, _TEXT_PLAIN, body, True
        )  # (not keep-alive: the response closes the connection and stops dispatch)
        if self.access_log:
            log_access(self.client, b"-", b"-", error.status_hint, sent)
        log.debug("protocol error from %s: %s", self.client, error)

    # -- running one request -------------------------------------------------------------

    async def _run(self, request: FramedRequest, timer: _TaskTimer, lead: bool) -> bool:
        """Run `request`'s handler inline; True if it suspended (leader role handed over)."""
        if self.admission is not None and not self.admission.admit():
            self._refuse(request)
            return False
        head = request.head
        method = head.method
        self.policy.started(method)
        if not head.keep_alive:
            self.stop_dispatch = True  # RFC 9112 §9.6: nothing after it is processed
            self.queue.clear()
        buf = self.buf
        source: _NoBody | _StreamingBody
        body: bytes | memoryview | None
        if request.end is not None:
            pieces = request.body
            if not pieces:
                body = b""
            elif len(pieces) == 1:
                body = buf.view(*pieces[0])
            else:
                body = b"".join([buf.view(s, e) for s, e in pieces])
            source = self.no_body
            slot = None  # reserved when first needed: the handler may finish without blocking
        else:
            body = None
            slot = self.responses.reserve(request.seq)
            source = self.streaming = _StreamingBody(self, request, slot)
        sink = _Sink(self, slot, request.seq, method, head.http_version == b"1.1", head.keep_alive)
        http_request = HttpRequest(
            method, head.target, head.http_version, head.headers, request.seq, body, source,
            self.client,
        )  # fmt: skip
        try:
            coro = self.handler(http_request, sink)
            try:
                trap = coro.send(None)  # run inline: an instant handler finishes right here
            except StopIteration:
                pass
            else:  # it suspended: hand the leader role over, then let it go on in this task
                sink.blocked = True
                sink.reserved()  # in line before any later request starts
                await self._blocked(coro, trap, timer, lead)
            if not sink.finished:
                if not sink.started:
                    raise RuntimeError("handler returned without a response")
                await sink.send(b"", more=False)
        except Exception as exc:
            self._failed(sink, exc)
        finally:
            if sink.blocked:
                self._disarm(timer)
            self.policy.finished(method)
            if isinstance(source, _StreamingBody):  # (not `self.no_body`)
                source.handler_done()
            elif sink.blocked:
                buf.release(request.start, request.end)  # type: ignore[arg-type]
            else:
                self._release_later(request)
            if self.progress:
                self.progress.unpark_all()
        if self.access_log:
            log_access(self.client, method, head.target, sink.status, sink.sent)
        if (self.flush_each or self.responses.out_size >= _FLUSH_AT) and not timer.fired:
            await self.flush()  # (after a timeout `work` flushes, outside the cancelled scope)
        return sink.blocked

    async def _blocked(
        self, coro: Coroutine[Any, Any, Any], trap: Any, timer: _TaskTimer, lead: bool
    ) -> Any:
        """`coro` (a handler) suspended on `trap`: hand the leader role over (if this task has
        it), then let it go on in this task under the request timeout; its result. The
        caller disarms the timer (`_disarm`) once the request is done."""
        if lead:
            self._hand_over()
        self._arm(timer)
        admission = self.admission
        if admission is not None:
            admission.blocked()  # in flight (an instant handler is over before others start)
        try:
            return await _resume(coro, trap)
        except trio.Cancelled:
            if not timer.fired:
                raise  # not ours: the connection is going away
            raise self._timeout() from None
        finally:
            if admission is not None:
                admission.unblocked()

    def _arm(self, timer: _TaskTimer) -> None:
        """Start the request timeout of the handler `timer`'s task is running."""
        deadline = timer.deadline = trio.current_time() + self.config.request_timeout
        if self.watchdog is None:  # the connection's first blocked handler
            self.timeouts = deque()
            self.watchdog = trio.lowlevel.ParkingLot()
            self.nursery.start_soon(self._watch_timeouts)
        elif self.watchdog:  # it waits for an entry
            self.watchdog.unpark_all()
        self.timeouts.append((deadline, timer))

    def _disarm(self, timer: _TaskTimer) -> None:
        """The handler is done: its timeout is off; drop the stale entries at the front."""
        timer.deadline = math.inf
        timeouts = self.timeouts
        while timeouts and timeouts[0][1].deadline != timeouts[0][0]:
            timeouts.popleft()

    async def _watch_timeouts(self) -> None:
        """The watchdog: sleep until the earliest armed deadline; cancel the task whose
        handler is still blocked then. An entry disarmed in the meantime is skipped (it
        woke the watchdog for nothing: about once per timeout)."""
        timeouts = self.timeouts
        assert self.watchdog is not None
        with self.watchdog_scope:
            while True:
                now = trio.current_time()
                while timeouts:
                    deadline, timer = timeouts[0]
                    if timer.deadline != deadline:
                        timeouts.popleft()  # stale
                    elif deadline <= now:
                        timeouts.popleft()
                        timer.fire()
                    else:
                        break
                if timeouts:
                    await trio.sleep_until(timeouts[0][0])
                else:
                    await self.watchdog.park()

    def _timeout(self) -> _RequestTimeout:
        return _RequestTimeout(f"handler ran over {self.config.request_timeout} s")

    def _start_native(self, request: FramedRequest) -> _Suspended | None:
        """Run a native handler inline, for a request whose body has all arrived (the hot
        path: a plain call, no coroutine of its own). The handler is called directly and its
        `Response` rendered here, with no sink; an instant one's response goes straight to
        the output (`OrderedResponses.emit`). None when the request is done; otherwise the
        handler (or its streamed body) suspended and `_finish_native` must go on with it."""
        if self.admission is not None and not self.admission.admit():
            self._refuse(request)
            return None
        head = request.head
        method = head.method
        if not head.keep_alive:
            self.stop_dispatch = True  # RFC 9112 §9.6: nothing after it is processed
            self.queue.clear()
        pieces = request.body
        body: bytes | memoryview
        if not pieces:
            body = b""
        elif len(pieces) == 1:
            body = self.buf.view(*pieces[0])
        else:
            body = b"".join([self.buf.view(s, e) for s, e in pieces])
        sink: _Sink | None = None
        native = self.native
        assert native is not None  # only native handlers come here
        try:
            coro: Coroutine[Any, Any, Response | None] = native(
                HttpRequest(
                    method, head.target, head.http_version, head.headers, request.seq, body,
                    self.no_body, self.client,
                )
            )  # fmt: skip
            try:
                trap = coro.send(None)
            except StopIteration as stop:
                response = stop.value
            else:
                return _Suspended(coro, trap, None)
            content = response.body
            status = response.status
            if isinstance(content, _BYTES):
                sent = self._respond(
                    request.seq, method, head.http_version == b"1.1", head.keep_alive, None,
                    status, response.headers, content, False,
                )  # fmt: skip
            else:  # streamed: through a sink, like any handler's
                sink = self._sink_for(request, self.responses.reserve(request.seq), False)
                sink.status, sink.headers, sink.started = status, response.headers, True
                coro = send_stream(content, sink)
                try:
                    trap = coro.send(None)
                except StopIteration:
                    pass
                else:
                    return _Suspended(coro, trap, sink)
                sent = sink.sent
        except Exception as exc:
            if sink is None:
                sink = self._sink_for(request, self.responses.reserve(request.seq), False)
            self._failed(sink, exc)
            status, sent = sink.status, sink.sent
        self._release_later(request)
        if self.access_log:
            log_access(self.client, method, head.target, status, sent)
        return None

    async def _finish_native(
        self,
        request: FramedRequest,
        suspended: _Suspended,
        timer: _TaskTimer,
        lead: bool,
    ) -> None:
        """Go on with a native handler (or its streamed body) that suspended: the leader role
        goes to another task, and this one finishes the request."""
        head = request.head
        method = head.method
        sink = suspended.sink
        slot = self.responses.reserve(request.seq) if sink is None else sink.reserved()
        self.policy.started(method)
        try:
            if sink is not None:  # its streamed body suspended
                sink.blocked = True
                await self._blocked(suspended.coro, suspended.trap, timer, lead)
            else:
                response = await self._blocked(suspended.coro, suspended.trap, timer, lead)
                content, status, headers = response.body, response.status, response.headers
                if isinstance(content, _BYTES):
                    sent = self._respond(
                        request.seq, method, head.http_version == b"1.1", head.keep_alive, slot,
                        status, headers, content, True,
                    )  # fmt: skip
                else:
                    sink = self._sink_for(request, slot, True)
                    sink.status, sink.headers, sink.started = status, headers, True
                    try:
                        await send_stream(content, sink)
                    except trio.Cancelled:
                        if not timer.fired:
                            raise  # not ours: the connection is going away
                        raise self._timeout() from None
        except Exception as exc:
            if sink is None:
                sink = self._sink_for(request, slot, True)
            self._failed(sink, exc)
        finally:
            self._disarm(timer)
            self.policy.finished(method)
            self.buf.release(request.start, request.end)  # type: ignore[arg-type]
            if self.progress:
                self.progress.unpark_all()
        if self.access_log:
            if sink is not None:
                status, sent = sink.status, sink.sent
            log_access(self.client, method, head.target, status, sent)
        if (self.flush_each or self.responses.out_size >= _FLUSH_AT) and not timer.fired:
            await self.flush()  # (after a timeout `work` flushes, outside the cancelled scope)

    def _sink_for(self, request: FramedRequest, slot: ResponseSlot, blocked: bool) -> _Sink:
        head = request.head
        sink = _Sink(
            self, slot, request.seq, head.method, head.http_version == b"1.1", head.keep_alive
        )
        sink.blocked = blocked
        return sink

    def _release_later(self, request: FramedRequest) -> None:
        """Release a finished request's bytes, batched: consecutive requests' ranges are
        joined and released at once by `_release_pending` (before anything reads space)."""
        if request.start == self.release_to:
            self.release_to = request.end  # type: ignore[assignment]
        else:
            self._release_pending()
            self.release_from = request.start
            self.release_to = request.end  # type: ignore[assignment]

    def _release_pending(self) -> None:
        if self.release_to > self.release_from:
            self.buf.release(self.release_from, self.release_to)
        self.release_from = self.release_to = -1

    def _respond(
        self,
        seq: int,
        method: bytes,
        http11: bool,
        keep_alive: bool,
        slot: ResponseSlot | None,
        status: int,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes | memoryview | bytearray,
        blocked: bool,
    ) -> int:
        """Render a whole response (its body known at once) into the output, or `slot`; the
        body bytes sent. Native responses, a sink's single `send` and the 4xx of a protocol
        error all come here."""
        responses = self.responses
        length = len(body)
        data, framing = render_head(
            status,
            headers,
            method=method,
            http11=http11,
            keep_alive=keep_alive and not (self.shutting_down and self.last_before_shutdown(slot)),
            body_length=length,
            date=_date() if blocked else self.date,
            server=self.config.server_name,
        )
        sent = 0
        tail = None
        close = framing.close
        if framing.send_body:
            if framing.content_length is not None and length != framing.content_length:
                raise RuntimeError(
                    f"response body of {length} bytes, Content-Length {framing.content_length}"
                )
            sent = length
            if length <= 4096:
                data += body  # head and body in one piece
            else:
                tail = body  # not copied
        if slot is None:
            responses.emit(seq, data, close, tail)
        else:
            responses.write(slot, data)
            if tail is not None:
                responses.write(slot, tail)
            responses.finish(slot, close=close)
        if close:
            self.stop_dispatch = True
        return sent

    def _failed(self, sink: _Sink, exc: Exception) -> None:
        if sink.finished:
            log.exception("handler failed after its response", exc_info=exc)
            return
        if isinstance(exc, _ClosedMidBody) or sink.framing is not None:
            # Nobody to answer, or part of the response is out: only closing can tell.
            if isinstance(exc, _RequestTimeout):
                log.warning("%s", exc)
            elif not isinstance(exc, _ClosedMidBody):
                log.exception("handler failed after starting its response", exc_info=exc)
            sink.finished = True
            self.responses.finish(sink.reserved(), close=True)
            self.stop_dispatch = True
            return
        if isinstance(exc, ProtocolError):
            status = exc.status_hint
        elif isinstance(exc, _RequestTimeout):
            status = 503
            log.warning("%s", exc)
        else:
            status = 500
            log.exception("handler failed", exc_info=exc)
        body = b"%d %s\n" % (status, HTTPStatus(status).phrase.encode())
        close = isinstance(exc, ProtocolError)
        head, _ = render_head(
            status,
            _TEXT_PLAIN,
            method=sink.method,
            http11=sink.http11,
            keep_alive=sink.keep_alive and not close,
            body_length=len(body),
            date=_date(),
            server=self.config.server_name,
        )
        sink.status = status
        sink.sent = len(body) if sink.method != b"HEAD" else 0
        slot = sink.reserved()
        self.responses.write(slot, head + body if sink.method != b"HEAD" else head)
        sink.finished = True
        self.responses.finish(slot, close=close or not sink.keep_alive)
        if close:
            self.stop_dispatch = True

    # -- writing -------------------------------------------------------------------------

    async def flush(self) -> None:
        """Send everything that may leave now (one writer at a time; others just return)."""
        if self.writing:
            return
        responses = self.responses
        if not responses.has_output:
            if responses.closing:
                self._close()
            return
        self.writing = True
        try:
            while responses.has_output:
                parts = responses.take()
                if len(parts) == 1:
                    await self._send_one(parts[0])
                    continue
                buffers = gather(parts)  # small ones joined, large bodies as they are
                if len(buffers) == 1:
                    await self._send_one(buffers[0])
                else:
                    await self._send_gathered(buffers)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self._client_gone()
            return
        except trio.Cancelled:
            # Part of a response may be out and the rest is lost: only closing is honest.
            self._client_gone()
            raise
        finally:
            self.writing = False
        self.progress.unpark_all()
        scope = self.recv_scope
        if scope is not None and not len(responses) and not self.queue and self.index.at_boundary:
            # The last answer is out while the leader waits: the keep-alive timer starts now,
            # and a moment later the idle connection gives its receive memory back.
            now = trio.current_time()
            self.keep_alive_at = min(self.keep_alive_at, now + self.config.keep_alive_timeout)
            trim_at = now + _TRIM_AFTER if self.buf.block_size else math.inf
            scope.deadline = min(scope.deadline, self.keep_alive_at, trim_at)
            self._release_pending()
        if responses.closing:
            self._close()

    def _close(self) -> None:
        """The last response is out: stop every task; `serve_connection` then lingers."""
        if self.done:
            return
        self._end()
        self.linger = True
        self.gone.set()
        self.nursery.cancel_scope.cancel()

    async def linger_close(self) -> None:
        """Close in stages (RFC 9112 §9.6): shut the write side, drain a little; the caller
        closes. Without this, bytes the client had still in flight would make the kernel
        answer with a reset, which can destroy responses the client has not read yet."""
        with trio.CancelScope(shield=True):
            await closing.linger(self.stream)


class _Suspended(NamedTuple):
    """A native handler, or the sender of its streamed body (`sink` then), that suspended."""

    coro: Coroutine[Any, Any, Any]
    trap: Any
    sink: _Sink | None


class _ClosedMidBody(ProtocolError):
    """The client closed its side before a request's body was complete."""


class _TaskTimer:
    """A worker task's request timeout: its cancel scope, and the deadline of the handler it
    runs while that handler is blocked (infinity otherwise). `fired`: the watchdog cancelled
    the scope (only a timeout cancels it; any other cancellation comes from outside)."""

    __slots__ = ("deadline", "fired", "scope")

    def __init__(self, scope: trio.CancelScope) -> None:
        self.scope = scope
        self.deadline = math.inf
        self.fired = False

    def fire(self) -> None:
        self.deadline = math.inf
        self.fired = True
        self.scope.cancel()


class _RequestTimeout(Exception):
    """A handler ran over `request_timeout`: its request gets a 503."""


class _Sink:
    """One request's `ResponseSink`: renders into its slot of the ordered responses.

    A handler running inline gets its slot only when it needs one (`reserved`): a whole
    response written at once by a handler that never blocked goes out with `emit`, no slot.
    """

    __slots__ = (
        "blocked",
        "conn",
        "finished",
        "framing",
        "headers",
        "http11",
        "keep_alive",
        "method",
        "sent",
        "seq",
        "slot",
        "started",
        "status",
    )

    def __init__(
        self,
        conn: _Connection,
        slot: ResponseSlot | None,
        seq: int,
        method: bytes,
        http11: bool,
        keep_alive: bool,
    ) -> None:
        self.conn = conn
        self.slot = slot
        self.seq = seq
        self.method = method
        self.http11 = http11
        self.keep_alive = keep_alive
        self.started = False
        self.finished = False
        self.blocked = False
        self.status = 0
        self.headers: Sequence[tuple[bytes, bytes]] = ()
        self.framing: ResponseFraming | None = None
        self.sent = 0

    def reserved(self) -> ResponseSlot:
        """Its slot, reserved now if it has none yet: still in order, since no later request
        starts before its handler finishes or blocks (and blocking reserves it first)."""
        slot = self.slot
        if slot is None:
            slot = self.slot = self.conn.responses.reserve(self.seq)
        return slot

    async def start(self, status: int, headers: Sequence[tuple[bytes, bytes]]) -> None:
        if self.started:
            raise RuntimeError("response already started")
        self.started = True
        self.status = status
        self.headers = headers

    async def send(self, data: bytes | bytearray | memoryview, more: bool = False) -> None:
        if not self.started:
            raise RuntimeError("send() before start()")
        if self.finished:
            raise RuntimeError("response already complete")
        conn = self.conn
        responses = conn.responses
        framing = self.framing
        if framing is None:
            if not more:  # the whole response at once (the usual case): as a native one
                self.sent = conn._respond(
                    self.seq, self.method, self.http11, self.keep_alive, self.slot,
                    self.status, self.headers, data, self.blocked,
                )  # fmt: skip
                self.finished = True
                return
            head, framing = render_head(
                self.status,
                self.headers,
                method=self.method,
                http11=self.http11,
                keep_alive=self.keep_alive and not conn.last_before_shutdown(self.slot),
                body_length=None,
                date=_date() if self.blocked else conn.date,
                server=conn.config.server_name,
            )
            self.framing = framing
            if framing.close:
                conn.stop_dispatch = True  # known now: nothing after this request may start
            responses.write(self.reserved(), head)
        slot = self.reserved()
        if data and framing.send_body:
            self.sent += len(data)
            if framing.content_length is not None and self.sent > framing.content_length:
                raise RuntimeError(
                    f"response body longer than its Content-Length {framing.content_length}"
                )
            if framing.chunked:
                responses.write_many(slot, chunk(data))
            else:
                responses.write(slot, data)
        if more:
            if responses.is_head(slot):
                await conn.flush()  # a streamed response goes out as it is produced
                while conn.writing and responses.out_size > _FLUSH_AT and not conn.done:
                    await conn.progress.park()  # another task is writing: wait for it
            elif slot.size > _SLOT_BUFFER:
                while not responses.is_head(slot) and not conn.done:
                    await conn.progress.park()
            return
        close = framing.close
        if framing.chunked:
            responses.write(slot, LAST_CHUNK)
        elif (
            framing.send_body
            and framing.content_length is not None
            and self.sent != framing.content_length
        ):
            close = True  # shorter than promised: only closing can end it
        self.finished = True
        responses.finish(slot, close=close)
        if close:
            conn.stop_dispatch = True


class _NoBody:
    """The body source of a request whose body had all arrived (shared per connection)."""

    __slots__ = ("conn",)

    def __init__(self, conn: _Connection) -> None:
        self.conn = conn

    async def next_chunk(self) -> bytes | memoryview | None:
        return None

    async def wait_disconnect(self) -> None:
        await self.conn.gone.wait()


class _StreamingBody:
    """The body of a request dispatched before all of it arrived: pieces as they are framed."""

    __slots__ = (
        "abandoned",
        "conn",
        "continued",
        "event",
        "next_piece",
        "released_to",
        "request",
        "slot",
        "waiting",
    )

    def __init__(self, conn: _Connection, request: FramedRequest, slot: ResponseSlot) -> None:
        self.conn = conn
        self.request = request
        self.slot = slot
        self.next_piece = 0
        self.released_to = request.head_end  # its bytes before this are released or pieces
        self.event = trio.Event()
        self.waiting = False  # the handler waits for body bytes: the leader must receive
        self.abandoned = False  # the handler finished without reading it all
        self.continued = not request.head.expect_continue  # 100 Continue sent or not needed

    async def next_chunk(self) -> bytes | memoryview | None:
        request = self.request
        conn = self.conn
        if not self.continued:  # the client waits for this before it sends the body
            self.continued = True
            if not request.body:
                conn.responses.write(self.slot, CONTINUE_100)
                await conn.flush()
        while True:
            if self.next_piece < len(request.body):
                conn.progress.unpark_all()  # space freed: a leader may wait for it
                return self._next_piece(take=True)
            if request.end is not None:
                return None
            error = conn.index.error or conn.timeout_error
            if error is not None:
                raise error
            if conn.eof:
                raise _ClosedMidBody("client closed the connection mid-body", 400)
            self.waiting = True
            self.event = trio.Event()
            conn.progress.unpark_all()  # the leader may be waiting only because of the limit
            await self.event.wait()
            self.waiting = False

    async def wait_disconnect(self) -> None:
        await self.conn.gone.wait()

    def arrived(self) -> None:
        """The leader framed more of the body (or hit the end of the stream)."""
        self.event.set()
        if self.abandoned:
            self._discard_arrived()

    def handler_done(self) -> None:
        self.abandoned = True
        self._discard_arrived()

    def _next_piece(self, take: bool) -> memoryview | None:
        """Take (or just release) the next body piece, and the chunk framing before it, so
        a body of many small chunks never fills the buffer with chunk-size lines."""
        s, e = self.request.body[self.next_piece]
        self.next_piece += 1
        buf = self.conn.buf
        if self.released_to < s:
            buf.release(self.released_to, s)
        self.released_to = e
        if take:
            return buf.take(s, e)
        buf.release(s, e)
        return None

    def _discard_arrived(self) -> None:
        request = self.request
        while self.next_piece < len(request.body):
            self._next_piece(take=False)
        if request.end is not None:
            buf = self.conn.buf
            if self.released_to < request.end:
                buf.release(self.released_to, request.end)
            self.released_to = request.end
            buf.release(request.start, request.head_end)
            if self.conn.streaming is self:
                self.conn.streaming = None


if os.environ.get("PIPEPARSE_TRIO_DRIVER"):  # (temporary, while the driver is compared)
    from .trio_driver import serve_connection
