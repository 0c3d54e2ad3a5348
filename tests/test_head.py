"""parse_request_head: the request line, field lines and the framing fields, with every error's
status and message."""

from __future__ import annotations

import pytest

from pipeparse import Limits, ProtocolError, RequestHead, parse_request_head

LIMITS = Limits()


def head(*lines: bytes, request_line: bytes = b"GET / HTTP/1.1") -> bytes:
    return b"\r\n".join([request_line, *lines]) + b"\r\n\r\n"


def parse(raw: bytes, limits: Limits = LIMITS) -> RequestHead:
    return parse_request_head(raw, limits)


def reject(raw: bytes, status: int, message: str, limits: Limits = LIMITS) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_request_head(raw, limits)
    assert info.value.status_hint == status
    assert message in info.value.message, info.value.message
    return info.value


# -- request line -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", [b"GET", b"POST", b"M-SEARCH", b"get", b"X!#$%&'*+-.^_`|~9"])
@pytest.mark.parametrize(
    "target",
    [
        b"/",
        b"/a/b?c=d&e#f",
        b"http://example.com:80/x",
        b"https://example.com",
        b"http://example.com?q",
        b"http://[::1]:8080/",
        b"http://127.0.0.1/",
        b"HTTP+x.y-z://a/",
    ],
)
def test_request_line_forms(method: bytes, target: bytes) -> None:
    h = parse(head(b"Host: a", request_line=method + b" " + target + b" HTTP/1.1"))
    assert (h.method, h.target, h.http_version) == (method, target, b"1.1")


# -- request-target forms (RFC 9112 §3.2) -------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "status", "message"),
    [
        (b"OPTIONS * HTTP/1.1", None, ""),
        (b"GET * HTTP/1.1", 400, "the asterisk form (*) is only for OPTIONS"),
        (b"POST * HTTP/1.1", 400, "only for OPTIONS"),
        (b"OPTIONS ** HTTP/1.1", 400, "neither origin-form"),
        (b"CONNECT example.com:443 HTTP/1.1", None, ""),
        (b"CONNECT [::1]:443 HTTP/1.1", None, ""),
        (b"CONNECT 10.0.0.1:1 HTTP/1.1", None, ""),
        (b"CONNECT / HTTP/1.1", 400, "CONNECT needs an authority-form target"),
        (b"CONNECT * HTTP/1.1", 400, "the asterisk form (*) is only for OPTIONS"),
        (b"CONNECT http://a:1/ HTTP/1.1", 400, "is not host:port"),
        (b"CONNECT example.com HTTP/1.1", 400, "is not host:port"),  # the port is required
        (b"CONNECT example.com: HTTP/1.1", 400, "is not host:port"),
        (b"CONNECT a@b:443 HTTP/1.1", 400, "is not host:port"),
        (b"CONNECT [::1:443 HTTP/1.1", 400, "is not host:port"),
        (b"CONNECT [zz::1]:443 HTTP/1.1", 400, "is not host:port"),
        (b"CONNECT [1::2::3]:443 HTTP/1.1", 400, "invalid IPv6 literal"),
        (b"GET example.com:443 HTTP/1.1", 400, "only for CONNECT"),
        (b"GET example.com HTTP/1.1", 400, "neither origin-form"),
        (b"GET ?a HTTP/1.1", 400, "neither origin-form"),
        (b"GET http:/a HTTP/1.1", 400, "neither origin-form"),
        (b"GET urn:isbn:1 HTTP/1.1", 400, "neither origin-form"),
        (b"GET 1http://a/ HTTP/1.1", 400, "neither origin-form"),
        (b"GET http://user@a/ HTTP/1.1", 400, "userinfo in the request-target"),
        (b"GET http://u:p@a/ HTTP/1.1", 400, "userinfo"),
        (b"GET http:/// HTTP/1.1", 400, "invalid authority"),
        (b"GET http://:80/ HTTP/1.1", 400, "invalid authority"),
        (b"GET http://a:8x/ HTTP/1.1", 400, "invalid authority"),
        (b"GET http://[::1/ HTTP/1.1", 400, "invalid authority"),
        (b"GET http://[1::2::3]/ HTTP/1.1", 400, "invalid IPv6 literal"),
    ],
)
def test_target_forms(line: bytes, status: int | None, message: str) -> None:
    raw = head(b"Host: a", request_line=line)
    if status is None:
        assert parse(raw).target == line.split(b" ")[1]
    else:
        reject(raw, status, message)


