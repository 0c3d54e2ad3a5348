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

Body framing (Content-Length, chunk-size lines, chunk CRLFs, trailers) is `BodyFramer`'s, shared
with `ResponseIndex`; this index frames heads and hands a body over by setting the framer's state.
Body-less requests never leave `_heads`.

Empty lines (CRLF) where a request line is expected, at the start of the stream or between
requests, are ignored (RFC 9112 §2.2), up to `Limits.max_empty_lines` in a row; the index
releases their bytes itself, since no request owns them. A CONNECT request ends the HTTP stream
(what follows is tunnel data): pipeparse does not tunnel, so the index answers it as an error
with status 501, and frames nothing after it. So does a WebSocket upgrade request
(`RequestHead.websocket`) when the index was made with ``upgrades=True``: it is framed and held
as `upgrade` (not returned by `advance`), and what follows its head belongs to the new protocol.
Without ``upgrades`` it is an ordinary request (a server may ignore Upgrade, RFC 9110 §7.8).
Neither kind of head is cached, so the hot path never tests for them.

After the first error nothing later is framed: `error` holds it, and `advance()` returns nothing
more, because the boundaries after a framing error cannot be trusted (request smuggling).
"""

from __future__ import annotations

from ._body import CHUNK_SIZE, HEAD, LENGTH, NO_FIELDS, NO_RANGES, BodyFramer, FramedMessage
from ._buffer import SeekableBuffer
from ._errors import ProtocolError
from ._fields import check_partial_head
from ._head import RequestHead, parse_request_head
from ._limits import Limits
from ._memo import remember

__all__ = ["FramedRequest", "RequestIndex"]

_HEAD_CACHE_SIZE = 256


class FramedRequest(FramedMessage):
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

    __slots__ = ("head",)

    def __init__(
        self, seq: int, start: int, head_end: int, head: RequestHead, end: int | None
    ) -> None:
        self.seq = seq
        self.start = start
        self.head_end = head_end
        self.head = head
        # Requests without a body share these empty lists (cheaper than two new lists each);
        # the index gives a request its own before it appends.
        self.body: list[tuple[int, int]] = NO_RANGES
        self.body_framed = 0
        self.trailers: list[tuple[bytes, bytes]] = NO_FIELDS
        self.end = end

    def __repr__(self) -> str:
        return (
            f"FramedRequest(seq={self.seq}, {self.head.method!r} {self.head.target!r}, "
            f"[{self.start}, {self.end}))"
        )


class RequestIndex(BodyFramer[FramedRequest]):
    """Frames the requests arriving in `buffer`; call `advance()` after each write.

    Args:
        buffer: the receive buffer the requests arrive in.
        limits: sizes and counts to enforce.
        upgrades: stop at a WebSocket upgrade request and hold it as `upgrade`.
    """

    def __init__(
        self, buffer: SeekableBuffer, limits: Limits | None = None, upgrades: bool = False
    ) -> None:
        # Body framing: 400 for bad syntax, 431 for trailers, 413 over the body limit, and the
        # strict rules (bare LF fails at once, no framing fields as trailers).
        super().__init__(buffer, status=400, fields_status=431, body_status=413, strict=True)
        self.limits = limits or Limits()
        self.error: ProtocolError | None = None
        self.upgrades = upgrades
        # The WebSocket upgrade request that ended the HTTP stream (with ``upgrades``): its
        # bytes end at `position`; everything after belongs to the WebSocket.
        self.upgrade: FramedRequest | None = None
        self.framed = 0  # requests framed so far (complete or not)
        self._cache: dict[bytes, RequestHead] = {}
        self._last_raw: bytes | None = None  # the last head framed, and its parse
        self._last_head: RequestHead | None = None
        # The run of empty lines being skipped: [_empty_from, _empty_end) (bounded in length).
        self._empty_from = self._empty_end = -1

    @property
    def current(self) -> FramedRequest | None:
        """The request whose body or trailers are still arriving, if any."""
        return self._current

    @property
    def at_boundary(self) -> bool:
        """True when no request is partly framed (nothing of the next head scanned yet)."""
        return self._state == HEAD and self._pos == self.buffer.tail

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
        if self.error is not None or self.upgrade is not None:
            return out
        try:
            self._advance(out)
        except ProtocolError as e:
            self.error = e
        return out

    def _advance(self, out: list[FramedRequest]) -> None:
        tail = self.buffer.tail
        while True:
            if self._state == HEAD:
                if not self._heads(out, tail):
                    return
            elif not self._frame_body(tail):
                return

    def _heads(self, out: list[FramedRequest], tail: int) -> bool:
        """Frame consecutive heads (the hot path); False when the next one is incomplete.

        Per request: one C-speed find, one copy of the head, one cache lookup, one object;
        a head identical to the one before it (a pipelining client's usual case) costs one
        C-speed comparison instead. Reads the buffer's block directly: everything from `_pos`
        on is in its newest segment.
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
        last_raw = self._last_raw
        last_head = self._last_head
        try:
            while start < tail:
                # Bounded by the tail: the block holds stale bytes past it (after a restart at
                # the block's start, or a compaction), which must never complete a head.
                if last_raw is not None and blk.startswith(last_raw, start - d, tail - d):
                    # The same bytes as the last head, whose only CRLFCRLF is its end: the
                    # same head (the scan from `search` > `start` found no earlier one).
                    assert last_head is not None  # set with last_raw
                    head = last_head
                    head_end = start + len(last_raw)
                else:
                    # (A head never starts with CR, so the repeat test above misses nothing.)
                    if blk[start - d] == 13:  # CR: an empty line where a request line goes?
                        start = search = self._skip_empty_lines(start, tail)
                        if start < tail and blk[start - d] == 13:  # its LF is still to come
                            self._pos = self._searched = start
                            return False
                        continue
                    stop = start + max_head
                    e = blk.find(b"\r\n\r\n", search - d, (stop if stop < tail else tail) - d)
                    if e < 0:
                        self._pos = start
                        self._head_incomplete(start, tail)
                        return False
                    head_end = e + 4 + d
                    raw = mv[start - d : e + 4].tobytes()
                    cached = cache.get(raw)
                    if cached is None:
                        cached = parse_request_head(raw, self.limits)
                        if cached.method == b"CONNECT":
                            raise ProtocolError("CONNECT: this server does not tunnel", 501)
                        if cached.websocket and self.upgrades:
                            seq = self._upgrade(seq, start, head_end, cached)
                            return False
                        remember(cache, raw, cached, _HEAD_CACHE_SIZE)
                    head = cached
                    self._last_raw = last_raw = raw
                    self._last_head = last_head = head
                if head.chunked or head.content_length:
                    req = FramedRequest(seq, start, head_end, head, None)
                    seq += 1
                    append(req)
                    req.body = []
                    self._current = req
                    self._pos = self._searched = head_end
                    if head.chunked:
                        self._state = CHUNK_SIZE
                    else:
                        assert head.content_length  # the condition above: not chunked
                        self._remaining = head.content_length
                        self._state = LENGTH
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

    def _upgrade(self, seq: int, start: int, head_end: int, head: RequestHead) -> int:
        """End the HTTP stream at the upgrade request [start, head_end); returns the next seq."""
        if head.chunked or head.content_length:
            # RFC 6455's handshake has no body; with one, where the WebSocket starts is unclear.
            raise ProtocolError("a WebSocket upgrade request with a body")
        self.upgrade = FramedRequest(seq, start, head_end, head, head_end)
        self._pos = self._searched = head_end
        return seq + 1

    def _skip_empty_lines(self, start: int, tail: int) -> int:
        """Skip (and release) the empty lines from `start`, which holds a CR; returns the offset
        after them (a CR there is one whose LF has not arrived yet).

        A run of empty lines may arrive over several writes: it goes on where the last one
        ended, and any request bytes in between would have moved `start` past that end.
        """
        buf = self.buffer
        if start != self._empty_end:
            self._empty_from = start
        most = self._empty_from + 2 * self.limits.max_empty_lines
        pos = start
        while pos + 2 <= tail and buf.scan_bytes(pos, pos + 2) == b"\r\n":
            if pos == most:
                raise ProtocolError(
                    f"more than {self.limits.max_empty_lines} empty lines before a request line"
                )
            pos += 2
        if pos + 1 < tail and buf.scan_bytes(pos, pos + 1) == b"\r":
            raise ProtocolError("bare CR where a request line was expected")
        self._empty_end = pos
        if pos > start:
            buf.release(start, pos)
        return pos

    def _head_incomplete(self, start: int, tail: int) -> None:
        """No blank line yet: enforce the head limit and fail fast on bare LF endings."""
        scan_from = max(start, self._searched - 3)
        max_head = self.limits.max_head_size
        check_partial_head(self.buffer, start, scan_from, tail, max_head, "request", 400, 431)
        self._searched = tail
