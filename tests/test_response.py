"""ResponseIndex: sans-I/O response framing, fed whole, byte by byte and in random chunks."""

from __future__ import annotations

import random

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeparse import (
    FramedResponse,
    Limits,
    ProtocolError,
    ResponseIndex,
    SeekableBuffer,
    parse_response_head,
)

OK5 = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
    b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: abc\r\nX-Other: d\r\n\r\n"
)


class Whole:
    """A response as the tests compare it: method, status, decoded body, trailers."""

    def __init__(self, r: FramedResponse, buf: SeekableBuffer) -> None:
        self.seq = r.seq
        self.method = r.method
        self.status = r.head.status
        self.body = b"".join(bytes(buf.view(s, e)) for s, e in r.body)
        self.trailers = list(r.trailers)

    def key(self) -> tuple[int, bytes, int, bytes, list[tuple[bytes, bytes]]]:
        return (self.seq, self.method, self.status, self.body, self.trailers)


def frame(
    data: bytes,
    methods: list[bytes],
    pieces: list[int] | None = None,
    eof: bool = False,
    limits: Limits | None = None,
    tally: bool = False,
) -> tuple[ResponseIndex, list[Whole]]:
    """Feed `data` in pieces of the given sizes (default: whole); return the index and the
    complete responses, read out as each advance returns (nothing is released)."""
    buf = SeekableBuffer(max(len(data), 1) + 64 * 1024)
    index = ResponseIndex(buf, limits)
    for m in methods:
        index.expect(m)
    seen: list[FramedResponse] = []
    pos = 0
    for size in pieces or [len(data)]:
        if pos >= len(data):
            break
        buf.feed(data[pos : pos + size])
        pos += size
        if tally:
            index.tally()
        else:
            seen.extend(index.advance())
    if pos < len(data):
        buf.feed(data[pos:])
        if tally:
            index.tally()
        else:
            seen.extend(index.advance())
    if eof:
        seen.extend(index.eof())
    return index, [Whole(r, buf) for r in seen if r.end is not None]


def chunkings(n: int) -> list[list[int] | None]:
    rnd = random.Random(n)
    chunks = []
    for _ in range(3):
        sizes = []
        left = n
        while left > 0:
            k = rnd.randint(1, 9)
            sizes.append(k)
            left -= k
        chunks.append(sizes)
    return [None, [1] * n, *chunks]


@pytest.mark.parametrize("how", range(5))
def test_content_length_and_chunked_in_any_pieces(how: int) -> None:
    data = OK5 + CHUNKED + OK5
    pieces = chunkings(len(data))[how]
    index, out = frame(data, [b"GET"] * 3, pieces)
    assert index.error is None
    assert [w.body for w in out] == [b"hello", b"hello world", b"hello"]
    assert out[1].trailers == [(b"x-sum", b"abc"), (b"x-other", b"d")]
    assert [w.seq for w in out] == [0, 1, 2]
    assert index.completed == 3 and index.pending == 0 and index.at_boundary
    assert index.statuses == {200: 3}


def test_head_response_has_no_body_whatever_its_content_length() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + OK5
    index, out = frame(data, [b"HEAD", b"GET"])
    assert index.error is None
    assert [(w.method, w.body) for w in out] == [(b"HEAD", b""), (b"GET", b"hello")]


@pytest.mark.parametrize("status", [204, 304])
def test_204_and_304_have_no_body(status: int) -> None:
    data = b"HTTP/1.1 %d X\r\nContent-Length: 7\r\n\r\n" % status + OK5
    index, out = frame(data, [b"GET", b"GET"])
    assert index.error is None
    assert [(w.status, w.body) for w in out] == [(status, b""), (200, b"hello")]


def test_interim_responses_are_skipped() -> None:
    data = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" + OK5 + OK5
    )
    for pieces in chunkings(len(data)):
        index, out = frame(data, [b"POST", b"GET"], pieces)
        assert index.error is None
        assert [(w.seq, w.method, w.status) for w in out] == [(0, b"POST", 200), (1, b"GET", 200)]
        assert index.interim == 2