def test_absolute_form_authority_may_differ_from_host() -> None:
    # RFC 9112 §3.2.2: the target wins; the Host field is accepted (and passed on) as sent.
    h = parse(head(b"Host: other.example", request_line=b"GET http://a.example/x HTTP/1.1"))
    assert (h.target, h.get(b"host")) == (b"http://a.example/x", b"other.example")


@pytest.mark.parametrize(
    "line",
    [
        b"GET  / HTTP/1.1",  # two spaces
        b"GET / HTTP/1.1 ",  # trailing space
        b"GET\t/ HTTP/1.1",  # tab
        b"G(T / HTTP/1.1",  # not a token
        b" GET / HTTP/1.1",
        b"GET / http/1.1",
        b"GET / HTTP/1",
        b"GET / HTTP/1.10",
        b"GET / HTTP/11",
        b"GET /\x80 HTTP/1.1",  # obs-text is not allowed in a target
        b"GET HTTP/1.1",
        b"/ HTTP/1.1",
    ],
)
def test_malformed_request_lines_are_400(line: bytes) -> None:
    reject(head(b"Host: a", request_line=line), 400, "malformed request line")


@pytest.mark.parametrize("version", [b"1.2", b"2.0", b"0.9", b"9.9", b"3.1"])
def test_other_versions_are_505(version: bytes) -> None:
    reject(
        head(b"Host: a", request_line=b"GET / HTTP/" + version),
        505,
        f"HTTP version {version.decode()} not supported",
    )


def test_http10_is_served() -> None:
    h = parse(head(request_line=b"GET / HTTP/1.0"))
    assert h.http_version == b"1.0"
    assert h.headers == ()


def test_target_limit_is_414() -> None:
    limits = Limits(max_target_size=10)
    assert parse(head(b"Host: a", request_line=b"GET /" + b"a" * 9 + b" HTTP/1.1"), limits)
    err = reject(
        head(b"Host: a", request_line=b"GET /" + b"a" * 10 + b" HTTP/1.1"),
        414,
        "request-target of 11 bytes exceeds the limit of 10",
        limits,
    )
    assert err.requests_before == []


# -- field lines ------------------------------------------------------------------------------


def test_fields_are_lowercased_trimmed_and_kept_in_order() -> None:
    h = parse(
        head(
            b"X-B: 2",
            b"Host: a",
            b"x-b:\t \t3 4\t5 \t",
            b"Empty:",
            b"OWS-Only: \t ",
            b"Obs: \x80\xff caf\xc3\xa9",
            b"Weird!#$%&'*+-.^_`|~: v",
        )
    )
    assert h.headers == (
        (b"x-b", b"2"),
        (b"host", b"a"),
        (b"x-b", b"3 4\t5"),
        (b"empty", b""),
        (b"ows-only", b""),
        (b"obs", b"\x80\xff caf\xc3\xa9"),
        (b"weird!#$%&'*+-.^_`|~", b"v"),
    )
    assert h.get(b"x-b") == b"2"
    assert h.get(b"missing") is None
    assert h.get(b"missing", b"d") == b"d"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"X : y", "whitespace between field name and colon"),
        (b"X\t: y", "whitespace between field name and colon"),
        (b"X(: y", "invalid field name"),
        (b"X/Y: y", "invalid field name"),
        (b"\xc3\xa9: y", "invalid field name"),
        (b": y", "invalid field name"),
        (b"NoColon", "field line without a colon"),
        (b" folded", "obs-fold"),
        (b"\tfolded", "obs-fold"),
        (b"X: a\x01b", "invalid characters in the value"),
        (b"X: a\x7f", "invalid characters in the value"),
        (b"X: a\x0bb", "invalid characters in the value"),
        (b"X: a\x00b", "NUL byte in request head"),
        (b"X: a\rb", "bare CR in line 3"),
        (b"X: a\nb", "bare LF in line 3"),
    ],
)
def test_bad_field_lines_are_400(line: bytes, message: str) -> None:
    reject(head(b"Host: a", line), 400, message)


def test_bare_lf_line_endings_are_400() -> None:
    reject(b"GET / HTTP/1.1\nHost: a\n\r\n\r\n", 400, "bare LF in line 1")


