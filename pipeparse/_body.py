"""BodyFramer: the body half of `RequestIndex` and `ResponseIndex` (Content-Length and chunked).

Strategy
--------
An index frames heads itself (its hot path) and, when a head announces a body, hands over to the
state machine here by setting `_state` (LENGTH or CHUNK_SIZE) and `_remaining`; `_frame_body()`
then runs until the message ends (the index's `_finish()` takes the state back) or more bytes are
needed. Only framing is read: chunk-size lines, the CRLF after each chunk, and trailer lines.
Body data is counted, never read or copied: each piece is recorded as an absolute
``[start, end)`` range on the message being framed.

The two sides differ only in data, given to `__init__`:

- ``status``: the status hint of a syntax error (400 for requests, 502 for responses).
- ``fields_status``: the hint for too large or too many trailers (431, or 502).
- ``body_status``: the hint for a chunked body over ``limits.max_body_size`` (413); None means
  the body limit does not apply (a response body is framed and released, never held).
- ``strict``: the request side's extra rules against smuggling: a bare LF in a chunk-size line
  or trailer fails at once, Content-Length and Transfer-Encoding are refused as trailers
  (RFC 9110 §6.5.1), and ``limits.max_head_size`` bounds the whole trailer section (without it,
  each trailer line).

Limits are read from the index's `limits` on use, so the index stays the single owner of them.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from . import _abnf
from ._buffer import SeekableBuffer
from ._errors import ProtocolError
from ._limits import Limits

__all__ = [
    "CHUNK_CRLF",
    "CHUNK_DATA",
    "CHUNK_SIZE",
    "HEAD",
    "LENGTH",
    "NO_FIELDS",
    "NO_RANGES",
    "TRAILERS",
    "BodyFramer",
    "FramedMessage",
]

# Framing states: HEAD belongs to the index, the others to `BodyFramer._frame_body`. An index
# may add states of its own after these.
HEAD, LENGTH, CHUNK_SIZE, CHUNK_DATA, CHUNK_CRLF, TRAILERS = range(6)

# Messages without a body or trailers share these empty lists (cheaper than new lists each);
# the framer gives a message its own before it appends.
NO_RANGES: list[tuple[int, int]] = []
NO_FIELDS: list[tuple[bytes, bytes]] = []

# Fields that frame a message: never allowed in a trailer section (strict framing).
_FRAMING_FIELDS = frozenset({b"content-length", b"transfer-encoding"})
_CHUNK_LINE = _abnf.CHUNK_LINE.fullmatch
_FIELD_LINE = _abnf.FIELD_LINE.fullmatch


class FramedMessage:
    """Base of `FramedRequest` and `FramedResponse`: what they share, and what the framer fills
    in. Each subclass sets every slot in its own `__init__` (no super() call: one object per
    request is the hot path)."""

    __slots__ = ("body", "body_framed", "end", "head_end", "seq", "start", "trailers")

    seq: int
    start: int
    head_end: int
    body: list[tuple[int, int]]
    body_framed: int
    trailers: list[tuple[bytes, bytes]]
    end: int | None

    @property
    def complete(self) -> bool:
        return self.end is not None


M = TypeVar("M", bound=FramedMessage)


class BodyFramer(Generic[M]):
    """Frames the body and trailers of the message `_current`, from `_pos` in `buffer`.

    Subclasses frame heads, set `_current`, `_state` and `_remaining` to start a body, and may
    extend `_finish()` (called when the message ends).
    """

    limits: Limits

    def __init__(
        self,
        buffer: SeekableBuffer,
        *,
        status: int,
        fields_status: int,
        body_status: int | None,
        strict: bool,
    ) -> None:
        self.buffer = buffer
        self._state = HEAD
        self._pos = buffer.head  # absolute offset of the first byte not yet framed
        self._searched = self._pos  # head search gave up before here
        self._current: M | None = None  # the message being framed, if incomplete
        self._remaining = 0  # body or chunk bytes still to come
        self._trailers_start = 0  # where the current trailer section began
        self._status = status
        self._fields_status = fields_status
        self._body_status = body_status
        self._strict = strict

    def _frame_body(self, tail: int) -> bool:
        """Frame body states up to `tail`: True once the message ended, False: need more."""
        while True:
            state = self._state
            if state in (LENGTH, CHUNK_DATA):
                if not self._take_body(tail):
                    return False
            elif state == CHUNK_SIZE:
                if not self._chunk_size(tail):
                    return False
            elif state == CHUNK_CRLF:
                pos = self._pos
                if tail - pos < 2:
                    return False
                if self.buffer.scan_bytes(pos, pos + 2) != b"\r\n":
                    raise ProtocolError("chunk data not followed by CRLF", self._status)
                self._pos = pos + 2
                self._state = CHUNK_SIZE
            elif state == TRAILERS:
                if not self._trailer_line(tail):
                    return False
            else:
                return True

    def _take_body(self, tail: int) -> bool:
        """Frame Content-Length or chunk data as far as it has arrived; False: need more."""
        msg = self._current
        assert msg is not None
        start = self._pos
        n = min(self._remaining, tail - start)
        if n <= 0:
            return False
        msg.body.append((start, start + n))
        msg.body_framed += n
        self._pos = start + n
        self._remaining -= n
        if self._remaining:
            return False
        if self._state == LENGTH:
            self._finish(msg)
        else:
            self._state = CHUNK_CRLF
        return True

    def _chunk_size(self, tail: int) -> bool:
        buf = self.buffer
        start = self._pos
        limit = self.limits.max_chunk_line
        e = buf.find(b"\r\n", start, start + limit)
        if e < 0:
            if tail - start >= limit:
                raise ProtocolError(f"chunk-size line longer than {limit} bytes", self._status)
            if self._strict and buf.find(b"\n", start, tail) >= 0:  # no CRLF yet: LF is bare
                raise ProtocolError("bare LF in a chunk-size line (CRLF required)", self._status)
            return False
        line = buf.scan_bytes(start, e + 2)
        m = _CHUNK_LINE(line)
        if m is None:
            raise ProtocolError(f"malformed chunk-size line {line[:64]!r}", self._status)
        size = int(m.group(1), 16)
        if self._body_status is not None:
            msg = self._current
            assert msg is not None
            max_body = self.limits.max_body_size
            if msg.body_framed + size > max_body:
                raise ProtocolError(
                    f"chunked body exceeds the body limit of {max_body}", self._body_status
                )
        self._pos = e + 2
        if size:
            self._remaining = size
            self._state = CHUNK_DATA
        else:
            self._state = TRAILERS
            self._trailers_start = e + 2
        return True

    def _trailer_line(self, tail: int) -> bool:
        buf = self.buffer
        start = self._pos
        limits = self.limits
        strict = self._strict
        # Strict: the whole section, final CRLF too; otherwise each line.
        stop = (self._trailers_start if strict else start) + limits.max_head_size
        e = buf.find(b"\r\n", start, stop)
        if e < 0:
            if tail >= stop:
                if strict:
                    msg = f"trailer section exceeds {limits.max_head_size} bytes"
                else:
                    msg = "trailer section too large"
                raise ProtocolError(msg, self._fields_status)
            if strict and buf.find(b"\n", start, tail) >= 0:  # no CRLF yet: any LF is bare
                raise ProtocolError(
                    "bare LF line ending in the trailer section (CRLF required)", self._status
                )
            return False
        framed = self._current
        assert framed is not None
        if e == start:
            self._pos = e + 2
            self._finish(framed)
            return True
        line = buf.scan_bytes(start, e + 2)
        m = _FIELD_LINE(line)
        if m is None:
            raise ProtocolError(f"malformed trailer field {line[:64]!r}", self._status)
        name = m.group(1).lower()
        if strict and name in _FRAMING_FIELDS:
            # RFC 9110 §6.5.1: framing cannot be processed after the content it frames.
            raise ProtocolError(f"{name.decode()} field in the trailer section", self._status)
        if len(framed.trailers) >= limits.max_headers:
            raise ProtocolError("too many trailer fields", self._fields_status)
        if not framed.trailers:
            framed.trailers = []
        framed.trailers.append((name, m.group(2)))
        self._pos = e + 2
        return True

    def _finish(self, msg: M) -> None:
        """The message ends at `_pos`: record it and go back to framing heads."""
        msg.end = self._pos
        self._current = None
        self._state = HEAD
        self._searched = self._pos
