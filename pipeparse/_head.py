"""Request head parsing: one pure function from the bytes of a head to a `RequestHead`.

Strategy: a head is validated whole by one compiled regex (`_abnf.HEAD`, C speed); its fields are
then pulled out with `findall`, which cannot go wrong on a head that already matched. Only a head
that fails goes through `_diagnose`, a slow line-by-line pass that names what is wrong. Framing
fields (Content-Length, Transfer-Encoding) are interpreted here, strictly (RFC 9112 §6):

- Transfer-Encoding with Content-Length: 400.
- Transfer-Encoding must be exactly ``chunked``: a known coding before it (``gzip, chunked``)
  or an unknown coding is 501 (pipeparse decodes no content codings), a list whose final coding
  is not chunked is 400, and so is Transfer-Encoding on an HTTP/1.0 request.
- Content-Length is 1*DIGIT (20 digits at most) and appears once: a repeated Content-Length is
  rejected even when the values are identical (RFC 9112 §6.3 allows either; one rule is simpler
  to audit), and so is a list (``5, 5``).
- HTTP/1.1 needs exactly one Host; HTTP/1.0 may omit it but not repeat it. Its value is
  ``uri-host [ ":" port ]`` or empty (RFC 9110 §7.2); anything else is 400.
- The request-target has the form its method allows (RFC 9112 §3.2): origin-form (``/...``)
  or absolute-form (``http://host/...``, no userinfo) for any method but CONNECT, the asterisk
  form ``*`` only for OPTIONS, the authority form ``host:port`` only for CONNECT (and CONNECT
  only with it). An absolute-form target whose authority differs from Host is accepted: the
  target wins (RFC 9112 §3.2.2).
- Transfer-Encoding over several field lines is one list (RFC 9110 §5.3).
- Only HTTP/1.0 and HTTP/1.1 are served: any other version is 505.
"""

from __future__ import annotations

import ipaddress

from . import _abnf
from ._errors import ProtocolError
from ._fields import Head, field_lines, keep_alive
from ._limits import Limits

__all__ = ["RequestHead", "check_host", "check_target", "parse_request_head"]

_KNOWN_CODINGS = frozenset({b"gzip", b"x-gzip", b"deflate", b"compress", b"x-compress"})
# Content-Length digits accepted (leading zeros included): 20 digits hold any 64-bit length.
_MAX_LENGTH_DIGITS = 20


class RequestHead(Head):
    """A parsed request head. Shared between identical heads: treat it as immutable.

    Attributes:
        method, target: as sent (bytes).
        http_version: ``b"1.1"`` or ``b"1.0"``.
        headers: ``(lowercased name, value)`` pairs in the order sent.
        content_length: the body length, or None when there is no Content-Length.
        chunked: True for ``Transfer-Encoding: chunked``.
        keep_alive: whether the connection may stay open after this request (RFC 9112 §9.3).
        expect_continue: the request carries ``Expect: 100-continue``.
        websocket: an HTTP/1.1 GET asking to switch to WebSocket (``Upgrade: websocket`` and
            ``Connection: upgrade``, RFC 6455 §4.2.1). Whether it is valid is the WebSocket
            handshake's business; whether the server switches is its own (`RequestIndex`).
    """

    __slots__ = (
        "chunked",
        "content_length",
        "expect_continue",
        "keep_alive",
        "method",
        "target",
        "websocket",
    )

    def __init__(
        self,
        method: bytes,
        target: bytes,
        http_version: bytes,
        headers: tuple[tuple[bytes, bytes], ...],
        content_length: int | None,
        chunked: bool,
        keep_alive: bool,
        expect_continue: bool,
        websocket: bool = False,
    ) -> None:
        self.method = method
        self.target = target
        self.http_version = http_version
        self.headers = headers
        self.content_length = content_length
        self.chunked = chunked
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.websocket = websocket

    def __repr__(self) -> str:
        return (
            f"RequestHead({self.method!r}, {self.target!r}, HTTP/{self.http_version.decode()}, "
            f"{len(self.headers)} fields)"
        )


