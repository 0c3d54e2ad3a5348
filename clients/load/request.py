"""The request a load run sends, rendered once: URL parsing, header checks, the exact bytes.

Strategy: every request of a run is the same, so it is rendered to bytes once and a connection
sends it repeated (a depth-16 batch is one ``send`` of 16 copies). Everything a user gives is
checked here, with a clear error, so that no request the client sends is malformed: the method is
a token, header names are tokens and values valid field values (RFC 9110 §5), and the framing
headers (Content-Length, Transfer-Encoding) are the client's own: the body sets them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["Target", "parse_header", "parse_url", "render_request"]

_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(
    rb"(?:[\x21-\x7e\x80-\xff](?:[\t \x21-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?"
)
_DEFAULT_PORTS = {"http": 80, "https": 443}
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
# Methods whose requests carry Content-Length even with an empty body (RFC 9110 §8.6).
_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})


@dataclass(frozen=True, slots=True)
class Target:
    """Where a URL points: the address to connect to and what goes in the request."""

    host: str
    port: int
    authority: str  # the Host field value
    target: str  # the request-target (origin form)
    tls: bool = False  # an https:// URL


def parse_url(url: str) -> Target:
    """Split an ``http(s)://host[:port]/path?query`` URL; raises ValueError with the reason."""
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS:
        raise ValueError(f"only http:// and https:// URLs are supported, got {url!r}")
    default_port = _DEFAULT_PORTS[parts.scheme]
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    try:
        port = parts.port or default_port
    except ValueError as e:
        raise ValueError(f"bad port in {url!r}: {e}") from None
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"credentials in the URL are not supported: {url!r}")
    host = parts.hostname
    if not host.isascii():
        host = host.encode("idna").decode("ascii")
    shown = f"[{host}]" if ":" in host else host
    authority = shown if port == default_port else f"{shown}:{port}"
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    if any(c <= " " or c > "~" for c in target):
        raise ValueError(f"the request target {target!r} has spaces or non-ASCII characters")
    return Target(host, port, authority, target, tls=parts.scheme == "https")


def render_request(
    method: str,
    target: Target,
    headers: list[tuple[str, str]],
    body: bytes,
) -> bytes:
    """The bytes of one request: request line, Host, the user's fields, framing, body."""
    m = method.encode("ascii", "replace")
    if not _TOKEN.fullmatch(m):
        raise ValueError(f"invalid method {method!r}")
    lines = [b"%s %s HTTP/1.1\r\n" % (m, target.target.encode("ascii"))]
    fields: list[bytes] = []
    has_host = False
    for name, value in headers:
        n = name.encode("latin-1", "replace")
        try:
            v = value.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"header {name!r}: the value is not Latin-1") from None
        if not _TOKEN.fullmatch(n):
            raise ValueError(f"invalid header name {name!r}")
        v = v.strip(b" \t")
        if not _FIELD_VALUE.fullmatch(v):
            raise ValueError(f"header {name!r}: invalid characters in the value {value!r}")
        low = n.lower()
        if low in _FRAMING:
            raise ValueError(
                f"header {name!r} is set by the client from the body (--body-size/--body-file)"
            )
        if low == b"host":
            if has_host:
                raise ValueError("Host given more than once")
            has_host = True
        fields.append(b"%s: %s\r\n" % (n, v))
    if not has_host:
        lines.append(b"Host: %s\r\n" % target.authority.encode("ascii"))
    lines.extend(fields)
    if body or m in _BODY_METHODS:
        lines.append(b"Content-Length: %d\r\n" % len(body))
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)


def parse_header(text: str) -> tuple[str, str]:
    """``'Name: value'`` from the command line, as a pair; raises ValueError."""
    name, colon, value = text.partition(":")
    if not colon or not name:
        raise ValueError(f"header {text!r} is not of the form 'Name: value'")
    if name != name.strip():
        raise ValueError(f"header {text!r}: whitespace around the name")
    return name, value.strip()
