"""One dispatched request of a `ServerConnection`: its slot in line (it is the slot: one
object per request), its response's state, and where its streamed body has been read to."""

from __future__ import annotations

from ._buffer import SeekableBuffer
from ._index import FramedRequest
from ._ordered import ResponseSlot
from ._serialize import ResponseFraming
from ._state import ExchangeState

__all__ = ["Exchange"]


class Exchange(ResponseSlot):
    """One dispatched request: its slot in line and the state of its response."""

    __slots__ = (
        "continued",
        "framing",
        "head",
        "next_piece",
        "released_to",
        "request",
        "sent",
        "state",
        "streams_body",
        "timer",
        "wants_body",
    )

    def __init__(self, request: FramedRequest, streams_body: bool) -> None:
        # (ResponseSlot's fields, set here: one call less per request)
        self.seq = request.seq
        self.parts = []
        self.size = 0
        self.done = False
        self.close = False
        self.request = request
        self.head = request.head
        self.state = ExchangeState.RUNNING
        self.framing: ResponseFraming | None = None
        self.sent = 0  # response body bytes
        self.timer = False  # its request timeout is armed
        self.streams_body = streams_body
        self.wants_body = False  # the handler waits for the next piece of its body
        self.continued = not request.head.expect_continue
        self.next_piece = 0
        self.released_to = request.head_end

    def next_piece_of(self, buffer: SeekableBuffer, take: bool) -> memoryview | None:
        """Take (or just release) the next piece of its streamed body from `buffer`, and the
        chunk framing before it (so chunk-size lines never fill the buffer)."""
        s, e = self.request.body[self.next_piece]
        self.next_piece += 1
        if self.released_to < s:
            buffer.release(self.released_to, s)
        self.released_to = e
        if take:
            return buffer.take(s, e)
        buffer.release(s, e)
        return None
