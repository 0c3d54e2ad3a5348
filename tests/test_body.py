"""BodyFramer and the shared head pieces (`_body`, `_fields`): one framer, two sets of rules.

Each input is fed whole and byte by byte through `RequestIndex` (strict, 400/413/431) and
`ResponseIndex` (lenient, 502), the two indexes that drive the framer.
"""

from __future__ import annotations

import pytest

from pipeparse import (
    FramedRequest,
    FramedResponse,
    Limits,
    ProtocolError,
    RequestIndex,
    ResponseIndex,
    SeekableBuffer,
)
from pipeparse._fields import check_partial_head, keep_alive

REQ = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
RESP = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def feed(
    index: RequestIndex | ResponseIndex, data: bytes, step: int | None
) -> list[FramedRequest | FramedResponse]:
    out: list[FramedRequest | FramedResponse] = []
    buf = index.buffer
    for i in range(0, len(data), step or len(data) or 1):
        buf.feed(data[i : i + (step or len(data))])
        out += index.advance()
    return out


def request_side(body: bytes, step: int | None, limits: Limits | None = None) -> RequestIndex:
    index = RequestIndex(SeekableBuffer(64 * 1024), limits)
    feed(index, REQ + body, step)
    return index


def response_side(body: bytes, step: int | None, limits: Limits | None = None) -> ResponseIndex:
    index = ResponseIndex(SeekableBuffer(64 * 1024), limits)
    index.expect(b"GET")
    feed(index, RESP + body, step)
    return index


@pytest.mark.parametrize("step", [None, 1])
def test_both_sides_frame_the_same_chunks_and_trailers(step: int | None) -> None:
    body = b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 5\r\n\r\n"
    for index, status in ((request_side(body, step), 400), (response_side(body, step), 502)):
        assert index.error is None and index._status == status
        assert index.current is None and index.at_boundary
    req = feed(RequestIndex(SeekableBuffer(4096)), REQ + body, step)[0]
    assert req.body_framed == 5 and sum(e - s for s, e in req.body) == 5 and req.complete
    assert req.trailers == [(b"x-sum", b"5")]


@pytest.mark.parametrize(
    "body",
    [b"zz\r\n", b"1\r\nabc", b"0\r\nbad\r\n\r\n"],
)
@pytest.mark.parametrize("step", [None, 1])
def test_syntax_errors_carry_each_sides_status(body: bytes, step: int | None) -> None:
    req, resp = request_side(body, step), response_side(body, step)
    assert req.error is not None and req.error.status_hint == 400
    assert resp.error is not None and resp.error.status_hint == 502
    assert req.error.message == resp.error.message


def test_framing_fields_as_trailers_only_fail_strict_framing() -> None:
    body = b"0\r\nContent-Length: 5\r\n\r\n"
    req = request_side(body, None)
    assert req.error is not None and "trailer section" in req.error.message
    resp = response_side(body, None)
    assert resp.error is None and resp.current is None


def test_a_bare_lf_fails_at_once_only_in_strict_framing() -> None:
    for body in (b"5\nabc", b"0\r\nX: 1\nY"):
        req = request_side(body, None)
        assert req.error is not None and "bare LF" in req.error.message
        resp = response_side(body, None)
        assert resp.error is None and resp.current is not None  # waits for more


def test_trailer_limits_whole_section_strict_each_line_lenient() -> None:
    limits = Limits(max_head_size=128, max_headers=10)
    lines = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 30) for i in range(6))  # > 128 in all
    body = b"0\r\n" + lines + b"\r\n"
    req = request_side(body, None, limits)
    assert req.error is not None and req.error.status_hint == 431
    assert request_side(body[:40], None, limits).error is None  # within the limit so far
    assert response_side(body, None, limits).error is None
    long_line = b"0\r\nX: " + b"v" * 200
    resp = response_side(long_line, None, limits)
    assert resp.error is not None and resp.error.status_hint == 502


def test_too_many_trailers() -> None:
    limits = Limits(max_headers=2)
    body = b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"
    req = request_side(body, None, limits)
    assert req.error is not None and req.error.status_hint == 431
    resp = response_side(body, None, limits)
    assert resp.error is not None and resp.error.status_hint == 502
    assert "too many trailer" in resp.error.message


def test_the_body_limit_applies_to_requests_only() -> None:
    limits = Limits(max_body_size=4)
    body = b"5\r\nabcde\r\n0\r\n\r\n"
    req = request_side(body, None, limits)
    assert req.error is not None and req.error.status_hint == 413
    assert response_side(body, None, limits).error is None


@pytest.mark.parametrize(
    ("connection", "http11", "alive"),
    [
        (b"", True, True),
        (b"", False, False),
        (b"close", True, False),
        (b"Keep-Alive", False, True),
        (b"foo, CLOSE", False, False),
        (b"upgrade", True, True),
    ],
)
def test_keep_alive(connection: bytes, http11: bool, alive: bool) -> None:
    assert keep_alive(connection, http11) is alive


def test_check_partial_head() -> None:
    buf = SeekableBuffer(1024)
    buf.feed(b"GET / HTTP/1.1\r\nHost: x\n")
    with pytest.raises(ProtocolError, match="bare LF line ending in request head") as e:
        check_partial_head(buf, 0, 0, buf.tail, 100, "request", 400, 431)
    assert e.value.status_hint == 400
    with pytest.raises(ProtocolError, match="response head exceeds 10 bytes") as e:
        check_partial_head(buf, 0, 0, buf.tail, 10, "response", 502, 503)
    assert e.value.status_hint == 503
    check_partial_head(buf, 0, 0, buf.tail - 1, 100, "request", 400, 431)  # no LF yet: fine