def test_101_is_an_error() -> None:
    index, out = frame(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", [b"GET"])
    assert out == []
    assert index.error is not None and "101" in index.error.message


def test_read_until_close_ends_at_eof() -> None:
    data = OK5 + b"HTTP/1.0 200 OK\r\n\r\nuntil the end"
    for pieces in chunkings(len(data)):
        index, out = frame(data, [b"GET"] * 3, pieces, eof=True)
        assert index.error is None
        assert [w.body for w in out] == [b"hello", b"until the end"]
        assert index.pending == 1  # the third request was never answered
        assert index.done


def test_a_transfer_coding_other_than_chunked_reads_until_close() -> None:
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzzzz"
    index, out = frame(data, [b"GET"], eof=True)
    assert index.error is None and [w.body for w in out] == [b"zzzz"]


def test_connection_close_ends_the_stream() -> None:
    data = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    index, out = frame(data, [b"GET", b"GET"])
    assert [w.body for w in out] == [b"ok"] and index.done and index.pending == 1
    index, out = frame(data + OK5, [b"GET", b"GET"])
    assert index.error is not None and "after a response that ended" in index.error.message


def test_http10_keep_alive_continues() -> None:
    data = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok" + OK5
    index, out = frame(data, [b"GET", b"GET"])
    assert index.error is None and [w.body for w in out] == [b"ok", b"hello"]


def test_eof_in_the_middle_is_an_error_and_eof_at_a_boundary_is_not() -> None:
    for cut in (OK5[:10], OK5[:-2], CHUNKED[:-3]):
        index, _ = frame(cut, [b"GET"], eof=True)
        assert index.error is not None and "closed in the middle" in index.error.message
    index, out = frame(OK5, [b"GET", b"GET"], eof=True)
    assert index.error is None and len(out) == 1 and index.pending == 1


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"garbage\r\n\r\n", "status line"),
        (b"HTX", "status line"),
        (b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", "bare LF"),
        (b"HTTP/2.0 200 OK\r\n\r\n", "version"),
        (b"HTTP/1.1 20 OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 099 Low\r\n\r\n", "below 100"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", "repeated"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "both",
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "not implemented"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", "not the final"),
        (b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", "field line"),
        (b"HTTP/1.1 200 OK\r\nX: \x00\r\n\r\n", "NUL"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk-size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxyz", "CRLF"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nbad\r\n\r\n", "trailer"),
        (OK5 + OK5, "no request outstanding"),
    ],
)
def test_malformed_responses_are_protocol_errors(data: bytes, words: str) -> None:
    for pieces in (None, [1] * len(data)):
        index, _ = frame(data, [b"GET"], pieces)
        assert index.error is not None, data
        assert words in index.error.message
        assert index.error.status_hint == 502
        assert index.advance() == []  # nothing after an error


def test_a_response_to_connect_that_opens_a_tunnel_is_an_error() -> None:
    index, _ = frame(b"HTTP/1.1 200 OK\r\n\r\n", [b"CONNECT"])
    assert index.error is not None and "tunnel" in index.error.message


def test_limits_apply() -> None:
    limits = Limits(max_head_size=64, max_headers=2, max_chunk_line=8)
    big = b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 80 + b"\r\n\r\n"
    assert "exceeds 64" in frame(big, [b"GET"], limits=limits)[0].error.message  # type: ignore[union-attr]
    many = b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"
    assert "header fields" in frame(many, [b"GET"], limits=limits)[0].error.message  # type: ignore[union-attr]
    chunky = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;abcdefgh=1\r\n"
    assert "chunk-size line" in frame(chunky, [b"GET"], limits=limits)[0].error.message  # type: ignore[union-attr]
    # Within the limits, the same shapes frame.
    ok = b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n"
    assert frame(ok, [b"GET"], eof=True, limits=limits)[0].error is None


def test_max_head_size_must_fit_the_buffer() -> None:
    with pytest.raises(ValueError, match="capacity"):
        ResponseIndex(SeekableBuffer(1024), Limits(max_head_size=2048))


def test_expect_counts() -> None:
    index = ResponseIndex(SeekableBuffer(32 * 1024))
    index.expect(b"GET", 3)
    index.expect(b"GET", 0)
    index.expect(b"HEAD")
    assert index.pending == 4 and index.unanswered == 4
    with pytest.raises(ValueError):
        index.expect(b"GET", -1)


def test_repeated_responses_frame_identically_with_the_fast_path() -> None:
    """Runs of identical responses (the repeat fast path), broken by a change of Date, by a HEAD
    (the same head bytes frame without a body) and by a different response."""
    head = b"HTTP/1.1 200 OK\r\nDate: Mon, 01 Jan 2026 00:00:0%d GMT\r\nContent-Length: 3\r\n\r\n"
    a, b = head % 1 + b"abc", head % 2 + b"xyz"
    data = a * 5 + b * 2 + head % 2 + OK5 + a * 4
    methods = [b"GET"] * 7 + [b"HEAD"] + [b"GET"] * 5
    bodies = [b"abc"] * 5 + [b"xyz"] * 2 + [b"", b"hello"] + [b"abc"] * 4
    for pieces in chunkings(len(data)):
        index, out = frame(data, methods, pieces)
        assert index.error is None
        assert [w.body for w in out] == bodies
        assert [w.seq for w in out] == list(range(13))
        assert [w.method for w in out] == methods
        tallied, _ = frame(data, methods, pieces, tally=True)
        assert tallied.error is None
        assert tallied.completed == 13 and tallied.statuses == {200: 13}


def test_tally_counts_statuses_and_keeps_the_current_response() -> None:
    buf = SeekableBuffer(4096)
    index = ResponseIndex(buf, Limits(max_head_size=1024))
    index.expect(b"GET", 4)
    buf.feed(OK5 + b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n" + OK5 + CHUNKED[:70])
    assert index.tally() == 3
    assert index.statuses == {200: 2, 404: 1}
    assert index.current is not None and index.current.end is None
    buf.feed(CHUNKED[70:])
    assert index.tally() == 1
    assert index.statuses == {200: 3, 404: 1}
    assert index.current is None


def test_release_as_you_go() -> None:
    """A consumer that releases everything framed keeps the buffer small, over many rounds."""
    buf = SeekableBuffer(512)
    index = ResponseIndex(buf, Limits(max_head_size=256))
    stream = (OK5 + CHUNKED) * 50
    index.expect(b"GET", 100)
    pos = 0
    rnd = random.Random(7)
    while pos < len(stream):
        assert buf.writable() > 0, "the index stopped framing"
        n = min(rnd.randint(1, 200), buf.writable(), len(stream) - pos)
        buf.feed(stream[pos : pos + n])
        pos += n
        index.tally()
        buf.release(buf.head, index.position)
    assert index.error is None and index.completed == 100


def test_parse_response_head() -> None:
    h = parse_response_head(
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nConnection: close\r\nX: a b\r\n\r\n"
    )
    assert (h.status, h.reason, h.http_version) == (404, b"Not Found", b"1.1")
    assert h.content_length == 3 and not h.keep_alive and h.get(b"x") == b"a b"
    assert parse_response_head(b"HTTP/1.1 200 \r\n\r\n").reason == b""
    with pytest.raises(ProtocolError):
        parse_response_head(b"HTTP/1.1 200 OK\r\n X: folded\r\n\r\n")


# -- differential: random pipelined response streams, checked against h11 ----------------------

_bodies = st.binary(min_size=0, max_size=40)
_response = st.tuples(
    st.sampled_from([200, 201, 204, 304, 404, 500]),
    st.sampled_from(["length", "chunked"]),
    _bodies,
    st.sampled_from([b"GET", b"HEAD", b"POST"]),
    st.booleans(),  # an interim 100 Continue first
    st.lists(st.integers(min_value=1, max_value=15), max_size=3),  # chunk split points
)


def _render(
    status: int, how: str, body: bytes, method: bytes, interim: bool, cuts: list[int]
) -> tuple[bytes, bytes]:
    no_body = method == b"HEAD" or status in (204, 304)
    out = b"HTTP/1.1 100 Continue\r\n\r\n" if interim else b""
    if how == "length" or no_body:
        out += b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n" % (status, len(body))
        expected = b"" if no_body else body
        return out + expected, expected
    out += b"HTTP/1.1 %d X\r\nTransfer-Encoding: chunked\r\n\r\n" % status
    pos = 0
    for c in sorted(set(cuts)):
        if pos < c < len(body):
            out += b"%x\r\n%s\r\n" % (c - pos, body[pos:c])
            pos = c
    if pos < len(body):
        out += b"%x\r\n%s\r\n" % (len(body) - pos, body[pos:])
    return out + b"0\r\n\r\n", body


def _h11_bodies(data: bytes, methods: list[bytes]) -> list[tuple[int, bytes]]:
    """The same stream through h11's client side, one request/response cycle at a time."""
    conn = h11.Connection(h11.CLIENT)
    out: list[tuple[int, bytes]] = []
    conn.receive_data(data)
    for m in methods:
        conn.send(h11.Request(method=m, target="/", headers=[("Host", "a")]))
        conn.send(h11.EndOfMessage())
        status, body = 0, b""
        while True:
            ev = conn.next_event()
            if isinstance(ev, h11.Response):
                status = ev.status_code
            elif isinstance(ev, h11.Data):
                body += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                break
        out.append((status, body))
        conn.start_next_cycle()
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(_response, min_size=1, max_size=8), st.randoms(use_true_random=False))
def test_random_streams_frame_like_h11(
    responses: list[tuple[int, str, bytes, bytes, bool, list[int]]], rnd: random.Random
) -> None:
    data = b""
    expected = []
    methods = []
    for status, how, body, method, interim, cuts in responses:
        raw, want = _render(status, how, body, method, interim, cuts)
        data += raw
        expected.append((status, want))
        methods.append(method)
    sizes = [rnd.randint(1, 30) for _ in range(len(data))]
    index, out = frame(data, methods, sizes)
    assert index.error is None
    assert [(w.status, w.body) for w in out] == expected
    assert _h11_bodies(data, methods) == expected
