"""The findings `pipeparse bench` ends with, read off synthetic rows: each line's figure and
comparison, lines left out when their rows are missing, and skipped sections said so."""

from __future__ import annotations

from typing import Any

from pipeparse.clients.bench.findings import (
    batching_findings,
    connections_findings,
    findings,
    format_findings,
    parse_findings,
    seek_findings,
    server_findings,
    wall_findings,
)
from pipeparse.clients.bench.seek import seek_row


def _server(
    engine: str, handler: str, depth: int, rps: float, interface: str = "native", p50: float = 1.0
) -> dict[str, Any]:
    return {
        "engine": engine,
        "interface": interface,
        "handler": handler,
        "depth": depth,
        "connections": 1,
        "rps": rps,
        "p50_ms": p50,
        "p99_ms": 2 * p50,
    }


def _texts(rows: list[dict[str, Any]]) -> list[str]:
    return [r["finding"] for r in rows]


SERVER = [
    _server("pipeparse", "instant", 16, 48_000.0, p50=0.3),
    _server("h11", "instant", 16, 10_000.0, p50=1.5),
    _server("pipeparse", "instant", 1, 6_000.0, p50=0.2),
    _server("h11", "instant", 1, 4_000.0, p50=0.25),
    _server("pipeparse", "sleep10ms", 16, 1_400.0, p50=11.5),
    _server("h11", "sleep10ms", 16, 93.5, p50=170.0),
    _server("pipeparse", "instant", 16, 35_000.0, "asgi"),
    _server("h11", "instant", 16, 6_000.0, "asgi"),
    _server("uvicorn", "instant", 16, 25_000.0, "asgi"),
    _server("granian-flush", "instant", 16, 70_000.0, "asgi"),
]


def test_server_findings_compare_depths_engines_and_peers() -> None:
    assert _texts(server_findings(SERVER)) == [
        "pipelining, one connection, instant native handler: pipeparse at depth 16 serves "
        "48,000 rps, 8.00x its 6,000 at depth 1 (h11, one request at a time: 2.50x)",
        "instant handlers, depth 16, one connection (native): pipeparse 48,000 rps against "
        "h11's 10,000, 4.80x; p50 0.3 ms against 1.5 ms",
        "handlers that wait 10 ms, depth 16, one connection (native): pipeparse 1,400 rps "
        "against h11's 93.5, 15.0x; p50 11.5 ms against 170 ms",
        "instant handlers, depth 1, one connection (native): pipeparse 6,000 rps against h11's "
        "4,000, 1.50x; p50 0.2 ms against 0.25 ms",
        "the same ASGI app, instant handlers, depth 16: pipeparse 35,000 rps; uvicorn 25,000 "
        "(1.40x), granian-flush 70,000 (0.50x)",
    ]


def test_server_findings_compare_pipeparses_loops_and_keep_trio_for_the_rest() -> None:
    on_uvloop = [
        {**_server("pipeparse", "instant", 16, 60_000.0), "loop": "uvloop"},
        {**_server("pipeparse", "instant", 1, 12_000.0), "loop": "uvloop"},
    ]
    texts = _texts(server_findings(on_uvloop + SERVER))  # (its rows first: trio's still count)
    assert texts[0].startswith("pipelining, one connection, instant native handler: pipeparse "
                               "at depth 16 serves 48,000 rps")
    assert texts[4:6] == [
        "pipeparse's loops, instant native handlers, depth 16: trio 48,000 rps; uvloop 60,000 "
        "(1.25x)",
        "pipeparse's loops, instant native handlers, depth 1: trio 6,000 rps; uvloop 12,000 "
        "(2.00x)",
    ]