def test_header_count_limit_is_431() -> None:
    limits = Limits(max_headers=5)
    assert len(parse(head(b"Host: a", *[b"X: y"] * 4), limits).headers) == 5
    reject(head(b"Host: a", *[b"X: y"] * 5), 431, "6 header fields exceed the limit of 5", limits)


# -- Host ------------------------------------------------------------------------------------


def test_host_rules() -> None:
    assert parse(head(b"Host: a")).get(b"host") == b"a"
    assert parse(head(b"hOsT:")).get(b"host") == b""  # empty Host is allowed
    reject(head(b"X: y"), 400, "missing Host")
    reject(head(b"Host: a", b"Host: a"), 400, "repeated Host")
    assert parse(head(request_line=b"GET / HTTP/1.0")).get(b"host") is None
    assert parse(head(b"Host: a", request_line=b"GET / HTTP/1.0")).get(b"host") == b"a"
    reject(head(b"Host: a", b"Host: b", request_line=b"GET / HTTP/1.0"), 400, "repeated Host")


@pytest.mark.parametrize(
    "value",
    [
        b"example.com",
        b"example.com:8080",
        b"a:",  # port = *DIGIT
        b"127.0.0.1:1",
        b"[::1]",
        b"[::1]:80",
        b"[2001:db8::7]",
        b"[::ffff:192.0.2.1]:1",
        b"[v1.fe80::a+en1]",  # IPvFuture
        b"xn--bcher-kva.example",
        b"a%20b",  # pct-encoded
        b"a!$&'()*+,;=b",  # sub-delims
        b"_-~.",
    ],
)
def test_valid_host_values(value: bytes) -> None:
    assert parse(head(b"Host: " + value)).get(b"host") == value


@pytest.mark.parametrize(
    "value",
    [
        b"exa mple.com",
        b"a@b",  # userinfo is not allowed (RFC 9110 §7.2)
        b"u:p@b",
        b"a:8x",
        b"a:80:80",
        b"a:-1",
        b"[::1",  # an unclosed IPv6 literal
        b"::1",
        b"[::1]x",
        b"[1::2::3]",
        b"[g::1]",
        b"a/b",
        b"a?b",
        b"a#b",
        b"a%2",
        b"a%zz",
        b'a"b',
        b"a\x80b",
        b"a\tb",
    ],
)
def test_invalid_host_values_are_400(value: bytes) -> None:
    message = "invalid IPv6 literal" if value in (b"[1::2::3]",) else "invalid Host"
    reject(head(b"Host: " + value), 400, message)
    reject(head(b"Host: " + value, request_line=b"GET / HTTP/1.0"), 400, message)


# -- framing fields ---------------------------------------------------------------------------


def test_content_length() -> None:
    assert parse(head(b"Host: a", b"Content-Length: 0")).content_length == 0
    assert parse(head(b"Host: a", b"Content-Length: 007")).content_length == 7
    assert parse(head(b"Host: a", b"content-length:  12 ")).content_length == 12
    assert parse(head(b"Host: a")).content_length is None
    twenty = b"0" * 19 + b"9"
    assert parse(head(b"Host: a", b"Content-Length: " + twenty)).content_length == 9


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([b"Content-Length: 1", b"Content-Length: 1"], "repeated Content-Length"),
        ([b"Content-Length: 1", b"Content-Length: 2"], "repeated Content-Length"),
        ([b"Content-Length: 1, 1"], "is not a decimal number"),
        ([b"Content-Length: +1"], "is not a decimal number"),
        ([b"Content-Length: -1"], "is not a decimal number"),
        ([b"Content-Length: 0x10"], "is not a decimal number"),
        ([b"Content-Length: 1 2"], "is not a decimal number"),
        ([b"Content-Length:"], "is not a decimal number"),
        ([b"Content-Length: \xd9\xa1"], "is not a decimal number"),  # a non-ASCII digit
        ([b"Content-Length: " + b"0" * 20 + b"1"], "Content-Length of 21 digits (at most 20)"),
        # int() refuses strings of over 4300 digits: the limit comes first.
        ([b"Content-Length: " + b"1" * 5000], "Content-Length of 5000 digits"),
    ],
)
def test_bad_content_length_is_400(lines: list[bytes], message: str) -> None:
    reject(head(b"Host: a", *lines), 400, message)


