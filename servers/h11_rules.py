"""The core's rules where h11 has none: the h11 engine's request-head checks and response fields.

Strategy: h11 parses and frames; pipeparse's rules are stricter. `check_head` rejects what h11
accepts and the core does not (limits, control characters, both framings, a bad Host or
request-target, CONNECT), with the status the core would answer. `response_fields` turns an
app's fields into the ones h11 is given: framing is decided here (Content-Length when the
length is known, checked against the app's; none for 204; a GET's for HEAD and 304), the app's
Transfer-Encoding is dropped, and Date and Server are added unless the app set them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import h11

from pipeparse import Limits, ProtocolError
from pipeparse._head import check_host, check_target

__all__ = ["check_head", "response_fields"]

_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]").search


def check_head(event: h11.Request, limits: Limits) -> None:
    """What h11 accepts and pipeparse does not: raise `ProtocolError` for it."""
    if len(event.target) > limits.max_target_size:
        raise ProtocolError(
            f"request-target of {len(event.target)} bytes exceeds the limit of "
            f"{limits.max_target_size}",
            414,
        )
    check_target(event.method, event.target)
    if event.method == b"CONNECT":
        raise ProtocolError("CONNECT: this server does not tunnel", 501)
    headers = event.headers
    if len(headers) > limits.max_headers:
        raise ProtocolError(
            f"{len(headers)} header fields exceed the limit of {limits.max_headers}", 431
        )
    content_length = None
    chunked = False
    # h11 bounds only a head that arrives in pieces: measure one that came whole. The
    # size is rebuilt from the parsed fields (optional whitespace is not counted).
    head_size = len(event.method) + len(event.target) + 14
    for name, value in headers.raw_items():
        head_size += len(name) + len(value) + 4
        if _CONTROL(value):  # h11 lets controls other than CR, LF and NUL through
            raise ProtocolError(f"control character in the value of field {name!r}")
        if len(name) == 14 and name.lower() == b"content-length":
            content_length = int(value)
        elif len(name) == 17 and name.lower() == b"transfer-encoding":
            chunked = True
        elif len(name) == 4 and name.lower() == b"host":
            check_host(value)
    if head_size > limits.max_head_size:
        raise ProtocolError(
            f"request head of {head_size} bytes exceeds the limit of {limits.max_head_size}",
            431,
        )
    if chunked and content_length is not None:
        raise ProtocolError("both Transfer-Encoding and Content-Length")
    if content_length is not None and content_length > limits.max_body_size:
        raise ProtocolError(
            f"Content-Length {content_length} exceeds the body limit of {limits.max_body_size}",
            413,
        )


def response_fields(
    status: int,
    app_fields: Sequence[tuple[bytes, bytes]],
    *,
    head_request: bool,
    length: int | None,
    close: bool,
    date: Callable[[], bytes],
    server: bytes,
) -> list[tuple[bytes, bytes]]:
    """The fields of a response head for h11.

    Args:
        status, app_fields: the app's.
        head_request: the request was HEAD.
        length: the whole body's length when known now (the first send is the last).
        close: this response is the connection's last (``Connection: close``).
        date: gives the Date value (called only when the app set none).
        server: the Server value.
    Raises:
        RuntimeError: the app's Content-Length does not match the body it sent.
    """
    headers: list[tuple[bytes, bytes]] = []
    app_length: bytes | None = None
    has_date = has_server = False
    for name, value in app_fields:
        lname = name.lower()
        if lname == b"content-length":
            app_length = value
            continue
        if lname == b"transfer-encoding":
            continue
        if lname == b"date":
            has_date = True
        elif lname == b"server":
            has_server = True
        headers.append((name, value))
    if status == 204:
        pass  # never a Content-Length (RFC 9110 §8.6)
    elif status == 304 or head_request:
        # The fields a GET would get: the app's length, or the body it produced anyway.
        if app_length is not None:
            headers.append((b"content-length", app_length))
        elif head_request and length is not None:
            headers.append((b"content-length", b"%d" % length))
    elif length is not None:
        if app_length is not None and app_length.strip() != b"%d" % length:
            raise RuntimeError(
                f"the response's Content-Length {app_length!r} does not match its body of "
                f"{length} bytes"
            )
        headers.append((b"content-length", b"%d" % length))
    elif app_length is not None:
        headers.append((b"content-length", app_length))  # h11 holds the stream to it
    if close:
        headers.append((b"connection", b"close"))
    if not has_date:
        headers.append((b"date", date()))
    if not has_server:
        headers.append((b"server", server))
    return headers
