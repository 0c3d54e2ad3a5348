"""Differential tests: pipeparse against h11 0.16 on random pipelined request streams.

Strategy: hypothesis builds streams of valid requests as structured `Msg`s (request line, field
lines, a Content-Length or chunked body, trailers), encodes them, and runs three parsers on the
bytes: `parse_requests` on the whole stream, a small `SeekableBuffer` + `RequestIndex` fed byte by
byte and in random chunks (a consumer takes each completed request, in shuffled order, so the
buffer compacts and never fills), and h11 driven as a sequential server. Valid streams must give
identical requests everywhere. Mutated streams (random byte edits, and targeted ones that each
break one rule) must never make pipeparse accept a request h11 rejects: request by request,
pipeparse's accepted prefix is no longer than h11's and equal to it where both accept.

The README's "Strictness" table lists every input pipeparse rejects and h11 accepts; one example
per row checks that row against h11, and the rows must match the examples exactly.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import h11
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pipeparse import (
    FramedRequest,
    Limits,
    ProtocolError,
    Request,
    RequestIndex,
    SeekableBuffer,
    parse_requests,
)

# Examples per property; raise it for a long local run (PIPEPARSE_DIFF_EXAMPLES=5000).
EXAMPLES = int(os.environ.get("PIPEPARSE_DIFF_EXAMPLES", "150"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# (method, target, version, headers, body, trailers), names lowercased.
Req = tuple[
    bytes, bytes, bytes, tuple[tuple[bytes, bytes], ...], bytes, tuple[tuple[bytes, bytes], ...]
]


@dataclass
class Outcome:
    """What a parser made of a stream: the requests it accepted, and whether it then rejected."""

    requests: list[Req]
    rejected: bool
    status: int | None = None


def _normalize(fields: Iterable[tuple[bytes, bytes]]) -> tuple[tuple[bytes, bytes], ...]:
    # h11 lowercases the value of Transfer-Encoding; pipeparse keeps it as sent.
    return tuple(
        (n.lower(), v.lower() if n.lower() == b"transfer-encoding" else v) for n, v in fields
    )


# -- the three parsers --------------------------------------------------------------------------


def run_h11(data: bytes, *, lenient: bool = True) -> Outcome:
    """h11 as a sequential server: each request to EndOfMessage, a minimal response, next cycle.

    h11 closes after an HTTP/1.0 request or ``Connection: close``; framing goes on from its
    unread bytes on a fresh connection, because pipeparse frames regardless of those (that is
    the server's business), and a request count must mean the same for both. With `lenient`,
    h11 is granted pipeparse's documented leniency (`LENIENT_EXAMPLES`).
    """
    out: list[Req] = []
    conn = h11.Connection(h11.SERVER)
    if not data:
        return Outcome(out, False)
    conn.receive_data(data)
    cur: list[Any] = []
    while True:
        if lenient and conn.their_state is h11.IDLE:
            skipped = _skip_empty_lines(conn)
            if skipped is None:
                return Outcome(out, True, 400)
            conn = skipped
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as e:
            return Outcome(out, True, e.error_status_hint)
        if event is h11.NEED_DATA:
            return Outcome(out, False)
        if isinstance(event, h11.Request):
            cur = [event.method, event.target, event.http_version, list(event.headers), b""]
        elif isinstance(event, h11.Data):
            cur[4] += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            method, target, version, headers, body = cur
            out.append(
                (method, target, version, _normalize(headers), body, _normalize(event.headers))
            )
            # A 2xx would accept a CONNECT's protocol switch; anything else is minimal.
            status = 405 if method == b"CONNECT" else 200
            conn.send(h11.Response(status_code=status, headers=[(b"content-length", b"0")]))
            conn.send(h11.EndOfMessage())
            if conn.our_state is h11.MUST_CLOSE:
                rest = conn.trailing_data[0]
                if not rest:  # (receive_data(b"") would mean EOF)
                    return Outcome(out, False)
                conn = h11.Connection(h11.SERVER)
                conn.receive_data(rest)
            else:
                conn.start_next_cycle()
        else:  # pragma: no cover - nothing else can come without an EOF
            raise AssertionError(f"unexpected h11 event {event!r}")


def _skip_empty_lines(conn: h11.Connection) -> h11.Connection | None:
    """pipeparse's documented leniency (README, Strictness): up to `Limits.max_empty_lines`
    CRLFs before a request line are ignored, where h11 rejects any. Restart h11 past them (its
    state between requests is a new connection's); None when there are too many."""
    data, closed = conn.trailing_data
    n = 0
    while data[n : n + 2] == b"\r\n":
        n += 2
    if not n:
        return conn
    if n // 2 > Limits().max_empty_lines:
        return None
    fresh = h11.Connection(h11.SERVER)
    if data[n:]:
        fresh.receive_data(data[n:])  # (receive_data(b"") would mean EOF)
    if closed:
        fresh.receive_data(b"")
    return fresh


def _req_from(buf: SeekableBuffer, r: FramedRequest) -> Req:
    h = r.head
    body = b"".join(bytes(buf.view(s, e)) for s, e in r.body)
    return (h.method, h.target, h.http_version, _normalize(h.headers), body, _normalize(r.trailers))


def run_whole(data: bytes) -> Outcome:
    try:
        reqs = parse_requests(data, allow_partial=True)  # like h11 and the index: wait
    except ProtocolError as e:
        return Outcome([_oneshot_req(r) for r in e.requests_before], True, e.status_hint)
    return Outcome([_oneshot_req(r) for r in reqs], False)


def _oneshot_req(r: Request) -> Req:
    return (
        r.method,
        r.target,
        r.http_version,
        _normalize(r.headers),
        r.body,
        _normalize(r.trailers),
    )


def run_incremental(data: bytes, cuts: list[int], capacity: int, reverse: bool) -> Outcome:
    """Feed `data` in pieces of the sizes in `cuts` (cycled), advancing after each write.

    The consumer takes every completed request at once (in reverse order when `reverse`, which
    leaves holes), so held bytes never exceed one incomplete request.
    """
    buf = SeekableBuffer(capacity)
    index = RequestIndex(buf)
    pending: list[FramedRequest] = []
    done: dict[int, Req] = {}
    pos = 0
    i = 0
    while pos < len(data) and index.error is None:
        n = min(cuts[i % len(cuts)], len(data) - pos, buf.writable())
        assert n > 0, "buffer full with nothing to take: a request larger than the buffer"
        i += 1
        buf.feed(data[pos : pos + n])
        pos += n
        pending.extend(index.advance())
        complete = [r for r in pending if r.end is not None]
        for r in reversed(complete) if reverse else complete:
            done[r.seq] = _req_from(buf, r)
            assert r.end is not None
            buf.release(r.start, r.end)
        pending = [r for r in pending if r.end is None]
        assert len(buf) == buf.tail - (pending[0].start if pending else index.position)
    assert sorted(done) == list(range(len(done)))
    err = index.error
    status = err.status_hint if err is not None else None
    return Outcome([done[k] for k in sorted(done)], err is not None, status)


# -- valid requests --------------------------------------------------------------------------

TCHAR = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
VCHAR = bytes(range(0x21, 0x7F))
OBS_TEXT = bytes(range(0x80, 0x100))
REG_NAME = b"-._~!$&'()*+,;=0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Field-value bytes: VCHAR and obs-text, with SP and HTAB weighted in to separate words.
VALUE_CHARS = VCHAR + OBS_TEXT + b" \t" * 24
FRAMING = {b"host", b"content-length", b"transfer-encoding"}
# Bodies that look like requests: pipeparse must frame them as data, not heads.
REQUEST_LIKE = [
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\r\n\r\n",
    b"0\r\n\r\n",
    b"5\r\nhello\r\n",
]


def over(alphabet: bytes, min_size: int = 0, max_size: int = 16) -> st.SearchStrategy[bytes]:
    """Byte strings over `alphabet` (one draw per string: generation is most of the cost)."""
    n = len(alphabet)
    return st.binary(min_size=min_size, max_size=max_size).map(
        lambda raw: bytes(alphabet[c % n] for c in raw)
    )


token = over(TCHAR, 1, 10)
ows = st.sampled_from([b"", b"", b" ", b"\t", b"  ", b" \t "])
# field-value = *field-content: no whitespace at either end (OWS is added around it).
field_value = over(VALUE_CHARS, 0, 40).map(lambda v: v.strip(b" \t"))


def cased(name: bytes) -> st.SearchStrategy[bytes]:
    """`name` with random letter case (field names and transfer codings are case-insensitive)."""
    return st.integers(0, (1 << len(name)) - 1).map(
        lambda bits: bytes(
            c ^ 0x20 if bits >> i & 1 and chr(c).isalpha() else c for i, c in enumerate(name)
        )
    )


# Host values: uri-host [ ":" port ] (RFC 9110 §7.2), or empty.
host_value = st.one_of(
    st.sampled_from([b"", b"a", b"example.com:8080", b"[::1]", b"[2001:db8::1]:80", b"1.2.3.4"]),
    st.tuples(over(REG_NAME, 1, 20), st.sampled_from([b"", b":", b":80", b":065535"])).map(
        b"".join
    ),
)
field_name = st.one_of(token, st.sampled_from([b"Accept", b"User-Agent", b"Cookie"])).filter(
    lambda n: n.lower() not in FRAMING
)


@st.composite
def field_line(draw: st.DrawFn) -> bytes:
    return draw(field_name) + b":" + draw(ows) + draw(field_value) + draw(ows)


@dataclass
class Msg:
    """A request, kept as lines so targeted mutations can break one rule at a time."""

    request_line: bytes
    fields: list[bytes]
    body: bytes = b""
    chunks: list[tuple[bytes, bytes]] | None = None  # (chunk-size line, data); data b"" = last
    trailers: list[bytes] = field(default_factory=list)

    def encode(self) -> bytes:
        out = [self.request_line, b"\r\n"]
        for f in self.fields:
            out += [f, b"\r\n"]
        out.append(b"\r\n")
        if self.chunks is None:
            out.append(self.body)
            return b"".join(out)
        for line, data in self.chunks:
            out += [line, b"\r\n"]
            if data:
                out += [data, b"\r\n"]
        for t in self.trailers:
            out += [t, b"\r\n"]
        out.append(b"\r\n")
        return b"".join(out)


@st.composite
def chunk_ext(draw: st.DrawFn) -> bytes:
    """RFC 9112 §7.1.1 chunk extensions, BWS included (never before the first ";")."""
    out = b""
    for i in range(draw(st.integers(0, 3))):
        bws = st.sampled_from([b"", b"", b" ", b"\t"])
        out += (draw(bws) if i else b"") + b";" + draw(bws) + draw(token)
        if draw(st.booleans()):
            quoted = st.lists(st.sampled_from([b"a", b" ", b'\\"', b";", b"=", b"\x80", b","]))
            value = draw(st.one_of(token, quoted.map(lambda p: b'"' + b"".join(p) + b'"')))
            out += draw(bws) + b"=" + draw(bws) + value
    return out


@st.composite
def chunk_size(draw: st.DrawFn, n: int) -> bytes:
    digits = format(n, draw(st.sampled_from(["x", "X"])))
    return digits.rjust(draw(st.integers(len(digits), 16)), "0").encode()


body_bytes = st.one_of(
    st.binary(max_size=40),
    st.lists(st.one_of(st.sampled_from(REQUEST_LIKE), st.binary(max_size=8)), max_size=4).map(
        b"".join
    ),
)


@st.composite
def message(draw: st.DrawFn) -> Msg:
    # CONNECT is left out: pipeparse answers it 501 (no tunnels), h11 would switch protocols.
    method = draw(
        st.one_of(
            st.sampled_from([b"GET", b"POST", b"PUT", b"HEAD", b"OPTIONS"]),
            token.filter(lambda t: t != b"CONNECT"),
        )
    )
    targets = [b"http://example.com/a?b=c", b"https://[::1]:8443", b"http://a.b:1?q"]
    target = draw(
        st.one_of(
            st.just(b"/"),
            st.sampled_from([b"*", *targets] if method == b"OPTIONS" else targets),
            st.binary(max_size=30).map(lambda b: b"/" + bytes(VCHAR[c % len(VCHAR)] for c in b)),
        )
    )
    http10 = draw(st.integers(0, 5)) == 0
    fields = draw(st.lists(field_line(), max_size=6))
    if not http10 or draw(st.booleans()):
        host = draw(cased(b"host")) + b":" + draw(ows) + draw(host_value) + draw(ows)
        fields.insert(draw(st.integers(0, len(fields))), host)
    if draw(st.integers(0, 6)) == 0:  # h11 closes here: framing must still agree after it
        fields.append(draw(cased(b"connection")) + b": close")
    kind = draw(
        st.sampled_from(["none", "length", "chunked"] if not http10 else ["none", "length"])
    )
    msg = Msg(method + b" " + target + b" HTTP/" + (b"1.0" if http10 else b"1.1"), fields)
    at = draw(st.integers(0, len(fields)))
    if kind == "length":
        msg.body = draw(body_bytes)
        cl = str(len(msg.body)).rjust(draw(st.integers(1, 3)), "0").encode()
        fields.insert(at, draw(cased(b"content-length")) + b":" + draw(ows) + cl + draw(ows))
    elif kind == "chunked":
        te = draw(cased(b"transfer-encoding")) + b":" + draw(ows) + draw(cased(b"chunked"))
        fields.insert(at, te + draw(ows))
        datas = draw(st.lists(body_bytes.filter(bool), max_size=4))
        msg.chunks = [(draw(chunk_size(len(d))) + draw(chunk_ext()), d) for d in datas]
        msg.chunks.append((b"0" * draw(st.integers(1, 3)) + draw(chunk_ext()), b""))
        msg.trailers = draw(st.lists(field_line(), max_size=3))
    return msg


messages = st.lists(message(), min_size=1, max_size=6)


def check_valid(msgs: list[Msg], cuts: list[int], extra: int, reverse: bool) -> None:
    data = b"".join(m.encode() for m in msgs)
    h = run_h11(data)
    assert not h.rejected and len(h.requests) == len(msgs), "the generator made a bad request"
    assert run_whole(data) == h
    capacity = max(len(m.encode()) for m in msgs) + extra
    assert run_incremental(data, [1], capacity, reverse) == h
    assert run_incremental(data, cuts, capacity, reverse) == h


@SETTINGS
@given(
    messages,
    st.lists(st.integers(1, 64), min_size=1, max_size=8),
    st.integers(0, 16),
    st.booleans(),
)
def test_valid_streams_agree_with_h11(
    msgs: list[Msg], cuts: list[int], extra: int, reverse: bool
) -> None:
    check_valid(msgs, cuts, extra, reverse)


# -- mutated requests -------------------------------------------------------------------------


def check_mutated(data: bytes, cuts: list[int]) -> tuple[Outcome, Outcome]:
    """pipeparse accepts a prefix of what h11 accepts; all pipeparse paths agree."""
    h = run_h11(data)
    whole = run_whole(data)
    n = len(whole.requests)
    assert n <= len(h.requests), f"pipeparse accepted {n} requests, h11 only {len(h.requests)}"
    assert whole.requests == h.requests[:n]
    # Incremental framing ends in the same place (its error may be found earlier, and be named
    # differently: a bare LF fails fast, before the head ends).
    inc = run_incremental(data, cuts, len(data) + 1, reverse=True)
    assert (inc.requests, inc.rejected) == (whole.requests, whole.rejected)
    return whole, h


@SETTINGS
@given(
    messages,
    st.lists(
        st.tuples(
            st.sampled_from(["flip", "insert", "delete"]),
            st.integers(0),
            st.binary(min_size=1, max_size=3),
        ),
        min_size=1,
        max_size=3,
    ),
    st.lists(st.integers(1, 64), min_size=1, max_size=8),
)
def test_randomly_mutated_streams_accept_no_more_than_h11(
    msgs: list[Msg], edits: list[tuple[str, int, bytes]], cuts: list[int]
) -> None:
    data = bytearray(b"".join(m.encode() for m in msgs))
    for op, at, blob in edits:
        at %= len(data) + 1
        if op == "flip" and at < len(data):
            data[at] = blob[0]
        elif op == "insert":
            data[at:at] = blob
        else:
            del data[at : at + len(blob)]
    check_mutated(bytes(data), cuts)


# Targeted mutations: each breaks one rule in one request (returns False when it does not apply).
Mutation = Callable[[Msg, st.DataObject], bool]


def _add_field(line: bytes) -> Mutation:
    def mutate(m: Msg, data: st.DataObject) -> bool:
        m.fields.insert(data.draw(st.integers(0, len(m.fields))), line)
        return True

    return mutate


def _on_framing(prefix: bytes, fn: Callable[[Msg, int, st.DataObject], None]) -> Mutation:
    def mutate(m: Msg, data: st.DataObject) -> bool:
        idx = [i for i, f in enumerate(m.fields) if f.lower().startswith(prefix)]
        if not idx:
            return False
        fn(m, idx[0], data)
        return True

    return mutate


def _chunk_line(bad: list[bytes]) -> Mutation:
    def mutate(m: Msg, data: st.DataObject) -> bool:
        if not m.chunks:
            return False
        i = data.draw(st.integers(0, len(m.chunks) - 1))
        chunk = m.chunks[i][1]
        size = len(chunk)
        new = data.draw(st.sampled_from(bad)).replace(b"N", format(size, "x").encode())
        m.chunks[i] = (new, chunk)
        return True

    return mutate


def _in_request_line(old: bytes, new: bytes) -> Mutation:
    """Replace one occurrence of `old` in the request line."""

    def mutate(m: Msg, data: st.DataObject) -> bool:
        spots = [j.start() for j in re.finditer(re.escape(old), m.request_line)]
        if not spots:
            return False
        at = data.draw(st.sampled_from(spots))
        m.request_line = m.request_line[:at] + new + m.request_line[at + len(old) :]
        return True

    return mutate


def _space_before_colon(m: Msg, data: st.DataObject) -> bool:
    if not m.fields:
        return False
    i = data.draw(st.integers(0, len(m.fields) - 1))
    name, _, value = m.fields[i].partition(b":")
    m.fields[i] = name + data.draw(st.sampled_from([b" ", b"\t"])) + b":" + value
    return True


def _bare_lf_ending(m: Msg, data: st.DataObject) -> bool:
    """End one line of the head with LF alone (the encoder ends every line with CRLF)."""
    i = data.draw(st.integers(0, len(m.fields)))
    if i == len(m.fields):
        m.request_line += b"\n" + (m.fields.pop(0) if m.fields else b"Host: a")
    else:
        m.fields[i] += b"\n" + b"X-Bare: lf"
    return True


def _field_value_insert(blob: bytes) -> Mutation:
    def mutate(m: Msg, data: st.DataObject) -> bool:
        i = data.draw(st.integers(0, len(m.fields) - 1)) if m.fields else None
        if i is None:
            return False
        f = m.fields[i]
        colon = f.index(b":")
        at = data.draw(st.integers(colon + 1, len(f)))
        m.fields[i] = f[:at] + blob + f[at:]
        return True

    return mutate


def _set_version(version: bytes) -> Mutation:
    def mutate(m: Msg, data: st.DataObject) -> bool:
        m.request_line = m.request_line.rsplit(b" ", 1)[0] + b" " + version
        return True

    return mutate


def _set_target(method: bytes | None, targets: list[bytes]) -> Mutation:
    """Replace the request-target (and the method, when given)."""

    def mutate(m: Msg, data: st.DataObject) -> bool:
        old_method, _, version = m.request_line.split(b" ")
        target = data.draw(st.sampled_from(targets))
        m.request_line = b" ".join([method or old_method, target, version])
        return method is not None or old_method != b"OPTIONS" or target != b"*"

    return mutate


def _empty_lines_before(m: Msg, data: st.DataObject) -> bool:
    m.request_line = b"\r\n" * (Limits().max_empty_lines + 1) + m.request_line
    return True


def _drop_host(m: Msg, data: st.DataObject) -> bool:
    if not m.request_line.endswith(b"1.1"):
        return False
    m.fields = [f for f in m.fields if not f.lower().startswith(b"host:")]
    return True


def _dup_cl(m: Msg, i: int, data: st.DataObject) -> None:
    value = m.fields[i].split(b":", 1)[1].strip()
    other = data.draw(st.sampled_from([value, b"7", value + b", " + value]))
    m.fields.insert(i + 1, b"Content-Length: " + other)


def _cl_list(m: Msg, i: int, data: st.DataObject) -> None:
    value = m.fields[i].split(b":", 1)[1].strip()
    m.fields[i] = b"Content-Length: " + value + b"," + value


def _te_on_10(m: Msg, i: int, data: st.DataObject) -> None:
    m.request_line = m.request_line[:-3] + b"1.0"


def _trailer(line: bytes) -> Mutation:
    def mutate(m: Msg, data: st.DataObject) -> bool:
        if m.chunks is None:
            return False
        m.trailers.insert(data.draw(st.integers(0, len(m.trailers))), line)
        return True

    return mutate


def _chunk_footer(m: Msg, data: st.DataObject) -> bool:
    sized = [i for i, (_, d) in enumerate(m.chunks or []) if d]
    if not sized:
        return False
    i = data.draw(st.sampled_from(sized))
    line, d = m.chunks[i]  # type: ignore[index]
    m.chunks[i] = (line, d + data.draw(st.sampled_from([b"x", b"\n", b"\r"])))  # type: ignore[index]
    return True


def _bare_lf_chunked(m: Msg, data: st.DataObject) -> bool:
    if not m.chunks:
        return False
    m.trailers.append(b"X: y\n")
    return True


TARGETED: dict[str, Mutation] = {
    "CL+TE": _on_framing(
        b"transfer-encoding:", lambda m, i, d: m.fields.append(b"Content-Length: 3")
    ),
    "TE+CL": _on_framing(
        b"content-length:", lambda m, i, d: m.fields.insert(i, b"Transfer-Encoding: chunked")
    ),
    "duplicate CL": _on_framing(b"content-length:", _dup_cl),
    "CL list": _on_framing(b"content-length:", _cl_list),
    "CL not digits": _on_framing(
        b"content-length:", lambda m, i, d: m.fields.__setitem__(i, b"Content-Length: +1")
    ),
    "TE gzip": _on_framing(
        b"transfer-encoding:",
        lambda m, i, d: m.fields.__setitem__(
            i, b"Transfer-Encoding: " + d.draw(st.sampled_from([b"gzip", b"gzip, chunked", b"x"]))
        ),
    ),
    "TE twice": _on_framing(
        b"transfer-encoding:", lambda m, i, d: m.fields.append(b"Transfer-Encoding: chunked")
    ),
    "TE on HTTP/1.0": _on_framing(b"transfer-encoding:", _te_on_10),
    "bad chunk size": _chunk_line(
        [
            *[b"0xN", b"+N", b" N", b"-N", b"N ", b"N\t", b"g", b"", b"N;", b"N ;a", b"N;a="],
            *[b"N;a b", b'N;a="b', b"N;a=\x01", b"N;\x80", b"0000000000000000N"],
        ]
    ),
    "chunk data footer": _chunk_footer,
    "trailer CL": _trailer(b"Content-Length: 0"),
    "trailer TE": _trailer(b"Transfer-Encoding: chunked"),
    "trailer obs-fold": _trailer(b" folded"),
    "trailer bare LF": _bare_lf_chunked,
    "trailer space before colon": _trailer(b"X : y"),
    "obs-fold": _field_value_insert(b"\r\n "),
    "space before colon": _space_before_colon,
    "NUL": _field_value_insert(b"\x00"),
    "control char": _field_value_insert(b"\x01"),
    "DEL": _field_value_insert(b"\x7f"),
    "bare CR": _field_value_insert(b"\r"),
    "bare LF": _field_value_insert(b"\n"),
    "bare LF ending": _bare_lf_ending,
    "missing Host": _drop_host,
    "duplicate Host": _on_framing(b"host:", lambda m, i, d: m.fields.insert(i, b"Host: b")),
    "bad Host": _on_framing(
        b"host:",
        lambda m, i, d: m.fields.__setitem__(
            i, b"Host: " + d.draw(st.sampled_from([b"a b", b"a@b", b"a:8x", b"[::1", b"a/b"]))
        ),
    ),
    "asterisk or authority form": _set_target(None, [b"*", b"example.com:443", b"a:1"]),
    "absolute form with userinfo": _set_target(None, [b"http://u@a/", b"http://u:p@a:1/x"]),
    "CONNECT": _set_target(b"CONNECT", [b"example.com:443", b"/", b"*"]),
    "too many empty lines": _empty_lines_before,
    "double SP in request line": _in_request_line(b" ", b"  "),
    "lowercase version": _in_request_line(b"HTTP/", b"http/"),
    "bad version": _set_version(b"HTTP/1.2"),
    "HTTP/2.0": _set_version(b"HTTP/2.0"),
    "HTTP/0.9": _set_version(b"HTTP/0.9"),
    "no version": _set_version(b"HTTP/1"),
    "field without colon": _add_field(b"NoColon"),
    "empty field name": _add_field(b": v"),
}


@pytest.mark.parametrize("kind", sorted(TARGETED))
@settings(
    max_examples=max(8, EXAMPLES // 15),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(
    st.lists(message(), min_size=1, max_size=3),
    st.data(),
    st.lists(st.integers(1, 64), min_size=1, max_size=4),
)
def test_targeted_mutations_are_rejected(
    kind: str, msgs: list[Msg], data: st.DataObject, cuts: list[int]
) -> None:
    k = data.draw(st.integers(0, len(msgs) - 1))
    bad = replace(msgs[k], fields=list(msgs[k].fields), trailers=list(msgs[k].trailers))
    bad.chunks = list(bad.chunks) if bad.chunks is not None else None
    assume(TARGETED[kind](bad, data))  # (some apply only to chunked bodies, or HTTP/1.1)
    stream = b"".join(m.encode() for m in [*msgs[:k], bad, *msgs[k + 1 :]])
    whole, _ = check_mutated(stream, cuts)
    # Every targeted mutation breaks a rule pipeparse enforces: the requests before the broken
    # one are accepted, it is rejected, and nothing after it is framed.
    assert whole.rejected, f"{kind}: pipeparse accepted {bad.encode()!r}"
    assert len(whole.requests) == k


# -- the README's Strictness table ---------------------------------------------------------------

_GET = b"GET / HTTP/1.1\r\nHost: a\r\n"
_CHUNKED = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"

# Examples of each row of the README table (keyed by the row's first cell); h11 accepts each.
_TRAILERS = _CHUNKED + b"0\r\n"
STRICTNESS_EXAMPLES: dict[str, list[bytes]] = {
    "bare LF line endings (`\\n` without `\\r`), in the head or the trailers": [
        b"GET / HTTP/1.1\nHost: a\n\n",
        _GET + b"X: y\n\r\n",
        _TRAILERS + b"X: y\n\n",
    ],
    "obs-fold (a field line starting with SP or HTAB), in the head or the trailers": [
        _GET + b"X: a\r\n b\r\n\r\n",
        _GET + b"X: a\r\n\t\tb\r\n\r\n",
        _TRAILERS + b"X: a\r\n b\r\n\r\n",
    ],
    "control characters other than HTAB (`\\x01`-`\\x08`, `\\x0e`-`\\x1f`, `\\x7f`) in a field"
    " value": [
        _GET + b"X: a" + bytes([c]) + b"b\r\n\r\n" for c in [*range(1, 9), *range(14, 32), 127]
    ]
    + [_TRAILERS + b"X: \x01\r\n\r\n"],
    "repeated Content-Length, even with identical values, or a list of them (`5, 5`)": [
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\nx",
    ],
    "both Transfer-Encoding and Content-Length": [
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"1\r\nx\r\n0\r\n\r\n"
    ],
    "Transfer-Encoding on an HTTP/1.0 request": [
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"
    ],
    "HTTP versions other than 1.0 and 1.1 (`HTTP/0.9`, `HTTP/1.2`, `HTTP/2.0`)": [
        b"GET / HTTP/" + v + b"\r\nHost: a\r\n\r\n" for v in [b"0.9", b"1.2", b"2.0", b"9.9"]
    ],
    "chunk extensions that break the chunk-ext grammar (`5;`, `5;a=`, control characters)": [
        _CHUNKED + b"1;\r\nx\r\n0\r\n\r\n",
        _CHUNKED + b"1;a=\r\nx\r\n0\r\n\r\n",
        _CHUNKED + b"1;a b\r\nx\r\n0\r\n\r\n",
        _CHUNKED + b'1;a="b\r\nx\r\n0\r\n\r\n',
        _CHUNKED + b"1;a=\x01\r\nx\r\n0\r\n\r\n",
        _CHUNKED + b"1;\xff\r\nx\r\n0\r\n\r\n",
    ],
    "whitespace between a chunk size or its extensions and the CRLF (`5 \\r\\n`)": [
        _CHUNKED + b"1 \r\nx\r\n0\r\n\r\n",
        _CHUNKED + b"1;a=b\t\r\nx\r\n0\r\n\r\n",
    ],
    "chunk sizes of more than 16 hex digits": [
        _CHUNKED + b"0" * 16 + b"1\r\nx\r\n0\r\n\r\n",
        _CHUNKED + b"0" * 19 + b"1\r\nx\r\n0\r\n\r\n",
    ],
    "Content-Length or Transfer-Encoding in the trailer section, even valid": [
        _TRAILERS + b"Content-Length: 0\r\n\r\n",
        _TRAILERS + b"Transfer-Encoding: chunked\r\n\r\n",
    ],
    "a head of more than `max_head_size` (16 KiB), arriving whole": [
        _GET + b"X: " + b"a" * (16 * 1024) + b"\r\n\r\n"
    ],
    "more than `max_headers` (100) fields in the head or the trailers": [
        _GET + b"X: y\r\n" * 100 + b"\r\n",
        _TRAILERS + b"X: y\r\n" * 101 + b"\r\n",
    ],
    "a request-target of more than `max_target_size` (8 KiB)": [
        b"GET /" + b"a" * (8 * 1024) + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    ],
    "a body of more than `max_body_size` (16 MiB)": [
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 16777217\r\n\r\n" + b"x" * 16777217
    ],
    "a chunk-size line of more than `max_chunk_line` (4 KiB)": [
        _CHUNKED + b"1;a=" + b"b" * (4 * 1024) + b"\r\nx\r\n0\r\n\r\n"
    ],
    'a Host value that is not `uri-host [ ":" port ]` (`exa mple.com`, `a@b`, `a:8x`, `[::1`)': [
        b"GET / HTTP/1.1\r\nHost: " + v + b"\r\n\r\n"
        for v in [b"exa mple.com", b"a@b", b"a:8x", b"[::1", b"[1::2::3]", b"a/b", b"a%zz"]
    ],
    "a request-target in a form its method does not allow (`GET *`, `GET host:443`)": [
        b"GET * HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST * HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        b"GET example.com:443 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET example.com HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET urn:x:y HTTP/1.1\r\nHost: a\r\n\r\n",
    ],
    "CONNECT (pipeparse does not tunnel; what follows is never parsed)": [
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    ],
}

# The other direction: what pipeparse accepts and h11 rejects (keyed by the row's first cell).
LENIENT_EXAMPLES: dict[str, list[bytes]] = {
    "empty lines (CRLF) before a request line, up to `max_empty_lines` (4)": [
        b"\r\n" + _GET + b"\r\n",
        _GET + b"\r\n" + b"\r\n" * 4 + _GET + b"\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx\r\n" + _GET + b"\r\n",
    ],
}

README = Path(__file__).resolve().parent.parent / "README.md"


def _readme_rows() -> dict[str, str]:
    """The Strictness table: first cell -> last cell (pipeparse's answer)."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Strictness") :]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 3 and cells[0] not in ("input", "---"):
            rows[cells[0]] = cells[2]
        elif rows and not line.startswith("|"):
            break
    return rows


def test_readme_strictness_table_lists_exactly_the_checked_differences() -> None:
    assert sorted(_readme_rows()) == sorted(STRICTNESS_EXAMPLES | LENIENT_EXAMPLES)


@pytest.mark.parametrize("row", sorted(STRICTNESS_EXAMPLES))
def test_each_strictness_row_is_true_of_h11_and_pipeparse(row: str) -> None:
    status = re.search(r"\b([45]\d\d)\b", _readme_rows()[row])
    assert status is not None
    for data in STRICTNESS_EXAMPLES[row]:
        h = run_h11(data, lenient=False)
        assert not h.rejected and h.requests, f"h11 rejects {data[:80]!r}"
        whole = run_whole(data)
        assert whole.rejected and whole.requests == [], f"pipeparse accepts {data[:80]!r}"
        assert whole.status == int(status.group(1)), data[:80]


@pytest.mark.parametrize("row", sorted(LENIENT_EXAMPLES))
def test_each_lenient_row_is_true_of_h11_and_pipeparse(row: str) -> None:
    assert _readme_rows()[row].startswith("accepted")
    for data in LENIENT_EXAMPLES[row]:
        h = run_h11(data, lenient=False)
        assert h.rejected, f"h11 accepts {data[:80]!r}"
        whole = run_whole(data)
        assert not whole.rejected and len(whole.requests) == data.count(b"HTTP/1.1")
