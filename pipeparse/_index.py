"""RequestIndex: frames pipelined requests incrementally, as bytes arrive in a SeekableBuffer.

Strategy
--------
The index reads only what framing needs: heads, chunk-size lines and trailers. Body bytes are
counted, never read, so a consumer may take them (leaving holes) as soon as they are framed. Each
call to `advance()` resumes where the last one stopped and looks only at new bytes: the search for
a head's blank line restarts three bytes before where it gave up, so a CRLFCRLF split across
reads is found and nothing is scanned twice.

Every framed request is a `FramedRequest` holding absolute offsets into the buffer: where its head
starts and ends, the pieces of body data framed so far (one range for Content-Length, one per chunk
for chunked, growing as data arrives), and where the request ends once it is complete. A consumer
can therefore seek to any request, or any piece of its body, while later ones are still arriving.

Identical heads are parsed once: a small cache maps a head's exact bytes to its parsed, immutable
`RequestHead` (pipelined clients repeat heads; the cache is exact, so it changes no outcome).

After the first error nothing later is framed: `error` holds it, and `advance()` returns nothing
more, because the boundaries after a framing error cannot be trusted (request smuggling).
"""

from __future__ import annotations

from . import _abnf
from ._buffer import SeekableBuffer
from ._errors import ProtocolError
from ._head import RequestHead, parse_request_head
from ._limits import Limits

__all__ = ["FramedRequest", "RequestIndex"]

_HEAD_CACHE_SIZE = 256

# Framing states.
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS = range(6)


# Fields that frame a message: never allowed in a trailer section.
_FRAMING_FIELDS = frozenset({b"content-length", b"transfer-encoding"})

_NONE: list[tuple[int, int]] = []
_NONE_FIELDS: list[tuple[bytes, bytes]] = []


class FramedRequest:
    """One request found in the stream, by absolute offsets into its buffer.

    Attributes:
        seq: its index on the connection, from 0.
        start, head_end: the head is at [start, head_end).
        head: the parsed head.
        body: the body data framed so far, as absolute ``[start, end)`` ranges in order (empty
            for no body). Grows while the request is incomplete.
        body_framed: decoded body bytes framed so far.
        trailers: a chunked body's trailer fields, ``(lowercased name, value)``.
        end: absolute offset just past the request, or None while it is incomplete.
    """

    __slots__ = ("body", "body_framed", "end", "head", "head_end", "seq", "start", "trailers")

    def __init__(
        self, seq: int, start: int, head_end: int, head: RequestHead, end: int | None
    ) -> None:
        self.seq = seq
        self.start = start
        self.head_end = head_end
        self.head = head
        # Requests without a body share these empty lists (cheaper than two new lists each);
        # the index gives a request its own before it appends.
        self.body: list[tuple[int, int]] = _NONE
        self.body_framed = 0
        self.trailers: list[tuple[bytes, bytes]] = _NONE_FIELDS
        self.end = end

    @property
    def complete(self) -> bool:
        return self.end is not None

    def __repr__(self) -> str:
        return (
            f"FramedRequest(seq={self.seq}, {self.head.method!r} {self.head.target!r}, "
            f"[{self.start}, {self.end}))"
        )


