"""ResponseIndex: frames pipelined responses incrementally, as bytes arrive in a SeekableBuffer.

Strategy
--------
The client-side twin of `RequestIndex`, in the same style: bytes land once in a `SeekableBuffer`;
each `advance()` resumes where the last stopped and reads only what framing needs (heads,
chunk-size lines, trailers). Body bytes are counted, never copied, so the consumer may release
them as soon as they are framed. A framed response holds absolute offsets: its head, the pieces
of body framed so far, and its end once complete.

A response cannot be framed from its own bytes alone: a response to HEAD has no body whatever its
Content-Length says. So the index is told, in order, the method of every request sent
(`expect`), a FIFO kept as runs of ``[method, count]`` so that a pipelined batch of identical
requests costs one entry. The body length follows RFC 9112 §6.3, strictly:

- HEAD, 1xx, 204 and 304: no body. Interim 1xx responses (100, 103, ...) are framed and skipped:
  the request still waits for its final response. 101 (a protocol switch) is an error: the bytes
  after it are no longer HTTP/1.1. A 2xx to CONNECT (a tunnel) is an error too.
- Transfer-Encoding whose final coding is chunked: chunked, with trailers. Transfer-Encoding and
  Content-Length together are an error (a smuggling signature), and so is a repeated
  Content-Length. Other transfer codings: read until close.
- Content-Length: exactly that many bytes.
- Otherwise: read until close; `eof()` ends such a response.

Identical heads are parsed once (a small exact cache, as in `RequestIndex`): a server answering a
pipelined batch repeats its head byte for byte. Errors are `ProtocolError` with ``status_hint``
502 (what a gateway answers for a bad upstream response); after one, nothing more is framed.
A response that ends the connection (``Connection: close``, HTTP/1.0 without keep-alive, or
read-until-close) is the last one: any byte after it is an error.

The repeat fast path (see `_heads`) frames a run of byte-identical responses with one compare,
and `tally()` frames without handing out per-response objects: together they make framing a
small part of a load client's cost per response.

The body state machine (Content-Length, chunk-size line, chunk data, CRLF, trailers) is
`BodyFramer`'s, shared with `RequestIndex`, here with status 502 for every error, no body limit,
and its lenient rules (see `_body`). Read-until-close and the end of the connection are this
index's own states.
"""

from __future__ import annotations

import re
from collections import deque

from . import _abnf
from ._body import (
    CHUNK_SIZE,
    HEAD,
    LENGTH,
    NO_FIELDS,
    NO_RANGES,
    TRAILERS,
    BodyFramer,
    FramedMessage,
)
from ._buffer import SeekableBuffer
from ._errors import ProtocolError
from ._fields import Head, check_partial_head, field_lines, keep_alive
from ._limits import Limits
from ._memo import remember

__all__ = ["FramedResponse", "ResponseHead", "ResponseIndex", "parse_response_head"]

_HEAD_CACHE_SIZE = 256
_REPEAT_MAX = 4096  # the repeat fast path keeps a copy of responses up to this size
_BAD_GATEWAY = 502

# Framing states of this index's own, after the body framer's.
_UNTIL_CLOSE, _DONE = TRAILERS + 1, TRAILERS + 2

# A whole response head validated in one C-speed match: the status line, field lines, CRLF.
_RESPONSE_HEAD = re.compile(
    _abnf.STATUS_LINE.pattern + rb"(?:" + _abnf.FIELD_LINE.pattern + rb")*\r\n"
)
_NO_BODY_STATUS = frozenset({204, 304})


