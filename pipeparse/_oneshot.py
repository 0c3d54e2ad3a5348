"""The one-shot API: every complete request in a byte string, framed and parsed."""

from __future__ import annotations

from dataclasses import dataclass, field

from ._buffer import SeekableBuffer
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


def parse_requests(data: bytes, limits: Limits | None = None) -> list[Request]:
    """Frame and parse every complete request in `data`, in order; an incomplete tail is ignored.

    Framing and parsing only: connection semantics (``Connection: close``) are the server's.
    Raises `ProtocolError` at the first malformed request; its `requests_before` lists the
    requests framed before it.
    """
    buf = SeekableBuffer(max(len(data), 1))
    buf.feed(data)
    index = RequestIndex(buf, limits)
    framed = index.advance()
    requests = [_whole(buf, r) for r in framed if r.end is not None]
    if index.error is not None:
        index.error.requests_before = requests
        raise index.error
    return requests


def _whole(buf: SeekableBuffer, r: FramedRequest) -> Request:
    h = r.head
    body = b"".join([buf.view(s, e) for s, e in r.body]) if r.body else b""
    # A copy of the trailers: requests without any share one empty list in the index.
    return Request(h.method, h.target, h.http_version, list(h.headers), body, list(r.trailers))
