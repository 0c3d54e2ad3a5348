"""RequestIndex and parse_requests: framing pipelined requests as bytes arrive.

Every stream is framed whole and fed in pieces (byte by byte, and split at every point), and the
framed requests are checked by their absolute offsets, bodies and trailers; each error is checked
for its status, its message, what was framed before it, and that nothing is framed after it.
"""

from __future__ import annotations

from typing import Any

import pytest

from pipeparse import (
    FramedRequest,
    Limits,
    ProtocolError,
    Request,
    RequestIndex,
    SeekableBuffer,
    parse_requests,
)

GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"


def post(body: bytes, target: bytes = b"/") -> bytes:
    return (
        b"POST "
        + target
        + b" HTTP/1.1\r\nHost: a\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def chunked(*chunks: bytes, trailers: bytes = b"", ext: bytes = b"") -> bytes:
    out = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    for c in chunks:
        out += format(len(c), "x").encode() + ext + b"\r\n" + c + b"\r\n"
    return out + b"0\r\n" + trailers + b"\r\n"


def frame(
    data: bytes, pieces: list[int] | None = None, limits: Limits | None = None
) -> tuple[SeekableBuffer, RequestIndex, list[FramedRequest]]:
    """Feed `data` (in `pieces` sizes, else whole) into a buffer that holds it all (and 64 bytes
    more); advance after each write. Returns the buffer, the index and every request framed."""
    buf = SeekableBuffer(len(data) + 64)
    index = RequestIndex(buf, limits)
    out: list[FramedRequest] = []
    pos = 0
    for n in pieces or [len(data)]:
        buf.feed(data[pos : pos + n])
        pos += n
        out += index.advance()
    assert pos == len(data)
    return buf, index, out


def body_of(buf: SeekableBuffer, r: FramedRequest) -> bytes:
    return b"".join(bytes(buf.view(s, e)) for s, e in r.body)


# -- framing ---------------------------------------------------------------------------------


def test_empty_lines_before_request_lines_are_skipped_and_released() -> None:
    # RFC 9112 §2.2: at the start, between requests and after a body, up to max_empty_lines.
    stream = b"\r\n" + GET + b"\r\n\r\n" + post(b"hi") + b"\r\n" * 4 + GET + b"\r\n"
    expected = [(2, 2 + len(GET)), (len(GET) + 6, len(GET) + 6 + len(post(b"hi")))]
    for pieces in ([len(stream)], [1] * len(stream), [3, 1, 40, 2, len(stream) - 46]):
        buf, index, rs = frame(stream, pieces)
        assert index.error is None
        assert [(r.start, r.end) for r in rs[:2]] == expected
        assert rs[2].end == len(stream) - 2
        assert index.at_boundary
        for r in rs:
            buf.release(r.start, r.end)  # type: ignore[arg-type]
        assert len(buf) == 0  # the index released the empty lines itself
    assert [r.body for r in parse_requests(stream)] == [b"", b"hi", b""]


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (b"\r\n" * 5 + GET, "more than 4 empty lines before a request line"),
        (GET + b"\r\n" * 5 + GET, "more than 4 empty lines before a request line"),
        (b"\n" + GET, "bare LF"),
        (GET + b"\n" + GET, "bare LF"),
        (b"\rX" + GET, "bare CR where a request line was expected"),
        (b"\r\r\n" + GET, "bare CR where a request line was expected"),
    ],
)
def test_bad_empty_lines_are_400(stream: bytes, message: str) -> None:
    for pieces in ([len(stream)], [1] * len(stream)):
        _, index, rs = frame(stream, pieces)
        assert index.error is not None
        assert (index.error.status_hint, message in index.error.message) == (400, True), (
            index.error.message
        )
        assert len(rs) == stream.startswith(GET)