_HEAD_MATCH = _abnf.HEAD.fullmatch
_HOST = _abnf.HOST.fullmatch
_AUTHORITY_FORM = _abnf.AUTHORITY_FORM.fullmatch
_ABSOLUTE_FORM = _abnf.ABSOLUTE_FORM.fullmatch
_FRAMING_NAMES = frozenset(
    {b"host", b"content-length", b"transfer-encoding", b"connection", b"expect", b"upgrade"}
)


def parse_request_head(head: bytes, limits: Limits) -> RequestHead:
    """Parse `head`: the request line and field lines through the blank line's CRLF.

    Raises `ProtocolError` (400, 414, 431, 501 or 505) naming what is wrong.
    """
    m = _HEAD_MATCH(head)
    if m is None:
        _diagnose(head)
        raise ProtocolError("malformed request head")  # _diagnose always raises first
    method, target, major, minor = m.groups()
    if len(target) > limits.max_target_size:
        raise ProtocolError(
            f"request-target of {len(target)} bytes exceeds the limit of {limits.max_target_size}",
            414,
        )
    if major != b"1" or minor not in (b"0", b"1"):
        raise ProtocolError(f"HTTP version {(major + b'.' + minor).decode()} not supported", 505)
    headers = field_lines(head, m.end(4) + 2, limits.max_headers, 431)
    http11 = minor == b"1"
    content_length: int | None = None
    chunked = False
    hosts = 0
    transfer_codings: list[bytes] = []
    connection = b""
    expect_continue = False
    upgrade = b""
    for name, value in headers:
        if name not in _FRAMING_NAMES:
            continue
        if name == b"host":
            hosts += 1
            check_host(value)
        elif name == b"content-length":
            if content_length is not None:
                raise ProtocolError("repeated Content-Length")
            if not value.isdigit() or not value.isascii():
                raise ProtocolError(f"Content-Length {value[:64]!r} is not a decimal number")
            if len(value) > _MAX_LENGTH_DIGITS:  # also keeps int() within its digit limit
                raise ProtocolError(
                    f"Content-Length of {len(value)} digits (at most {_MAX_LENGTH_DIGITS})"
                )
            content_length = int(value)
        elif name == b"transfer-encoding":
            transfer_codings.append(value)
        elif name == b"connection":
            connection = value if not connection else connection + b"," + value
        elif name == b"upgrade":
            upgrade = value if not upgrade else upgrade + b"," + value
        elif value.lower() == b"100-continue":
            expect_continue = True
    if transfer_codings:
        chunked = _is_chunked(b",".join(transfer_codings))
        if content_length is not None:
            raise ProtocolError("both Transfer-Encoding and Content-Length")
        if not http11:
            raise ProtocolError("Transfer-Encoding in an HTTP/1.0 request")
    if hosts != 1 and (http11 or hosts > 1):
        raise ProtocolError("missing Host" if hosts == 0 else "repeated Host")
    check_target(method, target)
    if content_length is not None and content_length > limits.max_body_size:
        raise ProtocolError(
            f"Content-Length {content_length} exceeds the body limit of {limits.max_body_size}",
            413,
        )
    return RequestHead(
        method,
        target,
        b"1.1" if http11 else b"1.0",
        headers,
        content_length,
        chunked,
        keep_alive(connection, http11),
        expect_continue,
        bool(upgrade) and http11 and method == b"GET" and _asks_websocket(connection, upgrade),
    )


def _asks_websocket(connection: bytes, upgrade: bytes) -> bool:
    """``Connection`` lists ``upgrade`` and ``Upgrade`` lists ``websocket`` (case-insensitive
    tokens; a protocol version such as ``websocket/13`` is not the RFC 6455 handshake)."""
    return _has_token(connection, b"upgrade") and _has_token(upgrade, b"websocket")


def _has_token(value: bytes, token: bytes) -> bool:
    return any(t.strip().lower() == token for t in value.split(b","))