def test_body_limit_on_content_length_is_413() -> None:
    limits = Limits(max_body_size=100)
    assert parse(head(b"Host: a", b"Content-Length: 100"), limits).content_length == 100
    reject(
        head(b"Host: a", b"Content-Length: 101"),
        413,
        "Content-Length 101 exceeds the body limit of 100",
        limits,
    )


@pytest.mark.parametrize("value", [b"chunked", b"Chunked", b"CHUNKED", b"\t chunked \t"])
def test_chunked(value: bytes) -> None:
    h = parse(head(b"Host: a", b"Transfer-Encoding:" + value))
    assert h.chunked
    assert h.content_length is None


@pytest.mark.parametrize(
    ("lines", "status", "message"),
    [
        ([b"Transfer-Encoding: chunked", b"Content-Length: 5"], 400, "both Transfer-Encoding"),
        ([b"Content-Length: 5", b"Transfer-Encoding: chunked"], 400, "both Transfer-Encoding"),
        ([b"Transfer-Encoding: gzip, chunked"], 501, "are not implemented"),
        ([b"Transfer-Encoding: deflate , chunked"], 501, "are not implemented"),
        ([b"Transfer-Encoding: br"], 501, "unknown transfer coding b'br'"),
        ([b"Transfer-Encoding: foo, chunked"], 501, "unknown transfer coding b'foo'"),
        ([b"Transfer-Encoding: gzip"], 400, "final transfer coding is b'gzip', not chunked"),
        ([b"Transfer-Encoding: chunked, gzip"], 400, "chunked is not the final transfer coding"),
        # RFC 9110 §5.3: field lines of one name are one list, the same as one joined line.
        ([b"Transfer-Encoding: deflate", b"Transfer-Encoding: chunked"], 501, "not implemented"),
        (
            [b"Transfer-Encoding: chunked", b"Transfer-Encoding: deflate"],
            400,
            "chunked is not the final transfer coding",
        ),
        ([b"Transfer-Encoding: gzip", b"Transfer-Encoding: br"], 501, "unknown transfer coding"),
        (
            [b"Transfer-Encoding: gzip", b"Transfer-Encoding: deflate"],
            400,
            "final transfer coding is b'deflate', not chunked",
        ),
        ([b"Transfer-Encoding: chunked", b"Transfer-Encoding:"], 400, "empty transfer coding"),
        ([b"Transfer-Encoding: chunked, chunked"], 400, "chunked applied more than once"),
        (
            [b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"],
            400,
            "chunked applied more than once",
        ),
        ([b"Transfer-Encoding:"], 400, "empty transfer coding"),
        ([b"Transfer-Encoding: chunked,"], 400, "empty transfer coding"),
        ([b"Transfer-Encoding: chunked;q=1"], 400, "chunked takes no parameters"),
    ],
)
def test_bad_transfer_encoding(lines: list[bytes], status: int, message: str) -> None:
    reject(head(b"Host: a", *lines), status, message)


def test_transfer_encoding_on_http10_is_400() -> None:
    reject(
        head(b"Transfer-Encoding: chunked", request_line=b"POST / HTTP/1.0"),
        400,
        "Transfer-Encoding in an HTTP/1.0 request",
    )


# -- connection semantics ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "lines", "keep_alive"),
    [
        (b"1.1", [], True),
        (b"1.1", [b"Connection: close"], False),
        (b"1.1", [b"Connection: Keep-Alive, CLOSE"], False),
        (b"1.1", [b"Connection: upgrade", b"Connection: close"], False),
        (b"1.1", [b"Connection: keep-alive"], True),
        (b"1.0", [], False),
        (b"1.0", [b"Connection: keep-alive"], True),
        (b"1.0", [b"Connection: Keep-Alive, close"], False),
    ],
)
def test_keep_alive(version: bytes, lines: list[bytes], keep_alive: bool) -> None:
    h = parse(head(b"Host: a", *lines, request_line=b"GET / HTTP/" + version))
    assert h.keep_alive is keep_alive


def test_expect_continue() -> None:
    assert parse(head(b"Host: a", b"Expect: 100-Continue")).expect_continue
    assert not parse(head(b"Host: a", b"Expect: 200-ok")).expect_continue
    assert not parse(head(b"Host: a")).expect_continue


def test_repr_names_the_request() -> None:
    assert repr(parse(head(b"Host: a"))) == "RequestHead(b'GET', b'/', HTTP/1.1, 1 fields)"