class ResponseHead(Head):
    """A parsed response head. Shared between identical heads: treat it as immutable.

    Attributes:
        status: the status code. reason: the reason phrase (bytes, may be empty).
        http_version: ``b"1.1"`` or ``b"1.0"``.
        headers: ``(lowercased name, value)`` pairs in the order received.
        content_length: the Content-Length, or None.
        chunked: the final transfer coding is chunked.
        until_close: a Transfer-Encoding other than chunked (the body runs to the close).
        keep_alive: the connection stays open after this response (RFC 9112 §9.3).
    """

    __slots__ = (
        "chunked",
        "content_length",
        "keep_alive",
        "reason",
        "status",
        "until_close",
    )

    def __init__(
        self,
        status: int,
        reason: bytes,
        http_version: bytes,
        headers: tuple[tuple[bytes, bytes], ...],
        content_length: int | None,
        chunked: bool,
        until_close: bool,
        keep_alive: bool,
    ) -> None:
        self.status = status
        self.reason = reason
        self.http_version = http_version
        self.headers = headers
        self.content_length = content_length
        self.chunked = chunked
        self.until_close = until_close
        self.keep_alive = keep_alive

    def __repr__(self) -> str:
        version = self.http_version.decode()
        return f"ResponseHead({self.status}, HTTP/{version}, {len(self.headers)} fields)"


def parse_response_head(head: bytes, limits: Limits | None = None) -> ResponseHead:
    """Parse `head`: the status line and field lines through the blank line's CRLF.

    Raises `ProtocolError` (status hint 502) naming what is wrong.
    """
    limits = limits or Limits()
    m = _RESPONSE_HEAD.fullmatch(head)
    if m is None:
        _diagnose(head)
    assert m is not None
    major, minor, code, reason = m.group(1, 2, 3, 4)
    if major != b"1" or minor not in (b"0", b"1"):
        raise ProtocolError(
            f"HTTP version {(major + b'.' + minor).decode()} not supported", _BAD_GATEWAY
        )
    status = int(code)
    if status < 100:
        raise ProtocolError(f"status code {code.decode()} is below 100", _BAD_GATEWAY)
    headers = field_lines(head, m.end(4) + 2, limits.max_headers, _BAD_GATEWAY)
    http11 = minor == b"1"
    content_length: int | None = None
    coding = b""
    connection = b""
    for name, value in headers:
        if name == b"content-length":
            if content_length is not None:
                raise ProtocolError("repeated Content-Length", _BAD_GATEWAY)
            if not value.isdigit() or not value.isascii() or len(value) > 18:
                raise ProtocolError(
                    f"Content-Length {value[:40]!r} is not a decimal number", _BAD_GATEWAY
                )
            content_length = int(value)
        elif name == b"transfer-encoding":
            coding = value if not coding else coding + b"," + value
        elif name == b"connection":
            connection = value if not connection else connection + b"," + value
    chunked = until_close = False
    if coding:
        if content_length is not None:
            raise ProtocolError("both Transfer-Encoding and Content-Length", _BAD_GATEWAY)
        codings = [c.strip().lower() for c in coding.split(b",")]
        if not all(codings):
            raise ProtocolError(f"empty transfer coding in {coding[:80]!r}", _BAD_GATEWAY)
        if codings.count(b"chunked") > 1:
            raise ProtocolError("chunked applied more than once", _BAD_GATEWAY)
        if codings[-1] == b"chunked":
            if len(codings) > 1:
                raise ProtocolError(
                    f"transfer codings {coding[:80]!r} are not implemented", _BAD_GATEWAY
                )
            chunked = True
        elif b"chunked" in codings:
            raise ProtocolError("chunked is not the final transfer coding", _BAD_GATEWAY)
        else:
            until_close = True
    return ResponseHead(
        status,
        reason,
        b"1.1" if http11 else b"1.0",
        headers,
        content_length,
        chunked,
        until_close,
        keep_alive(connection, http11),
    )


def _diagnose(head: bytes) -> None:
    """Name what makes `head` malformed (the slow path: only for heads that failed)."""
    if b"\x00" in head:
        raise ProtocolError("NUL byte in response head", _BAD_GATEWAY)
    lines = head.split(b"\r\n")
    for i, line in enumerate(lines):
        if b"\r" in line or b"\n" in line:
            raise ProtocolError(f"bare CR or LF in line {i + 1} of the response head", _BAD_GATEWAY)
    if not _abnf.STATUS_LINE.fullmatch(lines[0] + b"\r\n"):
        raise ProtocolError(f"malformed status line {lines[0][:100]!r}", _BAD_GATEWAY)
    for line in lines[1:-2]:
        if not _abnf.FIELD_LINE.fullmatch(line + b"\r\n"):
            raise ProtocolError(f"malformed field line {line[:100]!r}", _BAD_GATEWAY)
    raise ProtocolError("malformed response head", _BAD_GATEWAY)


