"""What request heads and response heads share: field lines, Connection, and partial heads.

Strategy: plain functions over bytes that a head parser (`_head`, `_response`) or an index calls,
with the status hint of its side as a parameter (400/431 for requests, 502 for responses), so
both sides apply one rule with one set of messages. `Head` gives both head classes `get()`.
"""

from __future__ import annotations

from . import _abnf
from ._buffer import SeekableBuffer
from ._errors import ProtocolError

__all__ = ["Head", "check_partial_head", "field_lines", "keep_alive"]

_FIELDS = _abnf.FIELD_LINE.findall


class Head:
    """Base of `RequestHead` and `ResponseHead`: the field lines and the version."""

    __slots__ = ("headers", "http_version")

    headers: tuple[tuple[bytes, bytes], ...]
    http_version: bytes

    def get(self, name: bytes, default: bytes | None = None) -> bytes | None:
        """The first value of the (lowercase) field `name`, or `default`."""
        for n, v in self.headers:
            if n == name:
                return v
        return default


def field_lines(
    head: bytes, start: int, max_headers: int, status: int
) -> tuple[tuple[bytes, bytes], ...]:
    """The ``(lowercased name, value)`` fields of a head already validated whole, from `start`.

    More than `max_headers` is a `ProtocolError` with `status`.
    """
    fields = _FIELDS(head, start)
    if len(fields) > max_headers:
        raise ProtocolError(
            f"{len(fields)} header fields exceed the limit of {max_headers}", status
        )
    return tuple([(n.lower(), v) for n, v in fields])


def keep_alive(connection: bytes, http11: bool) -> bool:
    """Whether the connection persists (RFC 9112 §9.3), from the joined Connection values."""
    if not connection:
        return http11
    tokens = {t.strip().lower() for t in connection.split(b",")}
    return b"close" not in tokens and (http11 or b"keep-alive" in tokens)


def check_partial_head(
    buf: SeekableBuffer,
    start: int,
    scan_from: int,
    tail: int,
    max_head_size: int,
    what: str,
    status: int,
    limit_status: int,
) -> None:
    """A head from `start` has no blank line yet: enforce `max_head_size`, and fail on a bare LF
    in ``[scan_from, tail)`` (such a head would otherwise wait until the limit).

    `what` names the head in messages (``"request"``, ``"response"``).
    """
    if tail - start >= max_head_size:
        raise ProtocolError(
            f"{what} head exceeds {max_head_size} bytes without ending", limit_status
        )
    lf = buf.find(b"\n", scan_from, tail)
    while lf >= 0:
        if lf == start or buf.scan_bytes(lf - 1, lf) != b"\r":
            raise ProtocolError(f"bare LF line ending in {what} head (CRLF required)", status)
        lf = buf.find(b"\n", lf + 1, tail)