def test_server_findings_leave_out_what_was_not_measured() -> None:
    # An ASGI-only grid without depth 1: no pipelining line, comparisons on ASGI, no peers.
    rows = [
        _server("pipeparse", "sleep1ms", 16, 8_000.0, "asgi"),
        _server("h11", "sleep1ms", 16, 800.0, "asgi"),
        _server("pipeparse", "instant", 16, 30_000.0, "asgi"),
    ]
    assert _texts(server_findings(rows)) == [
        "handlers that wait 1 ms, depth 16, one connection (asgi): pipeparse 8,000 rps against "
        "h11's 800, 10.0x; p50 1 ms against 1 ms"
    ]
    assert server_findings([]) == []


def _wall(engine: str, connections: int, rps: float, p99: float) -> dict[str, Any]:
    return {"engine": engine, "connections": connections, "rps": rps, "p50_ms": 1.0, "p99_ms": p99}


def test_wall_findings_name_the_first_count_near_the_peak() -> None:
    rows = [
        _wall("pipeparse", 1, 45_000.0, 0.5),
        _wall("h11", 1, 9_000.0, 2.0),
        _wall("pipeparse", 8, 80_000.0, 3.5),
        _wall("h11", 8, 8_000.0, 28.0),
        _wall("pipeparse", 64, 82_000.0, 24.5),
        _wall("h11", 64, 7_500.0, 150.0),
    ]
    assert _texts(wall_findings(rows)) == [
        "depth 16, instant ASGI handler: pipeparse reaches 80,000 rps at 8 connections "
        "(p99 3.5 ms), within 5% of its peak of 82,000; more connections add latency, not "
        "throughput (p99 24.5 ms at 64)",
        "at 8 connections, against pipeparse's 80,000 rps: h11 8,000 (10.0x)",
    ]
    # The peak at the last count: nothing beyond it to warn about.
    rows = [_wall("pipeparse", 1, 10_000.0, 1.0), _wall("pipeparse", 2, 20_000.0, 2.0)]
    assert _texts(wall_findings(rows)) == [
        "depth 16, instant ASGI handler: pipeparse reaches 20,000 rps at 2 connections "
        "(p99 2 ms), its peak"
    ]


def _batching(recv_size: int | str, flush: str, depth: int, rps: float, ratio: float) -> Any:
    return {
        "recv_size": recv_size,
        "flush": flush,
        "handler": "instant",
        "depth": depth,
        "connections": 1,
        "rps": rps,
        "p99_ms": 1.0,
        "rps_vs_adaptive": ratio,
    }


def test_batching_findings_name_the_flags_of_the_best_setting() -> None:
    rows = [
        _batching("adaptive", "adaptive", 1, 8_000.0, 1.0),
        _batching(4096, "adaptive", 1, 7_900.0, 0.988),
        _batching("adaptive", "adaptive", 16, 50_000.0, 1.0),
        _batching(4096, "each", 16, 61_500.0, 1.23),
        _batching("adaptive", "each", 16, 60_000.0, 1.2),
    ]
    assert _texts(batching_findings(rows)) == [
        "depth 1, 1 connection: the adaptive default is the fastest setting measured (8,000 rps)",
        "depth 16, 1 connection: `--recv-size 4096 --flush each` serves 61,500 rps, 1.23x the "
        "adaptive default's 50,000",
    ]


def _conn(measure: str, server: str, connections: int, **values: Any) -> dict[str, Any]:
    row = {"measure": measure, "server": server, "connections": connections}
    row.update({"kib_per_connection": None, "depth": None, "rps": None, "rps_vs_fixed": None})
    row.update(values)
    return row


def test_connections_findings_memory_per_idle_connection_and_buffers() -> None:
    rows = [
        _conn("idle rss", "pipeparse", 1000, kib_per_connection=10.8),
        _conn("idle rss", "pipeparse", 10000, kib_per_connection=12.8),
        _conn("idle rss", "uvicorn", 1000, kib_per_connection=7.2),
        _conn("idle rss", "uvicorn", 10000, kib_per_connection=7.7),
        _conn("buffer growing", "pipeparse", 64, depth=16, rps=164_240.0, rps_vs_fixed=1.043),
        _conn("buffer fixed 256K", "pipeparse", 64, depth=16, rps=157_433.0, rps_vs_fixed=1.0),
    ]
    assert _texts(connections_findings(rows)) == [
        "an idle keep-alive connection costs pipeparse 12.8 KiB of RSS at 10,000 connections "
        "(uvicorn 7.7 KiB)",
        "receive buffers that grow on demand serve 164,240 rps at depth 16 x 64 connections, "
        "1.04x the fixed 256 KiB buffers' 157,433 (`--fixed-buffer`)",
    ]