def _is_chunked(value: bytes) -> bool:
    """Check the Transfer-Encoding list (every field line's values joined with commas): True for
    exactly ``chunked``, else a `ProtocolError` naming the rule it breaks."""
    codings = [c.strip().lower() for c in value.split(b",")]
    if codings == [b"chunked"]:
        return True
    names = []
    for coding in codings:
        name = coding.split(b";", 1)[0].strip()
        if not name:
            raise ProtocolError(f"empty transfer coding in {value!r}")
        if name != b"chunked" and name not in _KNOWN_CODINGS:
            raise ProtocolError(f"unknown transfer coding {name!r}", 501)
        names.append(name)
    if names.count(b"chunked") > 1:
        raise ProtocolError("chunked applied more than once (RFC 9112 §7)")
    if b"chunked" in names[:-1]:
        raise ProtocolError("chunked is not the final transfer coding (RFC 9112 §6.3)")
    if codings[-1] != b"chunked":
        if names[-1] == b"chunked":
            raise ProtocolError(f"chunked takes no parameters: {codings[-1]!r}")
        raise ProtocolError(
            f"final transfer coding is {codings[-1]!r}, not chunked (RFC 9112 §6.3)"
        )
    raise ProtocolError(f"transfer codings {value!r} are not implemented", 501)


def check_host(value: bytes) -> None:
    """A Host value is ``uri-host [ ":" port ]`` or empty (RFC 9110 §7.2), else 400."""
    m = _HOST(value)
    if m is None:
        raise ProtocolError(f"invalid Host {value[:100]!r}")
    if m.group(1) is not None:
        _check_ipv6(m.group(1), value)


def check_target(method: bytes, target: bytes) -> None:
    """The request-target has a form `method` allows (RFC 9112 §3.2), else 400.

    Origin form first: it is nearly every request, and one byte tells it.
    """
    if target[:1] == b"/":
        if method == b"CONNECT":
            raise ProtocolError("CONNECT needs an authority-form target (host:port)")
        return
    if target == b"*":
        if method != b"OPTIONS":
            raise ProtocolError(f"the asterisk form (*) is only for OPTIONS, not {method!r}")
        return
    if method == b"CONNECT":
        m = _AUTHORITY_FORM(target)
        if m is None:
            raise ProtocolError(f"CONNECT target {target[:100]!r} is not host:port")
        if m.group(1) is not None:
            _check_ipv6(m.group(1), target)
        return
    m = _ABSOLUTE_FORM(target)
    if m is None:
        raise ProtocolError(
            f"request-target {target[:100]!r} is neither origin-form (/path) nor absolute-form"
            " (scheme://host/path); the authority form (host:port) is only for CONNECT"
        )
    authority = m.group(1)
    if b"@" in authority:
        raise ProtocolError(f"userinfo in the request-target {target[:100]!r} (RFC 9110 §4.2.4)")
    host = _HOST(authority)
    if host is None or authority[:1] in (b"", b":"):
        raise ProtocolError(f"invalid authority in the request-target {target[:100]!r}")
    if host.group(1) is not None:
        _check_ipv6(host.group(1), target)


def _check_ipv6(literal: bytes, where: bytes) -> None:
    try:
        ipaddress.IPv6Address(literal.decode("ascii"))
    except ValueError:
        raise ProtocolError(f"invalid IPv6 literal in {where[:100]!r}") from None


def _diagnose(head: bytes) -> None:
    """Name what makes `head` malformed (the slow path: only for heads that failed)."""
    if b"\x00" in head:
        raise ProtocolError("NUL byte in request head")
    lines = head.split(b"\r\n")
    for i, line in enumerate(lines):
        if b"\r" in line:
            raise ProtocolError(f"bare CR in line {i + 1} of the head")
        if b"\n" in line:
            raise ProtocolError(f"bare LF in line {i + 1} of the head (lines must end in CRLF)")
    if not _abnf.REQUEST_LINE.fullmatch(lines[0] + b"\r\n"):
        raise ProtocolError(f"malformed request line {lines[0][:100]!r}")
    for line in lines[1:-2]:
        if line[:1] in (b" ", b"\t"):
            raise ProtocolError("obs-fold (a field line starting with whitespace)")
        name, colon, _ = line.partition(b":")
        if not colon:
            raise ProtocolError(f"field line without a colon: {line[:100]!r}")
        if name.rstrip(b" \t") != name:
            raise ProtocolError(f"whitespace between field name and colon: {name[:100]!r}")
        if not _abnf.TOKEN.fullmatch(name):
            raise ProtocolError(f"invalid field name {name[:100]!r}")
        if not _abnf.FIELD_LINE.fullmatch(line + b"\r\n"):
            raise ProtocolError(f"invalid characters in the value of field {name[:100]!r}")
    raise ProtocolError("malformed request head")