class RequestIndex:
    """Frames the requests arriving in `buffer`; call `advance()` after each write.

    Args:
        buffer: the receive buffer the requests arrive in.
        limits: sizes and counts to enforce.
    """

    def __init__(self, buffer: SeekableBuffer, limits: Limits | None = None) -> None:
        self.buffer = buffer
        self.limits = limits or Limits()
        self.error: ProtocolError | None = None
        self.framed = 0  # requests framed so far (complete or not)
        self._state = _HEAD
        self._pos = buffer.head  # absolute offset of the first byte not yet framed
        self._searched = self._pos  # head search gave up before here
        self._current: FramedRequest | None = None  # the request being framed, if incomplete
        self._remaining = 0  # body or chunk bytes still to come
        self._trailers_start = 0  # where the current trailer section began
        self._cache: dict[bytes, RequestHead] = {}

    @property
    def current(self) -> FramedRequest | None:
        """The request whose body or trailers are still arriving, if any."""
        return self._current

    @property
    def at_boundary(self) -> bool:
        """True when no request is partly framed (nothing of the next head scanned yet)."""
        return self._state == _HEAD and self._pos == self.buffer.tail

    @property
    def position(self) -> int:
        """Absolute offset up to which the stream has been framed."""
        return self._pos

    def advance(self) -> list[FramedRequest]:
        """Frame what arrived since the last call; returns the requests whose heads are new.

        A returned request may still be incomplete (body still arriving): it then stays as
        `current`, and later calls extend its `body` and finally set its `end`.
        On a protocol error, returns the requests framed before it and sets `error`.
        """
        out: list[FramedRequest] = []
        if self.error is not None:
            return out
        try:
            self._advance(out)
        except ProtocolError as e:
            self.error = e
        return out

    def _advance(self, out: list[FramedRequest]) -> None:
        tail = self.buffer.tail
        while True:
            state = self._state
            if state == _HEAD:
                if not self._heads(out, tail):
                    return
            elif state in (_LENGTH, _CHUNK_DATA):
                if not self._take_body(tail):
                    return
            elif state == _CHUNK_SIZE:
                if not self._chunk_size(tail):
                    return
            elif state == _CHUNK_CRLF:
                if tail - self._pos < 2:
                    return
                if self.buffer.scan_bytes(self._pos, self._pos + 2) != b"\r\n":
                    raise ProtocolError("chunk data not followed by CRLF")
                self._pos += 2
                self._state = _CHUNK_SIZE
            elif not self._trailer_line(tail):
                return

    def _heads(self, out: list[FramedRequest], tail: int) -> bool:
        """Frame consecutive heads (the hot path); False when the next one is incomplete.

        Per request: one C-speed find, one copy of the head, one cache lookup, one object.
        Reads the buffer's block directly: everything from `_pos` on is in its newest segment.
        """
        buf = self.buffer
        blk = buf._block
        mv = buf._mv
        d = buf._delta
        max_head = self.limits.max_head_size
        cache = self._cache
        append = out.append
        seq = self.framed
        start = self._pos
        search = max(start, self._searched - 3)
        try:
            while start < tail:
                # Bounded by the tail: the block holds stale bytes past it (after a restart at
                # the block's start, or a compaction), which must never complete a head.
                stop = start + max_head
                e = blk.find(b"\r\n\r\n", search - d, (stop if stop < tail else tail) - d)
                if e < 0:
                    self._pos = start
                    self._head_incomplete(start, tail)
                    return False
                head_end = e + 4 + d
                raw = mv[start - d : e + 4].tobytes()
                head = cache.get(raw)
                if head is None:
                    head = parse_request_head(raw, self.limits)
                    if len(cache) >= _HEAD_CACHE_SIZE:
                        cache.clear()
                    cache[raw] = head
                if head.chunked or head.content_length:
                    req = FramedRequest(seq, start, head_end, head, None)
                    seq += 1
                    append(req)
                    req.body = []
                    self._current = req
                    self._pos = self._searched = head_end
                    if head.chunked:
                        self._state = _CHUNK_SIZE
                    else:
                        self._remaining = head.content_length
                        self._state = _LENGTH
                    return True
                append(FramedRequest(seq, start, head_end, head, head_end))
                seq += 1
                start = search = head_end
            self._pos = self._searched = start
            return False
        except ProtocolError:
            self._pos = start  # `position`: where the rejected request starts
            raise
        finally:
            self.framed = seq

    def _head_incomplete(self, start: int, tail: int) -> None:
        """No blank line yet: enforce the head limit and fail fast on bare LF endings."""
        buf = self.buffer
        scan_from = max(start, self._searched - 3)
        if tail - start >= self.limits.max_head_size:
            raise ProtocolError(
                f"request head exceeds {self.limits.max_head_size} bytes without ending", 431
            )
        # A head that ends lines with bare LF would otherwise wait here until the limit.
        lf = buf.find(b"\n", scan_from, tail)
        while lf >= 0:
            if lf == start or buf.scan_bytes(lf - 1, lf) != b"\r":
                raise ProtocolError("bare LF line ending in request head (CRLF required)")
            lf = buf.find(b"\n", lf + 1, tail)
        self._searched = tail

    def _take_body(self, tail: int) -> bool:
        """Frame Content-Length or chunk data as far as it has arrived; False: need more."""
        req = self._current
        assert req is not None
        start = self._pos
        n = min(self._remaining, tail - start)
        if n <= 0:
            return False
        req.body.append((start, start + n))
        req.body_framed += n
        self._pos = start + n
        self._remaining -= n
        if self._remaining:
            return False
        if self._state == _LENGTH:
            self._finish(req)
        else:
            self._state = _CHUNK_CRLF
        return True

    def _chunk_size(self, tail: int) -> bool:
        buf = self.buffer
        start = self._pos
        limit = self.limits.max_chunk_line
        e = buf.find(b"\r\n", start, start + limit)
        if e < 0:
            if tail - start >= limit:
                raise ProtocolError(f"chunk-size line longer than {limit} bytes")
            if buf.find(b"\n", start, tail) >= 0:  # no CRLF yet: any LF is bare
                raise ProtocolError("bare LF in a chunk-size line (CRLF required)")
            return False
        line = buf.scan_bytes(start, e + 2)
        m = _abnf.CHUNK_LINE.fullmatch(line)
        if m is None:
            raise ProtocolError(f"malformed chunk-size line {line[:64]!r}")
        size = int(m.group(1), 16)
        req = self._current
        assert req is not None
        if req.body_framed + size > self.limits.max_body_size:
            raise ProtocolError(
                f"chunked body exceeds the body limit of {self.limits.max_body_size}", 413
            )
        self._pos = e + 2
        if size:
            self._remaining = size
            self._state = _CHUNK_DATA
        else:
            self._state = _TRAILERS
            self._trailers_start = e + 2
        return True

    def _trailer_line(self, tail: int) -> bool:
        buf = self.buffer
        start = self._pos
        limits = self.limits
        stop = self._trailers_start + limits.max_head_size  # the whole section, final CRLF too
        e = buf.find(b"\r\n", start, stop)
        if e < 0:
            if tail >= stop:
                raise ProtocolError(f"trailer section exceeds {limits.max_head_size} bytes", 431)
            if buf.find(b"\n", start, tail) >= 0:  # no CRLF yet: any LF is bare
                raise ProtocolError("bare LF line ending in the trailer section (CRLF required)")
            return False
        req = self._current
        assert req is not None
        if e == start:
            self._pos = e + 2
            self._finish(req)
            return True
        line = buf.scan_bytes(start, e + 2)
        m = _abnf.FIELD_LINE.fullmatch(line)
        if m is None:
            raise ProtocolError(f"malformed trailer field {line[:64]!r}")
        name = m.group(1).lower()
        if name in _FRAMING_FIELDS:
            # RFC 9110 §6.5.1: framing cannot be processed after the content it frames.
            raise ProtocolError(f"{name.decode()} field in the trailer section")
        if len(req.trailers) >= limits.max_headers:
            raise ProtocolError("too many trailer fields", 431)
        if not req.trailers:
            req.trailers = []
        req.trailers.append((name, m.group(2)))
        self._pos = e + 2
        return True

    def _finish(self, req: FramedRequest) -> None:
        req.end = self._pos
        self._current = None
        self._state = _HEAD
        self._searched = self._pos
