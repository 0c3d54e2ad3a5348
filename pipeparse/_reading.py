"""Reading, the read timer and closing: the part of `ServerConnection` that decides when to
pause or resume reading, which read timeout applies (keep-alive, header, body), and how the
connection ends (at once, or in stages after a response that closes it). A base class, so
`ServerConnection` stays one class per concern; the state it reads is `ServerConnection`'s.
"""

from __future__ import annotations

from mypy_extensions import mypyc_attr

from ._buffer import SeekableBuffer
from ._exchange import Exchange
from ._index import FramedRequest, RequestIndex
from ._ordered import DispatchPolicy, OrderedResponses
from ._state import ConnState, ReadState
from .actions import (
    Action,
    Cancel,
    Close,
    PauseReading,
    ResumeReading,
    ShutWrite,
    Timer,
)

__all__ = ["TRIM_AFTER", "ReadAndClose"]

TRIM_AFTER = 0.05  # seconds idle before a connection's receive block is given back


@mypyc_attr(allow_interpreted_subclasses=True)  # (`ServerConnection` allows them)
class ReadAndClose:
    """See the module comment; every attribute is set by `ServerConnection.__init__`."""

    __slots__ = (
        "_actions",
        "_body_since",
        "_body_timeout",
        "_changed",
        "_exchanges",
        "_head_since",
        "_header_timeout",
        "_idle_since",
        "_instant",
        "_keep_alive_timeout",
        "_linger_timeout",
        "_overflow",
        "_peer_eof",
        "_queue",
        "_read_deadline",
        "_streaming",
        "buffer",
        "index",
        "policy",
        "read_state",
        "responses",
        "state",
    )

    buffer: SeekableBuffer
    index: RequestIndex
    policy: DispatchPolicy
    responses: OrderedResponses
    state: ConnState
    read_state: ReadState
    _queue: list[FramedRequest]
    _exchanges: dict[int, Exchange]
    _instant: list[FramedRequest]
    _changed: bool
    _streaming: Exchange | None
    _overflow: list[bytes]
    _peer_eof: bool
    _actions: list[Action]
    _read_deadline: float | None
    _head_since: float
    _body_since: float
    _idle_since: float
    _header_timeout: float
    _body_timeout: float
    _keep_alive_timeout: float
    _linger_timeout: float

    def _clock(self) -> float:
        raise NotImplementedError

    def _framed_more(self) -> None:
        raise NotImplementedError

    def receive_eof(self) -> None:
        raise NotImplementedError

    # -- reading straight into the buffer ------------------------------------------------

    def receive_view(self, nbytes: int) -> memoryview | None:
        """For a driver that reads straight into the receive buffer (no copy): a writable
        view of at most `nbytes` bytes, or None when it must read into bytes of its own and
        `receive_data` them (bytes wait for room, or nothing is read any more). Fill it,
        release it, then report the count with `received`."""
        state = self.state
        if (
            self.read_state is ReadState.DONE
            or self._overflow
            or not self.buffer.writable()
            or (state is not ConnState.OPEN and state is not ConnState.CLOSING)
        ):
            return None
        return self.buffer.write_view(nbytes)

    def received(self, n: int) -> None:
        """`n` bytes were read into the view `receive_view` gave (0: EOF)."""
        if not n:
            self.receive_eof()
            return
        self._changed = True
        self.buffer.commit(n)
        self._framed_more()

    @property
    def reading(self) -> bool:
        """Should the driver read now? (False while paused, and once nothing more is read.)"""
        return self.read_state is ReadState.READING

    # -- reading, timers, closing --------------------------------------------------------

    def _update_reading(self) -> None:
        read = self.read_state
        if read is ReadState.DONE:
            return  # (a read timer still armed fires and is ignored)
        streaming = self._streaming
        queue = self._queue
        if (
            streaming is None
            and not queue
            and not self._overflow
            and self.state is ConnState.OPEN
            and self.index.upgrade is None
        ):  # the usual case, at a glance
            policy = self.policy
            want = policy.in_flight < policy.max_in_flight and self.buffer.writable() > 0
        else:
            needs_body = (streaming is not None and streaming.request.end is None) or (
                bool(queue) and queue[0].end is None
            )
            full = bool(self._overflow) or self.buffer.writable() == 0
            busy = self.policy.in_flight + len(queue) >= self.policy.max_in_flight
            # (after an upgrade request, what comes is the new protocol's: not read until then)
            closing = (
                self.state is not ConnState.OPEN or self.index.upgrade is not None
            ) and streaming is None
            want = not full and not closing and (needs_body or not busy)
        if want:
            if read is ReadState.PAUSED:
                self.read_state = ReadState.READING
                self._actions.append(ResumeReading())
            deadline = self._read_timeout()
            armed = self._read_deadline
            # Lazy: armed when it must fire sooner than the timer armed already, or when that
            # one is due within half of the new wait (a busy connection moves it about twice
            # per wait, and it never fires early: a firing costs the driver a cancelled wait).
            # One that fires early anyway (none applies now) is re-armed or ignored.
            if deadline is not None and (
                armed is None
                or deadline < armed
                or (deadline > armed and 2 * armed < deadline + self._clock())
            ):
                self._read_deadline = deadline
                self._actions.append(Timer("read", deadline))
        elif read is ReadState.READING:
            self.read_state = ReadState.PAUSED
            self._actions.append(PauseReading())

    def _read_timeout(self) -> float | None:
        """When the read timer that applies now expires (while reading): the body timeout,
        the header timeout, or keep-alive (idle); None while requests are in flight."""
        index = self.index
        if index.current is not None:
            return self._body_since + self._body_timeout
        if index.position < self.buffer.tail:
            return self._head_since + self._header_timeout
        if not self.policy.in_flight and not self._queue:
            buffer = self.buffer
            if buffer.block_size and not buffer.fixed:  # idle a moment: give the block back
                return self._idle_since + min(TRIM_AFTER, self._keep_alive_timeout)
            return self._idle_since + self._keep_alive_timeout
        return None

    def _disarm_read(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline = None
            self._actions.append(Timer("read", None))

    def _maybe_close(self) -> None:
        """Once the last response is out: close in stages after a response that closes the
        connection (shut the write side, drain, then close), else close now."""
        responses = self.responses
        if responses.closing:
            pass  # a closing response went out: nothing after it is sent
        elif self.state is not ConnState.CLOSING or self.policy.in_flight or len(responses):
            return
        self._disarm_read()
        for seq, ex in list(self._exchanges.items()):
            if ex.timer:
                self._actions.append(Timer(seq, None))
            self._actions.append(Cancel(seq))  # after a closing response: nobody to answer
        self._exchanges.clear()
        self._instant.clear()
        self.policy.clear()
        if self._peer_eof or not responses.closing:
            # The client has closed its side, or nothing closes with a response (idle past
            # the keep-alive timeout, a shutdown or EOF between requests): nothing to drain.
            self._close()
            return
        self.state = self.state.to(ConnState.LINGERING)
        self._actions.append(ShutWrite())
        self._actions.append(Timer("linger", self._clock() + self._linger_timeout))

    def _close(self) -> None:
        if self.state is ConnState.CLOSED:
            return
        if self.state is ConnState.LINGERING:
            self._actions.append(Timer("linger", None))
        self.state = self.state.to(ConnState.CLOSED)
        self.read_state = ReadState.DONE
        self._actions.append(Close())