def test_the_empty_line_bound_counts_per_request_and_across_writes() -> None:
    limits = Limits(max_empty_lines=2)
    ok = b"\r\n\r\n" + GET + b"\r\n\r\n" + GET
    for pieces in ([len(ok)], [1] * len(ok)):
        _, index, rs = frame(ok, pieces, limits)
        assert (index.error, len(rs)) == (None, 2)
    bad = b"\r\n" * 3 + GET
    for pieces in ([len(bad)], [1] * len(bad), [2, 2, 2, len(GET)]):
        _, index, _ = frame(bad, pieces, limits)
        assert index.error is not None and "more than 2 empty lines" in index.error.message


def test_connect_ends_the_stream_with_501() -> None:
    stream = GET + b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n" + GET
    _, index, rs = frame(stream)
    assert len(rs) == 1
    assert index.error is not None
    assert (index.error.status_hint, index.error.message) == (
        501,
        "CONNECT: this server does not tunnel",
    )
    assert index.position == len(GET)
    assert index.advance() == []  # the tunnel's bytes are never framed


def test_offsets_of_pipelined_requests() -> None:
    stream = GET + post(b"hello") + chunked(b"abc", b"defg", trailers=b"T: v\r\n") + GET
    buf, index, rs = frame(stream)
    assert [r.seq for r in rs] == [0, 1, 2, 3]
    assert all(r.complete for r in rs)
    a, b, c, d = rs
    assert (a.start, a.head_end, a.end, a.body) == (0, len(GET), len(GET), [])
    assert b.start == len(GET)
    assert bytes(buf.view(b.start, b.head_end)).endswith(b"Content-Length: 5\r\n\r\n")
    assert b.body == [(b.head_end, b.head_end + 5)]
    assert b.end == b.head_end + 5
    assert body_of(buf, b) == b"hello"
    assert body_of(buf, c) == b"abcdefg"
    assert len(c.body) == 2
    assert c.body_framed == 7
    assert c.trailers == [(b"t", b"v")]
    assert d.start == c.end
    assert d.end == len(stream)
    assert index.framed == 4
    assert index.position == len(stream)
    assert index.at_boundary
    assert index.current is None
    assert repr(a) == f"FramedRequest(seq=0, b'GET' b'/', [0, {len(GET)}))"


def test_byte_by_byte_gives_the_same_requests() -> None:
    stream = (
        GET
        + post(b"GET / HTTP/1.1\r\n\r\n")
        + chunked(b"0\r\n\r\n", b"\r\n\r\n", ext=b';a=1;b="x y"', trailers=b"T: v\r\n")
        + GET
    )
    whole = parse_requests(stream)
    buf, _, rs = frame(stream, [1] * len(stream))
    assert [(r.start, r.head_end, r.end) for r in rs] == [
        (r.start, r.head_end, r.end) for r in frame(stream)[2]
    ]
    assert [body_of(buf, r) for r in rs] == [r.body for r in whole]
    assert whole[1].body == b"GET / HTTP/1.1\r\n\r\n"
    assert whole[2].body == b"0\r\n\r\n\r\n\r\n"
    assert whole[2].trailers == [(b"t", b"v")]
    assert len(whole) == 4


def test_a_delimiter_split_across_writes_is_found() -> None:
    stream = GET + post(b"xy") + GET
    expected = [(r.start, r.head_end, r.end) for r in frame(stream)[2]]
    for cut in range(1, len(stream)):
        _, index, rs = frame(stream, [cut, len(stream) - cut])
        assert [(r.start, r.head_end, r.end) for r in rs] == expected, cut
        assert index.error is None
    for cut in range(1, len(stream) - 1):  # three writes around every point
        _, _, rs = frame(stream, [cut, 1, len(stream) - cut - 1])
        assert [(r.start, r.head_end, r.end) for r in rs] == expected, cut