class FramedResponse(FramedMessage):
    """One response found in the stream, by absolute offsets into its buffer.

    Attributes:
        seq: the index of its request on the connection, from 0.
        method: the method of the request it answers.
        start, head_end: the final head is at [start, head_end) (interim 1xx heads before it
            are skipped).
        head: the parsed head.
        body: the body framed so far, as absolute ``[start, end)`` ranges in order (empty for
            no body). Grows while the response is incomplete.
        body_framed: body bytes framed so far.
        trailers: a chunked body's trailer fields, ``(lowercased name, value)``.
        end: absolute offset just past the response, or None while it is incomplete.
    """

    __slots__ = ("head", "method")

    def __init__(
        self,
        seq: int,
        method: bytes,
        start: int,
        head_end: int,
        head: ResponseHead,
        end: int | None,
    ) -> None:
        self.seq = seq
        self.method = method
        self.start = start
        self.head_end = head_end
        self.head = head
        self.body: list[tuple[int, int]] = NO_RANGES
        self.body_framed = 0
        self.trailers: list[tuple[bytes, bytes]] = NO_FIELDS
        self.end = end

    def __repr__(self) -> str:
        return (
            f"FramedResponse(seq={self.seq}, {self.method!r} -> {self.head.status}, "
            f"[{self.start}, {self.end}))"
        )


class _MethodRun:
    """`count` requests in a row with the same method, still awaiting their responses."""

    __slots__ = ("count", "method")

    def __init__(self, method: bytes, count: int) -> None:
        self.method = method
        self.count = count


