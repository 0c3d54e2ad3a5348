"""Memory stays flat while a million pipelined requests stream through a 1 MiB buffer.

Strategy: a periodic stream (eight keep-alive GETs, a Content-Length POST, a chunked POST) is
written in 64 KiB pieces that split requests anywhere; after each write the index advances and
the consumer releases every completed request (last first, so holes form and coalesce). The
buffer must keep its capacity and compact in place, and the held bytes, holes and unfinished
requests stay bounded. `tracemalloc` watches the last 20,000 requests: tracing the whole run
would make it ten times slower, and a leak of even a few bytes per request shows in that window.
"""

from __future__ import annotations

import tracemalloc

from pipeparse import FramedRequest, MiB, RequestIndex, SeekableBuffer

GET = b"GET /plaintext HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n"
PERIOD = (
    GET * 8
    + b"POST /p HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello"
    + b"POST /c HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"3\r\nabc\r\n0\r\nT: v\r\n\r\n"
)
REQUESTS = 1_000_000
TRACED = 20_000
WRITE = 64 * 1024


def test_a_million_requests_through_a_1_mib_buffer_keep_memory_flat() -> None:
    stream = memoryview(PERIOD * (WRITE // len(PERIOD) + 2))  # any 64 KiB window of the stream
    buf = SeekableBuffer(1 * MiB)
    index = RequestIndex(buf)
    pending: list[FramedRequest] = []
    pos = done = body_bytes = 0
    tracing_from: int | None = None
    while done < REQUESTS:
        if tracing_from is None and done >= REQUESTS - TRACED:
            tracemalloc.start()
            tracing_from = tracemalloc.get_traced_memory()[0]
        start = pos % len(PERIOD)
        n = min(WRITE, buf.writable())
        buf.feed(stream[start : start + n])
        pos += n
        pending += index.advance()
        for r in reversed(pending):
            if r.end is not None:
                body_bytes += r.body_framed
                buf.release(r.start, r.end)
                done += 1
        pending = [r for r in pending if r.end is None]
        assert len(pending) <= 1
        assert len(buf.holes) <= 1
        assert len(buf) < len(PERIOD)  # only the unfinished request is held
    assert tracing_from is not None
    now, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert index.error is None
    periods, rest = divmod(done, 10)
    assert body_bytes == 8 * periods + (5 if rest > 8 else 0) + (3 if rest > 9 else 0)
    assert buf.capacity == 1 * MiB
    assert buf.compactions > 10  # writes wrapped the block many times, in place
    assert now - tracing_from < 64 * 1024, "memory grew while streaming"
    assert peak - tracing_from < 1 * MiB  # one write's requests, at most
