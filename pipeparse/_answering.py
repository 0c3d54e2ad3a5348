"""Answering: the part of `ServerConnection` that renders a response and puts it in line
(the instant path, `_respond_at_once`, and the exchange path), finishes a request (its bytes
released, its slot complete), answers a failure with a 500 or 503 and a protocol error with its
4xx, and feeds a streamed request body to its handler piece by piece. A base class, as
`_reading.ReadAndClose` is its own: the state it reads is `ServerConnection`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from http import HTTPStatus

from mypy_extensions import mypyc_attr

from ._errors import ProtocolError
from ._exchange import Exchange
from ._head import RequestHead
from ._reading import ReadAndClose
from ._serialize import ResponseFraming, render_error, render_head
from ._state import ExchangeState, ReadState
from .actions import BodyData, BodyEnd, BodyError, Chunk, Timer

__all__ = ["Answers", "Headers"]

Headers = Sequence[tuple[bytes, bytes]]
_TEXT_PLAIN = ((b"content-type", b"text/plain; charset=utf-8"),)


@mypyc_attr(allow_interpreted_subclasses=True)  # (`ServerConnection` allows them)
class Answers(ReadAndClose):
    """See the module comment; every attribute is set by `ServerConnection.__init__`."""

    __slots__ = ("_closed_at", "_error_answered")

    _shutdown: bool
    _error_answered: bool
    _batch_date: bytes
    _closed_at: float
    error: ProtocolError | None
    server_name: bytes
    clock: Callable[[], float]
    date: Callable[[], bytes]

    def _stop_dispatch(self) -> None:
        raise NotImplementedError

    def _framed_more(self) -> None:
        raise NotImplementedError

    # -- responses -----------------------------------------------------------------------

    def _render(
        self, ex: Exchange, status: int, headers: Headers, length: int | None
    ) -> tuple[bytes, ResponseFraming]:
        last = (
            self._shutdown and not self._queue and not self._instant and self.responses.is_last(ex)
        )
        # One clock read per receive for the handlers that answer at once; a fresh one for a
        # handler that suspended (it may answer much later).
        date = self.date() if ex.timer or ex.streams_body else self._batch_date
        return self._render_head(ex.head, status, headers, length, date, last)

    def _render_head(
        self,
        head: RequestHead,
        status: int,
        headers: Headers,
        length: int | None,
        date: bytes,
        last: bool,
    ) -> tuple[bytes, ResponseFraming]:
        return render_head(
            status,
            headers,
            method=head.method,
            http11=head.http_version == b"1.1",
            keep_alive=head.keep_alive and not last,
            body_length=length,
            date=date,
            server=self.server_name,
        )

    def _respond_at_once(self, status: int, headers: Headers, body: Chunk) -> None:
        """The whole response of the oldest instant request (see `_instant`): straight to the
        output, or complete into a slot of its own after every earlier response's."""
        instant = self._instant
        request = instant[0]
        head = request.head
        length = len(body)
        last = self._shutdown and not self._queue and len(instant) == 1
        data, framing = self._render_head(head, status, headers, length, self._batch_date, last)
        close = framing.close
        if framing.send_body:
            if framing.content_length != length and framing.content_length is not None:
                raise RuntimeError(  # (it stays in line: the driver reports the failure)
                    f"response body of {length} bytes, Content-Length {framing.content_length}"
                )
            if length <= 4096:
                self.responses.emit(request.seq, data + body, close)
            else:
                self.responses.emit(request.seq, data, close, body)  # not copied
        else:
            self.responses.emit(request.seq, data, close)
        del instant[0]
        self.policy.finished(head.method)
        assert request.end is not None  # (it started with its whole body)
        self.buffer.release(request.start, request.end)
        if close:
            self._stop_dispatch()
            if request.seq < self._closed_at:
                self._closed_at = float(request.seq)
        if not self.policy.in_flight and not self._queue:
            self._idle_since = self.clock()
        if self._overflow:
            self._take_overflow()

    def _exchange(self, seq: int) -> Exchange | None:
        """Request `seq`'s exchange (made now if it is an instant request), or None."""
        ex = self._exchanges.get(seq)
        if ex is None and self._instant and self._instant[0].seq <= seq:
            self._materialize(seq)
            ex = self._exchanges.get(seq)
        return ex

    def _materialize(self, upto: int | None) -> None:
        """Give the instant requests up to `upto` (None: all) their exchange, in order (each
        one's slot after every earlier one's)."""
        instant = self._instant
        while instant and (upto is None or instant[0].seq <= upto):
            request = instant.pop(0)
            ex = Exchange(request, False)
            self.responses.add(ex)
            self._exchanges[request.seq] = ex

    def _answer_error(self, error: ProtocolError) -> None:
        """The 4xx of a protocol error, after every earlier response; then the close."""
        self._error_answered = True
        self._materialize(None)  # (its slot follows every earlier request's)
        response = render_error(
            error.status_hint, error.message, date=self.date(), server=self.server_name
        )
        slot = self.responses.reserve(-1)
        self.responses.write(slot, response)
        self.responses.finish(slot, close=True)
        self._stop_dispatch()

    def _fail(self, ex: Exchange, status: int, close: bool) -> None:
        if ex.state is not ExchangeState.RUNNING:
            self._finish(ex, True)  # part of its response is out: only closing can tell
            return
        body = b"%d %s\n" % (status, HTTPStatus(status).phrase.encode())
        head, framing = self._render(ex, status, _TEXT_PLAIN, len(body))
        ex.sent = len(body) if framing.send_body else 0
        self.responses.write(ex, head + body if framing.send_body else head)
        self._finish(ex, close or framing.close)

    def _finish(self, ex: Exchange, close: bool) -> None:
        ex.state = ExchangeState.DONE
        seq = ex.request.seq
        del self._exchanges[seq]
        self.policy.finished(ex.head.method)
        if ex.timer:
            ex.timer = False
            self._actions.append(Timer(seq, None))
        request = ex.request
        if not ex.streams_body:
            assert request.end is not None  # (it started with its whole body)
            self.buffer.release(request.start, request.end)
        else:
            ex.wants_body = False
            self._discard_body(ex)
            if self._streaming is ex and (self.error is not None or self._peer_eof):
                self._streaming = None  # its body will never complete: nothing to discard
        self.responses.finish(ex, close=close)
        if close:
            self._stop_dispatch()
            if seq < self._closed_at:
                self._closed_at = float(seq)
        if not self.policy.in_flight and not self._queue:
            self._idle_since = self.clock()
        if self._overflow:
            self._take_overflow()

    def _take_overflow(self) -> None:
        """Bytes that waited for room: into the buffer as far as it now has room."""
        pending = b"".join(self._overflow)
        room = self.buffer.writable()
        if not room:
            return
        self.buffer.feed(pending[:room])
        self._overflow = [pending[room:]] if len(pending) > room else []
        self._framed_more()

    # -- streamed request bodies ---------------------------------------------------------

    def _streaming_arrived(self) -> None:
        ex = self._streaming
        if ex is None:
            return
        if ex.state is ExchangeState.DONE:
            self._discard_body(ex)
        elif ex.wants_body:
            self._deliver_body(ex)

    def _deliver_body(self, ex: Exchange) -> None:
        request = ex.request
        seq = request.seq
        if ex.next_piece < len(request.body):
            ex.wants_body = False
            self._actions.append(BodyData(seq, ex.next_piece_of(self.buffer, take=True)))  # type: ignore[arg-type]
            if self._overflow:
                self._take_overflow()
        elif request.end is not None:
            ex.wants_body = False
            self._actions.append(BodyEnd(seq))  # its bytes are released when it finishes
        elif self.error is not None:
            ex.wants_body = False
            # Its handler may answer it (a closing response: the 4xx that follows it is
            # then dropped) or not (an ASGI app sees a disconnect): the 4xx follows.
            self._actions.append(BodyError(seq, self.error))
        elif self._peer_eof or self.read_state is ReadState.DONE:
            ex.wants_body = False
            self._actions.append(
                BodyError(seq, ProtocolError("client closed the connection mid-body", 400))
            )

    def _discard_body(self, ex: Exchange) -> None:
        """The handler is done: drop what arrives of its body, up to its end."""
        request = ex.request
        while ex.next_piece < len(request.body):
            ex.next_piece_of(self.buffer, take=False)
        if request.end is not None and self._streaming is ex:
            buf = self.buffer
            if ex.released_to < request.end:
                buf.release(ex.released_to, request.end)
            buf.release(request.start, request.head_end)
            self._streaming = None
