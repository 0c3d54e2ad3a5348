"""Parse benchmark: framing and parsing one pipelined request stream, parser against parser.

Strategy: each workload is one byte string of pipelined requests, built once. Each parser takes
the whole stream the way a server would get it (in 64 KiB reads; `parse_requests` takes it at
once), frames every request, and hands over its method, target, fields and body, counted so that
every parser is checked to have seen the same requests and body bytes. Each (workload, parser)
runs `repeats` times in this one process, after one untimed warm-up; the median time gives
requests/s, and each parser's ratio is to h11's on the same workload.

Parsers:
- ``pipeparse``: `SeekableBuffer` + `RequestIndex.advance()` after each read; the consumer looks
  at the parsed head and takes the body as views, then releases the request's bytes.
- ``pipeparse-oneshot``: `parse_requests` on the whole stream (bodies copied into `Request`s).
- ``h11``: a sequential ``h11.Connection(h11.SERVER)``: events to EndOfMessage, a minimal response
  (h11 frames nothing more until it is sent), `start_next_cycle`.
- ``httptools``: ``HttpRequestParser`` with the usual callbacks, when httptools is importable.

Workloads: TechEmpower plaintext (``GET /plaintext``: identical heads, where pipeparse's head
cache always hits), the same requests with a distinct target and cookie each (``plaintext-varied``:
the cache never hits, so this is pipeparse without it), 1 KiB and 64 KiB Content-Length POSTs, and
chunked POSTs.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import h11

from pipeparse import KiB, MiB, RequestIndex, SeekableBuffer, parse_requests
from pipeparse.clients.bench.stats import Row

__all__ = ["PARSERS", "WORKLOADS", "Workload", "main", "run_parse_bench"]

READ = 64 * KiB  # bytes per simulated socket read
ACCEPT = b"text/plain,text/html;q=0.9,application/xhtml+xml;q=0.9,application/xml;q=0.8,*/*;q=0.7"


@dataclass(frozen=True, slots=True)
class Workload:
    """A stream of `count` pipelined requests carrying `body_bytes` of decoded body in all."""

    name: str
    stream: bytes
    count: int
    body_bytes: int


# -- workloads ------------------------------------------------------------------------------


def plaintext(count: int) -> Workload:
    req = (
        b"GET /plaintext HTTP/1.1\r\nHost: localhost:8080\r\nAccept: "
        + ACCEPT
        + b"\r\nConnection: keep-alive\r\n\r\n"
    )
    return Workload("plaintext", req * count, count, 0)


def plaintext_varied(count: int) -> Workload:
    """Plaintext requests whose target and cookie differ every time (no two heads alike)."""
    reqs = [
        b"GET /plaintext?id=%d HTTP/1.1\r\nHost: localhost:8080\r\nAccept: %s\r\n"
        b"Cookie: session=%08x\r\nConnection: keep-alive\r\n\r\n" % (i, ACCEPT, i * 2654435761)
        for i in range(count)
    ]
    return Workload("plaintext-varied", b"".join(reqs), count, 0)


def post(count: int, size: int, name: str) -> Workload:
    body = bytes(i % 251 for i in range(size))
    req = (
        b"POST /upload HTTP/1.1\r\nHost: localhost:8080\r\nContent-Type: application/octet-stream"
        b"\r\nContent-Length: %d\r\n\r\n" % size
    ) + body
    return Workload(name, req * count, count, size * count)


def chunked(count: int, chunks: int = 4, size: int = 256) -> Workload:
    data = bytes(i % 251 for i in range(size))
    req = (
        b"POST /upload HTTP/1.1\r\nHost: localhost:8080\r\nTransfer-Encoding: chunked\r\n\r\n"
        + (b"%x\r\n" % size + data + b"\r\n") * chunks
        + b"0\r\n\r\n"
    )
    return Workload("chunked", req * count, count, chunks * size * count)


def workloads(quick: bool = False) -> list[Workload]:
    scale = 10 if quick else 1
    return [
        plaintext(20_000 // scale),
        plaintext_varied(20_000 // scale),
        post(20_000 // scale, 1 * KiB, "post-1k"),
        post(1_000 // scale, 64 * KiB, "post-64k"),
        chunked(10_000 // scale),
    ]


WORKLOADS: dict[str, Callable[[int], Workload]] = {
    "plaintext": plaintext,
    "plaintext-varied": plaintext_varied,
    "post-1k": lambda n: post(n, 1 * KiB, "post-1k"),
    "post-64k": lambda n: post(n, 64 * KiB, "post-64k"),
    "chunked": chunked,
}


# -- parsers: each returns (requests, body bytes) -------------------------------------------


def run_pipeparse(stream: bytes) -> tuple[int, int]:
    buf = SeekableBuffer(1 * MiB)
    index = RequestIndex(buf)
    view = memoryview(stream)
    count = body_bytes = 0
    pending = []
    for pos in range(0, len(stream), READ):
        buf.feed(view[pos : pos + READ])
        pending += index.advance()
        done = 0
        for r in pending:
            if r.end is None:
                break
            head = r.head
            _ = (head.method, head.target, head.headers)
            for s, e in r.body:
                body_bytes += len(buf.view(s, e))
            buf.release(r.start, r.end)
            done += 1
        count += done
        del pending[:done]
    if index.error is not None:
        raise index.error
    return count, body_bytes


def run_pipeparse_oneshot(stream: bytes) -> tuple[int, int]:
    reqs = parse_requests(stream)
    return len(reqs), sum(len(r.body) for r in reqs)


def run_h11(stream: bytes) -> tuple[int, int]:
    conn = h11.Connection(h11.SERVER)
    response = h11.Response(status_code=200, headers=[(b"content-length", b"0")])
    end = h11.EndOfMessage()
    view = memoryview(stream)
    count = body_bytes = 0
    for pos in range(0, len(stream), READ):
        conn.receive_data(bytes(view[pos : pos + READ]))
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                break
            if type(event) is h11.Request:
                _ = (event.method, event.target, event.headers)
            elif type(event) is h11.Data:
                body_bytes += len(event.data)
            elif type(event) is h11.EndOfMessage:
                conn.send(response)
                conn.send(end)
                conn.start_next_cycle()
                count += 1
    return count, body_bytes


def _httptools() -> Callable[[bytes], tuple[int, int]] | None:
    try:
        import httptools
    except ImportError:
        return None

    class Protocol:
        __slots__ = ("body_bytes", "count", "headers", "url")

        def __init__(self) -> None:
            self.count = self.body_bytes = 0
            self.headers: list[tuple[bytes, bytes]] = []
            self.url = b""

        def on_message_begin(self) -> None:
            self.headers = []

        def on_url(self, url: bytes) -> None:
            self.url = url

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers.append((name, value))

        def on_body(self, body: bytes) -> None:
            self.body_bytes += len(body)

        def on_message_complete(self) -> None:
            self.count += 1

    def run_httptools(stream: bytes) -> tuple[int, int]:
        proto = Protocol()
        parser = httptools.HttpRequestParser(proto)
        view = memoryview(stream)
        for pos in range(0, len(stream), READ):
            parser.feed_data(bytes(view[pos : pos + READ]))
        return proto.count, proto.body_bytes

    return run_httptools


PARSERS: dict[str, Callable[[bytes], tuple[int, int]]] = {
    "pipeparse": run_pipeparse,
    "pipeparse-oneshot": run_pipeparse_oneshot,
    "h11": run_h11,
}
_ht = _httptools()
if _ht is not None:
    PARSERS["httptools"] = _ht


# -- running ---------------------------------------------------------------------------------


def measure(parse: Callable[[bytes], tuple[int, int]], work: Workload, repeats: int) -> float:
    """Median requests/s of `repeats` timed runs (after one untimed, checked warm-up)."""
    got = parse(work.stream)
    if got != (work.count, work.body_bytes):
        raise AssertionError(f"{work.name}: parsed {got}, expected {(work.count, work.body_bytes)}")
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        parse(work.stream)
        times.append(time.perf_counter() - t0)
    return work.count / statistics.median(times)


def run_parse_bench(repeats: int = 5, quick: bool = False) -> list[Row]:
    """Rows of ``{"workload", "parser", "requests_per_s", "ratio_vs_h11"}``, h11 first."""
    rows: list[Row] = []
    order = ["h11", *(p for p in PARSERS if p != "h11")]
    for work in workloads(quick):
        rps = {name: measure(PARSERS[name], work, repeats) for name in order}
        for name in order:
            rows.append(
                {
                    "workload": work.name,
                    "parser": name,
                    "requests_per_s": round(rps[name]),
                    "ratio_vs_h11": round(rps[name] / rps["h11"], 2),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per cell (median)")
    parser.add_argument("--quick", action="store_true", help="a tenth of the requests")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if "httptools" not in PARSERS:
        print("(httptools is not installed: its rows are left out)")
    print(f"{'workload':<18} {'parser':<18} {'requests/s':>12} {'vs h11':>8}")
    for row in run_parse_bench(args.repeats, args.quick):
        print(
            f"{row['workload']:<18} {row['parser']:<18} "
            f"{row['requests_per_s']:>12,} {row['ratio_vs_h11']:>7.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
