"""ServerConnection: the server side of one pipelined HTTP/1.1 connection, sans-I/O.

Strategy
--------
Events go in as method calls (bytes, EOF, a handler's response or failure, a handler that
suspended, a timer's expiry, shutdown); they only change state. `actions()` then works out
everything that follows and returns it as a list of `pipeparse.actions` records, in the
order the driver must perform them: `Start` the requests `DispatchPolicy` lets start, `Write`
every response byte that may leave (one record: `OrderedResponses` orders and coalesces),
`ShutWrite` / `Close`, `PauseReading` / `ResumeReading`, and `Timer`s as deadlines on the
clock the connection was given. A driver loops: perform the actions (running instant handlers
inline, whose responses are reported back at once), then call `actions()` again until it
returns nothing. So all the responses of one receive's batch leave in one `Write`.

What it decides, in one place: the receive buffer (a growing `SeekableBuffer`; bytes that do
not fit wait here and reading pauses), framing (`RequestIndex`), the dispatch policy, slots in
request order, keep-alive, ``Connection: close`` and HTTP/1.0 (nothing after such a request is
dispatched), 100-continue (sent in order, when the handler first asks for the body), the rule
that nothing after a protocol error is processed (its 4xx follows every earlier response, then
the staged close), and the timers: keep-alive, header and body timeouts ("read"), the request
timeout of a handler that suspended (503, or a close once its response has begun), the linger
after the write side is shut. Its states are `pipeparse._state`'s; when to read and how to
close is `_reading.ReadAndClose`, how a response is rendered and put in line
`_answering.Answers` (its base classes), one request's state `_exchange.Exchange`.

The hot path: a request started with its whole body stays a `FramedRequest` in line
(`_instant`) until something other than a whole response happens to it (its handler suspends,
streams, fails, reads; a slot is reserved after it): an instant handler's `respond` then goes
straight to the output, with no `Exchange` and no slot (`_respond_at_once`). Every request still
counts in the `DispatchPolicy`, which is the count of requests in flight.

A request whose body has all arrived starts with the body (a view into the buffer). One whose
body is still arriving waits for it, unless it asked for 100-continue or the buffer is too full
to take the rest: then it starts with a streamed body, read piece by piece (`read_body`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import ClassVar

from mypy_extensions import mypyc_attr

from ._answering import Answers, Headers
from ._buffer import MIN_BLOCK, SeekableBuffer
from ._errors import ProtocolError
from ._exchange import Exchange
from ._index import FramedRequest, RequestIndex
from ._limits import KiB, Limits, MiB
from ._ordered import DispatchPolicy, OrderedResponses
from ._serialize import (
    CONTINUE_100,
    LAST_CHUNK,
    HttpDate,
    chunk,
)
from ._state import ConnState, ExchangeState, ReadState
from .actions import (
    Action,
    BodyEnd,
    Cancel,
    Chunk,
    Start,
    Timer,
    TimerKey,
    Upgrade,
    Write,
)

__all__ = ["ConnectionTimeouts", "ServerConnection"]

_MIN_ROOM = 4 * KiB  # a request whose body cannot get this much room streams it instead
_LINGER_BYTES = 1 * MiB  # after the write side is shut, drain at most this many bytes


class ConnectionTimeouts:
    """Seconds: `header` for a head to complete, `body` between body pieces, `keep_alive`
    idle, `request` for a handler that suspended (then 503), `linger` after the shut."""

    __slots__ = ("body", "header", "keep_alive", "linger", "request")

    def __init__(
        self,
        header: float = 10.0,
        body: float = 30.0,
        keep_alive: float = 5.0,
        request: float = 60.0,
        linger: float = 2.0,
    ) -> None:
        self.header = header
        self.body = body
        self.keep_alive = keep_alive
        self.request = request
        self.linger = linger


@mypyc_attr(allow_interpreted_subclasses=True)  # (compiled build: users may subclass it)
class ServerConnection(Answers):
    """The sans-I/O server side of one connection; see the module comment.

    Args:
        limits: framing limits (`Limits`).
        policy, max_in_flight: the `DispatchPolicy`.
        buffer_size: the receive buffer's capacity; `fixed_buffer` allocates it up front.
        buffer_type: the receive buffer's class (a subclass may instrument it).
        timeouts: `ConnectionTimeouts`.
        server_name: the Server field's value.
        clock: seconds, monotonic (the driver's loop time); timers are on this clock.
        date: the Date field's value (a formatted `HttpDate` by default).
        upgrades: a WebSocket upgrade request ends the HTTP stream: once every earlier
            response is out, an `Upgrade` action hands the connection over. Without it, such
            a request is an ordinary one.
    """

    __slots__ = (
        "_batch_date",
        "_lingered",
        "_shutdown",
        "clock",
        "date",
        "error",
        "server_name",
        "timeouts",
    )
    # Instant requests answered without an `Exchange` (see `_instant`); a subclass that
    # hooks `_render` or `_finish` turns it off, so every response goes through them.
    instant_path: ClassVar[bool] = True

    def __init__(
        self,
        *,
        limits: Limits | None = None,
        policy: str = "safe",
        max_in_flight: int = 16,
        buffer_size: int = 256 * KiB,
        fixed_buffer: bool = False,
        buffer_type: type[SeekableBuffer] = SeekableBuffer,
        timeouts: ConnectionTimeouts | None = None,
        server_name: bytes = b"pipeparse",
        clock: Callable[[], float] = time.monotonic,
        date: Callable[[], bytes] | None = None,
        upgrades: bool = False,
    ) -> None:
        self.buffer = buffer_type(
            buffer_size, min_block=buffer_size if fixed_buffer else MIN_BLOCK
        )
        self.index = RequestIndex(self.buffer, limits, upgrades=upgrades)
        self.policy = DispatchPolicy(policy, max_in_flight)
        self.responses = OrderedResponses()
        self.timeouts = timeouts = timeouts or ConnectionTimeouts()
        self._header_timeout = timeouts.header
        self._body_timeout = timeouts.body
        self._keep_alive_timeout = timeouts.keep_alive
        self._linger_timeout = timeouts.linger
        self.server_name = server_name
        self.clock = clock
        self.date = date or HttpDate()
        self.state = ConnState.OPEN
        self.read_state = ReadState.READING
        self.error: ProtocolError | None = None  # framing or timeout: answered, then close
        self._error_answered = False
        # Framed, not yet started. A list (an empty deque costs an idle connection 600 bytes
        # more): `_start_ready` drops the started ones in one step.
        self._queue: list[FramedRequest] = []
        self._exchanges: dict[int, Exchange] = {}
        # Started with their whole body and not yet answered, in order, with no `Exchange`
        # yet: an instant handler's response then needs none (`_respond_at_once`). Each gets
        # one, in order, as soon as anything else happens to it or a slot is reserved after it.
        self._instant: list[FramedRequest] = []  # (a list: an empty deque costs 600 bytes)
        self._streaming: Exchange | None = None  # the request whose body is still arriving
        self._overflow: list[bytes] = []  # received bytes that did not fit in the buffer yet
        self._peer_eof = False
        self._shutdown = False
        self._actions: list[Action] = []
        self._changed = True  # an event came since `actions()` last ran
        self._read_deadline: float | None = None
        self._head_since = math.inf
        self._body_since = 0.0
        self._idle_since = clock()
        self._lingered = 0
        self._batch_date = b""  # the Date of the requests framed by the last receive
        self._closed_at: float = math.inf  # the first request whose response closes

    # -- events in -----------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes from the client (b"" is EOF)."""
        self._changed = True
        if not data:
            self.receive_eof()
            return
        if self.state is ConnState.LINGERING:
            self._lingered += len(data)  # drained and dropped
            if self._lingered >= _LINGER_BYTES:
                self._close()
            return
        if self.read_state is ReadState.DONE or self.state is ConnState.CLOSED:
            return
        if self._overflow:
            self._overflow.append(bytes(data))
        else:
            room = self.buffer.writable()
            if len(data) > room:
                self._overflow.append(bytes(data[room:]))
                data = data[:room]
            if data:
                self.buffer.write_unchecked(data)
        self._framed_more()

    def may_start(self, seq: int) -> bool:
        """Should the driver still run the handler of a `Start` it has not performed yet?
        False once a response before it closed the connection: nothing after that is
        processed (its exchange is then cancelled)."""
        return seq < self._closed_at

    def receive_eof(self) -> None:
        """The client closed its side (or is gone)."""
        self._changed = True
        if self.state is ConnState.LINGERING:
            self._close()
            return
        self._peer_eof = True
        self.read_state = ReadState.DONE
        if self._streaming is not None:
            self._streaming_arrived()

    def respond(self, seq: int, status: int, headers: Headers, body: Chunk) -> None:
        """Request `seq`'s whole response (its body known at once)."""
        self._changed = True
        instant = self._instant
        if instant and instant[0].seq == seq:
            self._respond_at_once(status, headers, body)
            return
        ex = self._exchange(seq)
        if ex is None or ex.state is not ExchangeState.RUNNING:
            if ex is None:
                return  # answered already (timed out): ignored
            raise RuntimeError(f"response {seq} already started")
        length = len(body)
        data, framing = self._render(ex, status, headers, length)
        if framing.send_body:
            if framing.content_length is not None and length != framing.content_length:
                raise RuntimeError(
                    f"response body of {length} bytes, Content-Length {framing.content_length}"
                )
            ex.sent = length
            self.responses.write(ex, data + body if length <= 4096 else data)
            if length > 4096:
                self.responses.write(ex, body)  # not copied
        else:
            self.responses.write(ex, data)
        self._finish(ex, framing.close)

    def start_response(self, seq: int, status: int, headers: Headers) -> None:
        """Request `seq`'s response head; its body follows with `send_body`."""
        self._changed = True
        ex = self._exchange(seq)
        if ex is None:
            return
        if ex.state is not ExchangeState.RUNNING:
            raise RuntimeError(f"response {seq} already started")
        head, framing = self._render(ex, status, headers, None)
        ex.framing = framing
        ex.state = ExchangeState.STREAMING
        if framing.close:
            self._stop_dispatch()
        self.responses.write(ex, head)

    def send_body(self, seq: int, data: Chunk, more: bool = True) -> None:
        """A piece of request `seq`'s response body; ``more=False`` ends the response."""
        self._changed = True
        ex = self._exchanges.get(seq)
        if ex is None:
            return
        framing = ex.framing
        if ex.state is not ExchangeState.STREAMING or framing is None:
            raise RuntimeError(f"send_body({seq}) without a started response")
        if data and framing.send_body:
            ex.sent += len(data)
            if framing.content_length is not None and ex.sent > framing.content_length:
                raise RuntimeError(
                    f"response body longer than its Content-Length {framing.content_length}"
                )
            if framing.chunked:
                self.responses.write_many(ex, chunk(data))
            else:
                self.responses.write(ex, data)
        if more:
            return
        close = framing.close
        if framing.chunked:
            self.responses.write(ex, LAST_CHUNK)
        elif framing.send_body and framing.content_length not in (None, ex.sent):
            close = True  # shorter than promised: only closing can end it
        self._finish(ex, close)

    def handler_failed(self, seq: int, error: BaseException | None = None) -> None:
        """Request `seq`'s handler raised: a 500 (a `ProtocolError`'s status hint, then a
        close) if none of its response is out, else the connection closes after it."""
        self._changed = True
        ex = self._exchange(seq)
        if ex is None:
            return
        status = error.status_hint if isinstance(error, ProtocolError) else 500
        self._fail(ex, status, close=isinstance(error, ProtocolError))

    def handler_suspended(self, seq: int) -> None:
        """Request `seq`'s handler did not finish inline: its request timeout starts now."""
        self._changed = True
        ex = self._exchange(seq)
        if ex is not None and not ex.timer:
            ex.timer = True
            self._actions.append(Timer(seq, self.clock() + self.timeouts.request))

    def read_body(self, seq: int) -> None:
        """Request `seq`'s handler wants the next piece of its streamed body: a `BodyData`,
        `BodyEnd` or `BodyError` action follows (now, or once it has arrived)."""
        self._changed = True
        ex = self._exchange(seq)
        if ex is None:
            return
        if not ex.streams_body:
            self._actions.append(BodyEnd(seq))
            return
        if not ex.continued:  # the client waits for this before it sends the body
            ex.continued = True
            if not ex.request.body:
                self.responses.write(ex, CONTINUE_100)
        ex.wants_body = True
        self._deliver_body(ex)

    def timer_expired(self, key: TimerKey) -> None:
        """Timer `key` fired (perhaps early: then it is re-armed)."""
        self._changed = True
        now = self.clock()
        if isinstance(key, int):
            ex = self._exchanges.get(key)
            if ex is not None and ex.timer:
                self._fail(ex, 503, close=False)  # (with a fresh Date: its timer is on)
                self._actions.append(Cancel(key))
            return
        if key == "linger":
            if self.state is ConnState.LINGERING:
                self._close()
            return
        if key != "read" or self._read_deadline is None:
            return  # (not armed: a stale expiry)
        self._read_deadline = None  # the driver's timer is spent
        if self.read_state is not ReadState.READING:
            return
        deadline = self._read_timeout()
        if deadline is None:
            return  # none applies now (requests in flight): armed again when one does
        if now < deadline:
            self._read_deadline = deadline  # it fired early (the deadline moved): wait on
            self._actions.append(Timer("read", deadline))
            return
        index = self.index
        if (
            self.buffer.block_size
            and not self.policy.in_flight
            and not self._queue
            and index.at_boundary
            and now < self._idle_since + self._keep_alive_timeout
        ):
            self.buffer.trim()  # idle for a moment: its receive memory goes back; wait on
            return
        if index.current is not None:
            self._set_error(ProtocolError("request body not received in time", 408))
        elif index.position < self.buffer.tail:
            self._set_error(ProtocolError("request head not received in time", 408))
        else:  # idle past the keep-alive timeout: close quietly
            self.read_state = ReadState.DONE
            self._stop_dispatch()

    def shutdown(self) -> None:
        """Graceful shutdown: read nothing new, answer what was framed, close when done."""
        self._changed = True
        if self._shutdown or self.state is not ConnState.OPEN:
            self._shutdown = True
            return
        self._shutdown = True
        self.read_state = ReadState.DONE
        if self._streaming is not None:
            self._streaming_arrived()

    # -- actions out ---------------------------------------------------------------------

    def actions(self) -> list[Action]:
        """Everything the driver must do now, in order (see the module comment)."""
        if not self._changed:  # (a driver's last call of a round: nothing came since)
            return []
        self._changed = False
        state = self.state
        if state is ConnState.OPEN:
            if self._queue or self.error is not None or self._peer_eof or self._shutdown:
                self._dispatch()
                state = self.state
        elif state is ConnState.CLOSED or state is ConnState.UPGRADED:
            out, self._actions = self._actions, []
            return out
        responses = self.responses
        if responses.has_output:
            self._actions.append(Write(responses.take()))
        if self.index.upgrade is not None and self._may_upgrade():
            self._upgrade()
            out, self._actions = self._actions, []
            return out
        if (state is ConnState.CLOSING or responses.closing) and state is not ConnState.LINGERING:
            self._maybe_close()  # (it has nothing to do while open, unless a response closes)
            state = self.state
        if state is ConnState.OPEN or state is ConnState.CLOSING:
            self._update_reading()
        out, self._actions = self._actions, []
        return out

    @property
    def in_flight(self) -> int:
        """Requests started and not yet answered."""
        return self.policy.in_flight

    # -- framing and dispatch ------------------------------------------------------------

    def _framed_more(self) -> None:
        framed = self.index.advance()
        if framed:
            self._queue.extend(framed)
            self._batch_date = self.date()
        index = self.index
        if index.current is not None:
            self._body_since = self.clock()  # body bytes keep coming: the body timer restarts
        elif index.position == self.buffer.tail:
            self._head_since = math.inf
        elif self._head_since == math.inf:
            self._head_since = self.clock()  # a new head has begun
        if index.error is not None and self.error is None:
            self._set_error(index.error)
        if self._streaming is not None:
            self._streaming_arrived()

    def _set_error(self, error: ProtocolError) -> None:
        self.error = error
        self.read_state = ReadState.DONE  # nothing after it is read (or trusted)
        queue = self._queue
        if queue and queue[-1] is self.index.current and queue[-1].end is None:
            queue.pop()  # its body broke before it started: its 4xx follows the others
        if self._streaming is not None:
            self._streaming_arrived()

    def _dispatch(self) -> None:
        queue = self._queue
        if queue and not self._start_ready(queue):
            return
        if not queue and self.error is not None and not self._error_answered:
            if self._streaming is None:
                self._answer_error(self.error)
        elif not queue and (self._peer_eof or self._shutdown):
            self._stop_dispatch()  # nothing more will come: close once all is answered

    def _start_ready(self, queue: list[FramedRequest]) -> bool:
        """Start the requests at the head of `queue` that may start now; False if one must
        wait. Started ones leave the queue in one step at the end (it may be long)."""
        policy = self.policy
        started = 0
        try:
            while started < len(queue) and self.state is ConnState.OPEN:
                request = queue[started]
                if not policy.can_start(request.head.method):
                    return False
                streams = request.end is None
                if streams and not (
                    request.head.expect_continue or self.buffer.writable() < _MIN_ROOM
                ):
                    if self._peer_eof or self.read_state is ReadState.DONE:
                        queue.clear()  # its body will never complete: close without an answer
                        self._stop_dispatch()
                    return False  # its body first
                started += 1
                self._start(request, streams)  # (a closing one clears the queue)
        finally:
            del queue[:started]
        return True

    def _start(self, request: FramedRequest, streams: bool) -> None:
        head = request.head
        self.policy.started(head.method)
        if not head.keep_alive:
            self._queue.clear()  # RFC 9112 §9.6: nothing after it is processed
            self._stop_dispatch()
        body: bytes | memoryview | None
        if streams or not self.instant_path:
            self._materialize(None)
            ex = Exchange(request, streams)
            self.responses.add(ex)
            self._exchanges[request.seq] = ex
            if streams:
                self._streaming = ex
        else:
            self._instant.append(request)
        if streams:
            body = None
        else:
            pieces = request.body
            if not pieces:
                body = b""
            elif len(pieces) == 1:
                body = self.buffer.view(*pieces[0])
            else:
                body = b"".join([self.buffer.view(s, e) for s, e in pieces])
        self._actions.append(Start(request.seq, head, body))

    def _may_upgrade(self) -> bool:
        """Every request before the upgrade request is answered and written, and nothing
        closes the connection (an error, a closing response, EOF, a shutdown)."""
        return (
            self.state is ConnState.OPEN
            and not self._queue
            and not self.policy.in_flight
            and not len(self.responses)
            and self.error is None
        )

    def _upgrade(self) -> None:
        request = self.index.upgrade
        assert request is not None and request.end is not None  # (an upgrade has no body)
        buffer = self.buffer
        data = buffer.scan_bytes(request.end, buffer.tail) + b"".join(self._overflow)
        self._overflow = []
        self._disarm_read()
        self.state = self.state.to(ConnState.UPGRADED)
        self.read_state = ReadState.DONE
        self._actions.append(Upgrade(request.seq, request.head, data))

    def _stop_dispatch(self) -> None:
        if self.state is ConnState.OPEN:
            self.state = self.state.to(ConnState.CLOSING)

    def _clock(self) -> float:
        return self.clock()