def test_seek_findings_best_point_loss_region_and_floor() -> None:
    # copy, seek, in-order, kernel CPU seconds: seeking loses on small messages, gains on large.
    rows = [
        seek_row(2, 10, [1.0], [1.2], [0.5], [3.0]),
        seek_row(16, 10, [1.0], [1.1], [0.6], [1.2]),
        seek_row(2, 65536, [10.0], [9.0], [9.5], [8.0]),
        seek_row(16, 65536, [10.0], [10.5], [8.0], [6.0]),
    ]
    assert _texts(seek_findings(rows)) == [
        "user-space seeking (SeekableBuffer): at best 10.0% less receiver CPU than copying "
        "(N=2, 64 KiB); it loses at 3 of 4 points, at every N for 10 B; at no size does it "
        "gain at every N",
        "kernel seeking (KernelSeekableSocket): at best 40.0% less receiver CPU than copying "
        "(N=16, 64 KiB); it loses at 2 of 4 points, at every N for 10 B; it gains at every N "
        "for 64 KiB",
        "an in-order receiver (no reordering at all) costs at most 50.0% less than copying "
        "(N=2, 10 B): the most any user-space reordering could save here",
    ]


def test_seek_findings_without_the_kernel_receiver_and_when_seeking_never_wins() -> None:
    rows = [seek_row(2, 100, [1.0], [1.5]), seek_row(4, 100, [1.0], [1.25])]
    assert _texts(seek_findings(rows)) == [
        "user-space seeking (SeekableBuffer): never cheaper than copying (closest: -25.0%); it "
        "loses at 2 of 2 points, at every N for 100 B; at no size does it gain at every N"
    ]


def test_parse_findings_give_the_range_against_each_parser() -> None:
    def row(workload: str, parser: str, rps: float) -> dict[str, Any]:
        return {"workload": workload, "parser": parser, "requests_per_s": rps}

    rows = [
        row("plaintext", "h11", 20_000.0),
        row("plaintext", "pipeparse", 1_000_000.0),
        row("plaintext", "httptools", 800_000.0),
        row("chunked", "h11", 10_000.0),
        row("chunked", "pipeparse", 40_000.0),
        row("chunked", "httptools", 400_000.0),
    ]
    assert _texts(parse_findings(rows)) == [
        "pipeparse frames 4.00x (chunked) to 50.0x (plaintext) as many requests per second as h11",
        "pipeparse frames 0.10x (chunked) to 1.25x (plaintext) as many requests per second as "
        "httptools",
    ]


def test_findings_say_which_sections_were_skipped_and_leave_out_those_not_run() -> None:
    sections = {"seek": [seek_row(2, 10, [1.0], [0.5])], "parse": []}
    skipped = {"server": "failed: RuntimeError: no port", "connections": "not here"}
    found = findings(sections, skipped)
    assert [(f["section"], f["finding"]) for f in found] == [
        ("server", "not measured in this run (failed: RuntimeError: no port)"),
        ("connections", "not measured in this run (not here)"),
        ("seek", found[2]["finding"]),
    ]
    assert found[2]["finding"].startswith("user-space seeking (SeekableBuffer): at best 50.0%")
    text = format_findings(found)
    assert text.splitlines()[0] == (
        "- server: not measured in this run (failed: RuntimeError: no port)"
    )
    assert len(text.splitlines()) == 3
    assert findings({}) == []