def test_parse_requests_rejects_input_that_ends_inside_a_request() -> None:
    stream = GET + post(b"hello")
    for cut in range(len(GET) + 1, len(stream)):
        with pytest.raises(ProtocolError) as info:
            parse_requests(stream[:cut])
        assert info.value.status_hint == 400
        assert info.value.message == (
            f"the input ends inside a request ({cut - len(GET)} bytes from offset {len(GET)})"
        )
        assert [r.method for r in info.value.requests_before] == [b"GET"]
        # Only when asked for, a partial request at the end is left out.
        assert [r.method for r in parse_requests(stream[:cut], allow_partial=True)] == [b"GET"]
    assert parse_requests(b"") == []
    assert len(parse_requests(stream)) == 2
    assert len(parse_requests(GET + b"\r\n")) == 1  # an empty line ends nothing
    with pytest.raises(ProtocolError, match="ends inside a request"):
        parse_requests(b"GET / HTTP/1.1\r\nHost: a\r\n")
    with pytest.raises(ProtocolError, match="ends inside a request"):
        parse_requests(GET + b"\r")  # half an empty line
    with pytest.raises(TypeError):
        parse_requests(GET, None, True)  # type: ignore[call-arg]  # keyword only


def test_incomplete_tail_waits_in_the_index() -> None:
    stream = GET + post(b"hello")
    # The index hands out a request once its head is complete; its body grows after.
    buf, index, rs = frame(stream[:-2])
    assert [r.complete for r in rs] == [True, False]
    assert index.current is rs[1]
    assert body_of(buf, rs[1]) == b"hel"
    assert not index.at_boundary
    buf.feed(stream[-2:])
    assert index.advance() == []  # no new head
    assert rs[1].end == len(stream)
    assert body_of(buf, rs[1]) == b"hello"
    assert rs[1].body == [(rs[1].head_end, rs[1].head_end + 3), (rs[1].head_end + 3, len(stream))]
    assert index.current is None


def test_stale_bytes_past_the_tail_never_complete_a_head() -> None:
    """The block keeps old bytes past the tail (the buffer restarts at the block's start when
    drained); a partial head must not be completed by them."""
    buf = SeekableBuffer(256)
    index = RequestIndex(buf)
    buf.feed(GET)
    (r,) = index.advance()
    assert r.end is not None
    buf.release(r.start, r.end)  # drained: writing restarts at the block's start
    buf.feed(GET[:-3])
    assert index.advance() == []
    buf.feed(GET[-3:])
    (r,) = index.advance()
    assert (r.start, r.end) == (len(GET), 2 * len(GET))


def test_stale_bytes_left_by_a_compaction_never_complete_a_head() -> None:
    buf = SeekableBuffer(64)
    index = RequestIndex(buf)
    buf.feed(GET * 2)
    first, _ = index.advance()
    assert first.end is not None
    buf.release(first.start, first.end)
    # Compaction in place moves the second GET to the block's start; the partial head lands
    # just before that GET's old last bytes (": a\r\n\r\n"), which are still in the block.
    buf.feed(GET[:20])
    assert buf.compactions == 1
    assert index.advance() == []
    buf.feed(GET[20:])
    (r,) = index.advance()
    assert (r.start, r.end) == (2 * len(GET), 3 * len(GET))


def test_streaming_a_body_larger_than_the_buffer() -> None:
    """A consumer takes each body piece as it is framed, so a 64-byte buffer carries a 5000-byte
    Content-Length body and a chunked one; the pieces reassemble to the bodies."""
    big = bytes(i % 251 for i in range(5000))
    stream = post(big) + chunked(big[:3000], big[3000:]) + GET
    buf = SeekableBuffer(128)
    index = RequestIndex(buf)
    bodies: dict[int, bytearray] = {}
    taken: dict[int, int] = {}  # request -> body pieces taken so far
    done: list[FramedRequest] = []
    live: list[FramedRequest] = []
    released = 0  # every byte before this is taken
    pos = 0
    while pos < len(stream):
        n = min(37, buf.writable(), len(stream) - pos)
        assert n > 0
        buf.feed(stream[pos : pos + n])
        pos += n
        live += index.advance()
        for r in live:
            bodies.setdefault(r.seq, bytearray())
            for s, e in r.body[taken.get(r.seq, 0) :]:
                if s > released:
                    buf.release(released, s)  # the head, or a chunk-size line
                bodies[r.seq] += buf.take(s, e)
                released = e
            taken[r.seq] = len(r.body)
            if r.end is not None:
                if r.end > released:
                    buf.release(released, r.end)  # chunk CRLFs, last chunk, trailers
                    released = r.end
                done.append(r)
        live = [r for r in live if r.end is None]
        assert len(buf) == buf.tail - released
    assert index.error is None
    assert [bytes(bodies[r.seq]) for r in done] == [big, big, b""]
    assert buf.compactions > 50
    assert len(buf) == 0


