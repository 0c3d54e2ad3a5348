"""The one-shot API: every complete request in a byte string, framed and parsed."""

from __future__ import annotations

from dataclasses import dataclass, field

from ._buffer import SeekableBuffer
from ._errors import ProtocolError
from ._index import FramedRequest, RequestIndex
from ._limits import Limits

__all__ = ["Request", "parse_requests"]


@dataclass(frozen=True, slots=True)
class Request:
    """A whole request: head, decoded body and trailers, all as bytes."""

    method: bytes
    target: bytes
    http_version: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)


def parse_requests(
    data: bytes, limits: Limits | None = None, *, allow_partial: bool = False
) -> list[Request]:
    """Frame and parse every request in `data`, a whole stream, in order.

    Framing and parsing only: connection semantics (``Connection: close``) are the server's.
    Raises `ProtocolError` at the first malformed request, and (400) when `data` ends inside a
    request, unless `allow_partial` is true: then a partial request at the end is left out.
    The error's `requests_before` lists the complete requests framed before it.
    """
    buf = SeekableBuffer(max(len(data), 1))
    buf.feed(data)
    index = RequestIndex(buf, limits)
    framed = index.advance()
    requests = [_whole(buf, r) for r in framed if r.end is not None]
    error = index.error
    if error is None and not allow_partial and not index.at_boundary:
        start = framed[-1].start if framed and framed[-1].end is None else index.position
        error = ProtocolError(
            f"the input ends inside a request ({len(data) - start} bytes from offset {start})"
        )
    if error is not None:
        error.requests_before = requests
        raise error
    return requests


def _whole(buf: SeekableBuffer, r: FramedRequest) -> Request:
    h = r.head
    body = b"".join([buf.view(s, e) for s, e in r.body]) if r.body else b""
    # A copy of the trailers: requests without any share one empty list in the index.
    return Request(h.method, h.target, h.http_version, list(h.headers), body, list(r.trailers))