class ResponseIndex(BodyFramer[FramedResponse]):
    """Frames the responses arriving in `buffer`; call `expect()` per request sent, `advance()`
    after each write, and `eof()` when the peer closes.

    Args:
        buffer: the receive buffer the responses arrive in.
        limits: `max_head_size`, `max_headers` and `max_chunk_line` apply (a response body is
            framed and released, never held, so `max_body_size` does not).
    """

    def __init__(self, buffer: SeekableBuffer, limits: Limits | None = None) -> None:
        super().__init__(
            buffer, status=_BAD_GATEWAY, fields_status=_BAD_GATEWAY, body_status=None, strict=False
        )
        self.limits = limits or Limits()
        if self.limits.max_head_size > buffer.capacity:
            raise ValueError(
                f"max_head_size {self.limits.max_head_size} exceeds the buffer capacity "
                f"{buffer.capacity}: a head of that size could never be framed"
            )
        self.error: ProtocolError | None = None
        self.framed = 0  # final responses whose heads were framed
        self.completed = 0  # final responses complete
        self.interim = 0  # 1xx interim responses skipped
        self.closed = False  # eof() was called
        self._methods: deque[_MethodRun] = deque()  # runs of one method, in request order
        self._pending = 0
        self._cache: dict[bytes, ResponseHead] = {}
        self.statuses: dict[int, int] = {}  # completed final responses by status code
        # The last small response framed whole, for the repeat fast path (see `_heads`):
        self._rep: bytes | None = None
        self._rep_method = b""
        self._rep_head: ResponseHead | None = None
        self._rep_head_len = 0

    # -- the request side ------------------------------------------------------------------

    def expect(self, method: bytes, count: int = 1) -> None:
        """Note that `count` more requests with `method` were sent (in order)."""
        if count <= 0:
            if count == 0:
                return
            raise ValueError(f"count must not be negative, got {count}")
        methods = self._methods
        if methods and methods[-1].method == method:
            methods[-1].count += count
        else:
            methods.append(_MethodRun(method, count))
        self._pending += count

    @property
    def pending(self) -> int:
        """Requests expected whose responses have not begun (their heads are not framed)."""
        return self._pending

    @property
    def unanswered(self) -> int:
        """Requests whose responses are not complete: `pending` plus one partly received."""
        return self._pending + (self._current is not None)

    @property
    def current(self) -> FramedResponse | None:
        """The response whose body or trailers are still arriving, if any."""
        return self._current

    @property
    def position(self) -> int:
        """Absolute offset up to which the stream has been framed; bytes before it may be
        released (after the consumer has looked at any body it wants)."""
        return self._pos

    @property
    def at_boundary(self) -> bool:
        """True when no response is partly framed."""
        return self._state in (HEAD, _DONE) and self._pos == self.buffer.tail

    @property
    def done(self) -> bool:
        """True once a response ended the connection: nothing more will be framed."""
        return self._state == _DONE

    # -- framing ---------------------------------------------------------------------------

    def advance(self) -> list[FramedResponse]:
        """Frame what arrived since the last call; returns the final responses whose heads are
        new (a returned response may still be incomplete: it stays `current`, and later calls
        extend its `body` and finally set its `end`). On a protocol error, returns those framed
        before it and sets `error`.
        """
        out: list[FramedResponse] = []
        if self.error is not None:
            return out
        try:
            self._advance(out)
        except ProtocolError as e:
            self.error = e
        return out

    def tally(self) -> int:
        """Frame what arrived like `advance()`, but hand out nothing: returns how many responses
        completed (their statuses are counted in `statuses`). For consumers that only count,
        like a load generator: responses framed whole are never made into objects. A response
        still arriving is `current`, as with `advance()`.
        """
        if self.error is not None:
            return 0
        before = self.completed
        try:
            self._advance(None)
        except ProtocolError as e:
            self.error = e
        return self.completed - before

    def eof(self) -> list[FramedResponse]:
        """The peer closed: frame what is left, and end a read-until-close response.

        Returns the responses whose heads are new, like `advance()`. A response cut short (a
        partial head, a body shorter than its Content-Length or chunks) sets `error`; requests
        never answered are left in `pending`.
        """
        out = self.advance()
        if self.closed or self.error is not None:
            self.closed = True
            return out
        self.closed = True
        state = self._state
        if state == _UNTIL_CLOSE:
            req = self._current
            assert req is not None
            self._finish(req)
            self._state = _DONE
        elif state != _DONE and not (state == HEAD and self._pos == self.buffer.tail):
            what = "head" if state == HEAD else "body"
            self.error = ProtocolError(
                f"connection closed in the middle of a response {what}", _BAD_GATEWAY
            )
        return out

    def _advance(self, out: list[FramedResponse] | None) -> None:
        tail = self.buffer.tail
        while True:
            state = self._state
            if state == HEAD:
                if not self._heads(out, tail):
                    return
            elif state == _UNTIL_CLOSE:
                self._until_close(tail)
                return
            elif state == _DONE:
                if tail > self._pos:
                    raise ProtocolError(
                        "bytes after a response that ended the connection", _BAD_GATEWAY
                    )
                return
            elif not self._frame_body(tail):
                return

    def _heads(self, out: list[FramedResponse] | None, tail: int) -> bool:
        """Frame consecutive heads, and Content-Length bodies already here (the hot path).

        False when the next head is incomplete; True when a body or an end state takes over.
        `out` None: tally only (no objects for responses framed whole).

        The repeat fast path: servers answer a pipelined batch of identical requests with
        identical responses. After a small response is framed whole, the bytes that follow are
        compared with it (C-speed ``startswith``, many copies at once); equal bytes answering
        the same method frame exactly the same way, so a run of k repeats costs one compare.
        """
        buf = self.buffer
        blk = buf._block
        mv = buf._mv
        d = buf._delta
        max_head = self.limits.max_head_size
        cache = self._cache
        methods = self._methods
        statuses = self.statuses
        start = self._pos
        search = max(start, self._searched - 3)
        rep = self._rep
        try:
            while start < tail:
                if not self._pending:
                    raise ProtocolError("response bytes with no request outstanding", _BAD_GATEWAY)
                run = methods[0]
                method = run.method
                if rep is not None and method == self._rep_method:
                    size = len(rep)
                    k = min((tail - start) // size, run.count)
                    if k > 1 and not blk.startswith(rep * k, start - d):
                        k = 1
                    if k == 1 and not blk.startswith(rep, start - d):
                        k = 0
                    if k:
                        head = self._rep_head
                        assert head is not None
                        if run.count == k:
                            methods.popleft()
                        else:
                            run.count -= k
                        self._pending -= k
                        seq = self.framed
                        self.framed = seq + k
                        self.completed += k
                        statuses[head.status] = statuses.get(head.status, 0) + k
                        if out is not None:
                            hl = self._rep_head_len
                            for i in range(k):
                                a = start + i * size
                                r = FramedResponse(seq + i, method, a, a + hl, head, a + size)
                                if size > hl:
                                    r.body = [(a + hl, a + size)]
                                    r.body_framed = size - hl
                                out.append(r)
                        start = search = start + k * size
                        continue
                e = blk.find(b"\r\n\r\n", search - d, min(tail, start + max_head) - d)
                if e < 0:
                    self._head_incomplete(start, tail)
                    self._pos = start
                    return False
                head_end = e + 4 + d
                raw = mv[start - d : e + 4].tobytes()
                head = cache.get(raw)
                if head is None:
                    head = remember(
                        cache, raw, parse_response_head(raw, self.limits), _HEAD_CACHE_SIZE
                    )
                status = head.status
                if status < 200:
                    if status == 101:
                        raise ProtocolError(
                            "101 Switching Protocols: the connection left HTTP/1.1",
                            _BAD_GATEWAY,
                        )
                    self.interim += 1
                    start = search = head_end
                    continue
                if run.count == 1:
                    methods.popleft()
                else:
                    run.count -= 1
                self._pending -= 1
                seq = self.framed
                self.framed = seq + 1
                if method == b"HEAD" or status in _NO_BODY_STATUS:
                    length: int | None = 0
                elif method == b"CONNECT" and status < 300:
                    raise ProtocolError("a tunnel (2xx to CONNECT) is not supported", _BAD_GATEWAY)
                elif head.chunked or head.until_close:
                    length = None
                else:
                    length = head.content_length
                if length is not None and head_end + length <= tail and head.keep_alive:
                    end = head_end + length  # the whole response is here: frame it at once
                    if out is not None:
                        r = FramedResponse(seq, method, start, head_end, head, end)
                        if length:
                            r.body = [(head_end, end)]
                            r.body_framed = length
                        out.append(r)
                    self.completed += 1
                    statuses[status] = statuses.get(status, 0) + 1
                    if end - start <= _REPEAT_MAX:
                        rep = self._rep = raw if not length else mv[start - d : end - d].tobytes()
                        self._rep_method = method
                        self._rep_head = head
                        self._rep_head_len = head_end - start
                    start = search = end
                    continue
                r = FramedResponse(seq, method, start, head_end, head, None)
                if out is not None:
                    out.append(r)
                self._current = r
                self._pos = self._searched = head_end
                if length == 0:  # no body, and the connection ends here
                    self._finish(r)
                    return True
                r.body = []
                if length is not None:
                    self._remaining = length
                    self._state = LENGTH
                elif head.chunked:
                    self._state = CHUNK_SIZE
                else:
                    self._state = _UNTIL_CLOSE
                return True
            self._pos = self._searched = start
            return False
        except ProtocolError:
            self._pos = start
            raise

    def _head_incomplete(self, start: int, tail: int) -> None:
        """No blank line yet: enforce the head limit, and fail fast on bare LF endings."""
        buf = self.buffer
        scan_from = max(start, self._searched - 3)
        max_head = self.limits.max_head_size
        check_partial_head(
            buf, start, scan_from, tail, max_head, "response", _BAD_GATEWAY, _BAD_GATEWAY
        )
        n = min(5, tail - start)
        if buf.scan_bytes(start, start + n) != b"HTTP/"[:n]:  # garbage: fail fast
            raise ProtocolError(
                f"malformed status line {buf.scan_bytes(start, min(tail, start + 40))!r}",
                _BAD_GATEWAY,
            )
        self._searched = tail

    def _until_close(self, tail: int) -> None:
        req = self._current
        assert req is not None
        start = self._pos
        if tail > start:
            req.body.append((start, tail))
            req.body_framed += tail - start
            self._pos = tail

    def _finish(self, req: FramedResponse) -> None:
        super()._finish(req)
        self.completed += 1
        status = req.head.status
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if not req.head.keep_alive:
            self._state = _DONE