# -- limits ----------------------------------------------------------------------------------


def test_head_size_limit() -> None:
    limits = Limits(max_head_size=64)
    exact = b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 32 + b"\r\n\r\n"
    assert len(exact) == 64
    assert len(parse_requests(exact * 2, limits)) == 2
    too_big = exact.replace(b"X: ", b"X:  ")
    with pytest.raises(ProtocolError) as info:
        parse_requests(exact + too_big, limits)
    assert info.value.status_hint == 431
    assert info.value.message == "request head exceeds 64 bytes without ending"
    assert len(info.value.requests_before) == 1


def test_a_head_that_never_ends_is_431() -> None:
    limits = Limits(max_head_size=64)
    buf = SeekableBuffer(1024)
    index = RequestIndex(buf, limits)
    buf.feed(b"GET / HTTP/1.1\r\nHost: a\r\nX: ")
    for _ in range(63 - len(b"GET / HTTP/1.1\r\nHost: a\r\nX: ")):
        buf.feed(b"a")
        assert index.advance() == []
        assert index.error is None
    buf.feed(b"a")  # 64 bytes, no blank line
    assert index.advance() == []
    assert index.error is not None
    assert index.error.status_hint == 431


def test_body_limit_is_413_for_content_length_and_chunked() -> None:
    limits = Limits(max_body_size=10)
    assert parse_requests(post(b"x" * 10) + chunked(b"x" * 4, b"y" * 6), limits)[1].body == (
        b"xxxxyyyyyy"
    )
    with pytest.raises(ProtocolError) as info:
        parse_requests(post(b"x" * 11), limits)
    assert (info.value.status_hint, info.value.message) == (
        413,
        "Content-Length 11 exceeds the body limit of 10",
    )
    with pytest.raises(ProtocolError) as info:
        parse_requests(chunked(b"x" * 4, b"y" * 7), limits)
    assert (info.value.status_hint, info.value.message) == (
        413,
        "chunked body exceeds the body limit of 10",
    )


# -- chunked ---------------------------------------------------------------------------------

CHUNKED_HEAD = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    "line",
    [b"A", b"a", b"000000000000000A", b"a;x", b"a;x=y", b'a;x="q \\" ;"', b"a ;x", b"a;x; y=1"],
)
def test_valid_chunk_size_lines(line: bytes) -> None:
    if line.startswith(b"a ;"):  # BWS before the first ";": h11 rejects it, and so does pipeparse
        with pytest.raises(ProtocolError, match="malformed chunk-size line"):
            parse_requests(CHUNKED_HEAD + line + b"\r\n" + b"x" * 10 + b"\r\n0\r\n\r\n")
        return
    (r,) = parse_requests(CHUNKED_HEAD + line + b"\r\n" + b"x" * 10 + b"\r\n0\r\n\r\n")
    assert r.body == b"x" * 10


