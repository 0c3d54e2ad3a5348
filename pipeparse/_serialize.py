"""Response heads, rendered for the wire: status lines precomputed once, one join per head.

`ResponseFraming` decides how a response body is delimited (RFC 9112 §6.3): no body for HEAD,
1xx, 204 and 304; Content-Length when the length is known (the app said so, or its first write is
also its last); otherwise chunked on HTTP/1.1, or delimited by closing the connection on
HTTP/1.0. The app's own framing fields (Content-Length aside) are replaced by the server's, and
every field the app gives is checked, so an app can never split a response (no CR, LF or NUL
in values, token names).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from email.utils import formatdate
from http import HTTPStatus

from ._memo import remember

__all__ = [
    "CONTINUE_100",
    "LAST_CHUNK",
    "HttpDate",
    "ResponseFraming",
    "chunk",
    "render_error",
    "render_head",
    "status_line",
]

_STATUS_LINES: dict[int, bytes] = {
    s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus
}
CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"

_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+").fullmatch
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]|^[ \t]|[ \t]$").search
_DROPPED = frozenset({b"transfer-encoding", b"date", b"server"})


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <reason>\\r\\n`` (precomputed for every known status)."""
    line = _STATUS_LINES.get(status)
    if line is None:
        if not 100 <= status <= 999:
            raise ValueError(f"invalid status code {status}")
        line = b"HTTP/1.1 %d \r\n" % status
    return line


class HttpDate:
    """The ``Date`` field value, formatted at most once a second."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = formatdate(now, usegmt=True).encode()
        return self._value


class ResponseFraming:
    """How one response's body is delimited; built by `render_head` (shared: read only).

    Attributes:
        send_body: False for HEAD, 1xx, 204, 304: body bytes are dropped.
        content_length: the promised length, or None.
        chunked: the body goes in chunks (then `chunk()` frames each piece).
        close: the connection must close after this response.
    """

    __slots__ = ("chunked", "close", "content_length", "send_body")

    def __init__(
        self, send_body: bool, content_length: int | None, chunked: bool, close: bool
    ) -> None:
        self.send_body = send_body
        self.content_length = content_length
        self.chunked = chunked
        self.close = close


def render_head(
    status: int,
    headers: Sequence[tuple[bytes, bytes]],
    *,
    method: bytes,
    http11: bool,
    keep_alive: bool,
    body_length: int | None,
    date: bytes,
    server: bytes,
) -> tuple[bytes, ResponseFraming]:
    """Render a response head and decide its framing.

    Args:
        status, headers: from the app (names are lowercased if they are not already).
        method: the request's method (HEAD gets no body).
        http11: the request was HTTP/1.1 (else 1.0).
        keep_alive: the connection may stay open after this response.
        body_length: the whole body's length when known now (the first write is the last).
        date, server: values for the Date and Server fields.
    Raises:
        ValueError: a field name or value that would corrupt the response.
    """
    if type(headers) is not tuple:
        headers = tuple(headers)  # once: an iterable of fields may be consumable only once
    fields_key: _FieldsKey | None
    key: tuple[object, ...] | None
    rendered: tuple[bytes, ResponseFraming] | None
    try:
        fields_key = (status, headers)
        key = (fields_key, method == b"HEAD", http11, keep_alive, body_length, date, server)
        rendered = _head_cache.get(key)
    except TypeError:  # unhashable fields (lists): check and render them every time
        fields_key = key = rendered = None
    if rendered is not None:
        return rendered
    checked = _checked_cache.get(fields_key) if fields_key is not None else None
    if checked is None:
        checked = _check_fields(status, headers)
        if fields_key is not None:
            remember(_checked_cache, fields_key, checked, _MEMO_SIZE)
    fields, app_length, app_close = checked
    close = app_close or not keep_alive
    no_body = status < 200 or status in (204, 304)
    send_body = not no_body and method != b"HEAD"
    length = app_length if app_length is not None else body_length
    chunked = False
    if no_body:
        length = None if status != 304 else app_length
    elif length is None:
        if http11:
            chunked = True
        else:
            close = True  # HTTP/1.0 without a length: the close delimits the body
    parts = [fields, b"date: ", date, b"\r\nserver: ", server]
    if length is not None:
        parts += (b"\r\ncontent-length: ", b"%d" % length)
    elif chunked:
        parts.append(b"\r\ntransfer-encoding: chunked")
    if close:
        parts.append(b"\r\nconnection: close\r\n\r\n")
    elif not http11:
        parts.append(b"\r\nconnection: keep-alive\r\n\r\n")
    else:
        parts.append(b"\r\n\r\n")
    rendered = b"".join(parts), ResponseFraming(send_body, length, chunked and send_body, close)
    if key is not None:
        remember(_head_cache, key, rendered, _MEMO_SIZE)
    return rendered


_TEXT_PLAIN = ((b"content-type", b"text/plain; charset=utf-8"),)


def render_error(
    status: int, message: str, *, date: bytes, server: bytes, head_only: bool = False
) -> bytes:
    """A complete error response that ends its connection: `status`, ``Connection: close``,
    and `message` and a newline as a text/plain body (only its head when `head_only`, for a
    HEAD request: the Content-Length the body would have)."""
    body = (message + "\n").encode("utf-8", "replace")
    head, _ = render_head(
        status,
        _TEXT_PLAIN,
        method=b"HEAD" if head_only else b"GET",
        http11=True,
        keep_alive=False,
        body_length=len(body),
        date=date,
        server=server,
    )
    return head if head_only else head + body


# Rendering is a pure function of its arguments, and servers render the same few heads over and
# over (within one second, one Date): both steps are memoised (`remember`, bounded).
_MEMO_SIZE = 512
_FieldsKey = tuple[int, tuple[tuple[bytes, bytes], ...]]
_head_cache: dict[tuple[object, ...], tuple[bytes, ResponseFraming]] = {}
_checked_cache: dict[_FieldsKey, tuple[bytes, int | None, bool]] = {}


def _check_fields(
    status: int, headers: Iterable[Sequence[bytes]]
) -> tuple[bytes, int | None, bool]:
    """Status line and the app's fields, checked and rendered; its Content-Length; close?"""
    parts = [status_line(status)]
    app_length: int | None = None
    close = False
    for field in headers:
        name, value = field  # (any pair: an app may give lists)
        if not _TOKEN(name):
            raise ValueError(f"invalid response field name {name!r}")
        if _BAD_VALUE(value):
            raise ValueError(f"invalid value for response field {name!r}: {value!r}")
        lname = name.lower()
        if lname in _DROPPED:
            continue
        if lname == b"content-length":
            if not value.isdigit():
                raise ValueError(f"invalid Content-Length {value!r}")
            app_length = int(value)
            continue
        if lname == b"connection":
            close = close or b"close" in value.lower()
            continue
        parts += (name, b": ", value, b"\r\n")
    return b"".join(parts), app_length, close


def chunk(data: bytes | bytearray | memoryview) -> list[bytes | bytearray | memoryview]:
    """The pieces of one chunk of a chunked body (empty data makes no chunk)."""
    n = len(data)
    if not n:
        return []
    return [b"%x\r\n" % n, data, b"\r\n"]