@pytest.mark.parametrize(
    "line",
    [
        b"0x1",
        b"+1",
        b"-1",
        b" 1",
        b"1 ",
        b"1\t",
        b"g",
        b"",
        b"0000000000000000A",  # 17 digits
        b"1;",
        b"1;x=",
        b"1;x y",
        b'1;x="open',
        b"1;x=\x01",
        b"1;\x80",
    ],
)
def test_bad_chunk_size_lines_are_400(line: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_requests(GET + CHUNKED_HEAD + line + b"\r\nx\r\n0\r\n\r\n" + GET)
    assert info.value.status_hint == 400
    assert info.value.message.startswith("malformed chunk-size line")
    assert [r.method for r in info.value.requests_before] == [b"GET"]


def test_chunk_line_limit_and_bare_lf() -> None:
    limits = Limits(max_chunk_line=16)
    ok = CHUNKED_HEAD + b"1;abcdefghijkl\r\nx\r\n0\r\n\r\n"  # 16 bytes with its CRLF
    assert parse_requests(ok, limits)[0].body == b"x"
    with pytest.raises(ProtocolError, match="chunk-size line longer than 16 bytes"):
        parse_requests(ok.replace(b";abc", b";abcd"), limits)
    # A chunk-size line ending in a bare LF fails at once, without waiting for more bytes.
    _, index, _ = frame(CHUNKED_HEAD + b"1\nx")
    assert index.error is not None
    assert index.error.message == "bare LF in a chunk-size line (CRLF required)"


@pytest.mark.parametrize("after", [b"xx", b"\n0\r\n\r\n", b"\r0\r\n\r\n", b"x\r\n0\r\n\r\n"])
def test_chunk_data_is_followed_by_exactly_crlf(after: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_requests(CHUNKED_HEAD + b"1\r\nx" + after)
    assert (info.value.status_hint, info.value.message) == (400, "chunk data not followed by CRLF")


def test_trailers_are_parsed_and_do_not_affect_framing() -> None:
    stream = chunked(b"abc", trailers=b"X-Len: 100\r\nExpires:\t0 \r\nX-Len: 7\r\n") + post(b"z")
    a, b = parse_requests(stream)
    assert a.body == b"abc"
    assert a.trailers == [(b"x-len", b"100"), (b"expires", b"0"), (b"x-len", b"7")]
    assert a.headers[-1] == (b"transfer-encoding", b"chunked")
    assert (b.body, b.trailers) == (b"z", [])


@pytest.mark.parametrize(
    ("trailers", "status", "message"),
    [
        (b"Content-Length: 0\r\n\r\n", 400, "content-length field in the trailer section"),
        (b"transfer-encoding: chunked\r\n\r\n", 400, "transfer-encoding field in the trailer"),
        (b" folded\r\n\r\n", 400, "malformed trailer field b' folded\\r\\n'"),
        (b"X : y\r\n\r\n", 400, "malformed trailer field"),
        (b"X: \x01\r\n\r\n", 400, "malformed trailer field"),
        (b"X: y\n\r\n\r\n", 400, "malformed trailer field"),
        (b"X: y\n\n", 400, "bare LF line ending in the trailer section (CRLF required)"),
        (b"T: v\r\n" * 4 + b"\r\n", 431, "too many trailer fields"),
        (b"T: " + b"v" * 60 + b"\r\n\r\n", 431, "trailer section exceeds 64 bytes"),
        (b"T: " + b"v" * 70, 431, "trailer section exceeds 64 bytes"),  # a line that never ends
    ],
)
def test_bad_trailers(trailers: bytes, status: int, message: str) -> None:
    """`trailers`: everything after the last chunk (no request follows, so bare LF fails fast)."""
    limits = Limits(max_headers=3, max_head_size=64)
    _, index, rs = frame(GET + CHUNKED_HEAD + b"0\r\n" + trailers, limits=limits)
    assert index.error is not None
    assert index.error.status_hint == status
    assert message in index.error.message
    assert [r.complete for r in rs] == [True, False]


def test_trailer_section_of_exactly_the_head_limit() -> None:
    limits = Limits(max_head_size=64)
    trailers = b"T: " + b"v" * 57 + b"\r\n"  # 62 bytes, 64 with the final CRLF
    (r,) = parse_requests(CHUNKED_HEAD + b"0\r\n" + trailers + b"\r\n", limits)
    assert r.trailers == [(b"t", b"v" * 57)]


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "status", "message"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
         400, "both Transfer-Encoding and Content-Length"),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
         501, "transfer codings b'gzip, chunked' are not implemented"),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: x-custom\r\n\r\n",
         501, "unknown transfer coding b'x-custom'"),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
         400, "chunked is not the final transfer coding"),
        (b"GET / HTTP/1.1\nHost: a\n\n", 400, "bare LF"),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "HTTP version 2.0 not supported"),
        (b"GET / HTTP/1.1\r\n\r\n", 400, "missing Host"),
        (b"\r\n" * 5 + b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "more than 4 empty lines"),
        (b"\r\nGET * HTTP/1.1\r\nHost: a\r\n\r\n", 400, "only for OPTIONS"),
        (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "invalid Host b'a b'"),
        (b"CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\n\r\n", 501, "does not tunnel"),
    ],
)  # fmt: skip
def test_errors_carry_status_message_and_requests_before(
    bad: bytes, status: int, message: str
) -> None:
    stream = GET + post(b"hi", b"/p") + bad + GET
    with pytest.raises(ProtocolError) as info:
        parse_requests(stream)
    err = info.value
    assert err.status_hint == status
    assert message in err.message
    assert err.requests_before == [
        Request(b"GET", b"/", b"1.1", [(b"host", b"a")]),
        Request(b"POST", b"/p", b"1.1", [(b"host", b"a"), (b"content-length", b"2")], b"hi", []),
    ]


@pytest.mark.parametrize("pieces", ["whole", "bytes"])
def test_nothing_is_framed_after_the_first_error(pieces: str) -> None:
    stream = GET + b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + GET
    _, index, rs = frame(stream, [len(stream)] if pieces == "whole" else [1] * len(stream))
    assert [r.seq for r in rs] == [0]
    err = index.error
    assert err is not None and err.message == "repeated Host"
    assert index.position == len(GET)  # where the rejected request starts
    buf2 = index.buffer
    buf2.release(buf2.head, buf2.head + len(GET))
    assert index.advance() == []
    assert index.error is err
    assert index.framed == 1


def test_bare_lf_fails_fast_when_the_head_never_ends() -> None:
    for head in [b"GET / HTTP/1.1\nHost: a\n", b"GET / HTTP/1.1\r\nHost: a\n", b"\n"]:
        for pieces in ([len(head)], [1] * len(head)):
            _, index, rs = frame(GET + head, [len(GET), *pieces])
            assert [r.seq for r in rs] == [0]
            assert index.error is not None
            assert index.error.status_hint == 400
            assert index.error.message == "bare LF line ending in request head (CRLF required)"


# -- the head cache --------------------------------------------------------------------------


def test_head_cache_returns_identical_heads() -> None:
    other = GET.replace(b"GET /", b"GET /other")
    _, _, rs = frame(GET + other + GET + post(b"a") + post(b"b"))
    assert rs[0].head is rs[2].head
    assert rs[0].head is not rs[1].head
    assert rs[3].head is rs[4].head  # same head, different bodies
    assert rs[1].head.target == b"/other"


def test_head_cache_stays_exact_past_its_size() -> None:
    heads = [GET.replace(b"GET /", b"GET /" + str(i).encode()) for i in range(600)]
    stream = b"".join(heads + heads[::-1])
    buf, _, rs = frame(stream)
    assert [r.head.target for r in rs] == [h.split(b" ")[1] for h in heads + heads[::-1]]
    for r in rs:
        assert bytes(buf.view(r.start, r.head_end)).split(b" ")[1] == r.head.target


def test_limits_are_validated() -> None:
    bad_values: list[dict[str, Any]] = [
        {"max_headers": 0},
        {"max_head_size": -1},
        {"max_body_size": 1.5},
    ]
    for bad in bad_values:
        with pytest.raises(ValueError, match="must be a positive integer"):
            Limits(**bad)
