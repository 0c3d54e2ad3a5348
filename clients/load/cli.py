"""`pipeparse load`: the command line of the pipelined load client (engine:
`pipeparse.clients.load.client`).

Strategy: argparse flags map one to one onto `LoadConfig` fields; `LoadConfig` checks them and
any bad value is reported as ``pipeparse load: error: ...`` with exit status 2. The run shows a
live line on a terminal (`LiveProgress`), then prints either the human summary or, with
``--json``, exactly one JSON object; ``--hdr-log FILE`` also writes the latencies as an
HdrHistogram interval log. ``--merge FILE...`` runs no load: it prints the percentiles of such
logs merged. Exit status: 0 when requests were answered (errors are reported, not fatal), 1 when
none was, when ``--verify`` found a mismatch, or when the server refused every connection.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeparse import KiB
from pipeparse.clients.load.client import MODES, LoadConfig, run_load_sync
from pipeparse.clients.load.hdr import format_merged, merge_hdr_logs, write_hdr_log
from pipeparse.clients.load.mix import load_mix
from pipeparse.clients.load.report import LiveProgress, format_summary
from pipeparse.clients.load.request import parse_header
from pipeparse.clients.load.result import latency_ms

__all__ = ["add_arguments", "config_from_args", "run"]

DEFAULT_DURATION = 10.0
_BODY_PATTERN = b"pipeparse-load-body/"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Drive an HTTP/1.1 server with pipelined requests and measure every request: "
        "throughput, latency percentiles (HDR histogram), errors by kind."
    )
    parser.add_argument(
        "url", metavar="URL", nargs="?", help="http://host[:port]/target or https://..."
    )
    parser.add_argument(
        "--cacert",
        metavar="FILE",
        help="https: verify the server with this CA bundle (PEM) too (curl's name)",
    )
    parser.add_argument(
        "-k",
        "--insecure",
        action="store_true",
        help="https: do not verify the server's certificate (curl's name)",
    )
    parser.add_argument(
        "--unix-socket",
        metavar="PATH",
        help="connect to this Unix domain socket; the URL gives Host and target (curl's name)",
    )
    parser.add_argument(
        "-c", "--connections", type=int, default=10, help="connections (default: 10)"
    )
    parser.add_argument(
        "-d",
        "--depth",
        type=int,
        default=16,
        help="requests in flight per connection (default: 16)",
    )
    how_long = parser.add_mutually_exclusive_group()
    how_long.add_argument(
        "--duration",
        type=float,
        metavar="S",
        help=f"seconds of load (default: {DEFAULT_DURATION:g})",
    )
    how_long.add_argument("-n", "--count", type=int, metavar="N", help="send N requests, then stop")
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="window",
        help="window: DEPTH in flight, one sent per response (default); "
        "batch: batches of DEPTH, as wrk does",
    )
    parser.add_argument(
        "--rate",
        type=float,
        metavar="R",
        help="open loop: R requests/s overall; latency from each request's intended send time",
    )
    parser.add_argument("-m", "--method", default="GET", help="request method (default: GET)")
    parser.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        dest="headers",
        metavar="'Name: value'",
        help="add a request header (repeatable)",
    )
    parser.add_argument(
        "--requests",
        type=Path,
        metavar="FILE",
        dest="mix_file",
        help="a request mix: JSON lines with method, target, headers, body or body_file, "
        "weight (the URL then gives the server; -H headers are added to each request)",
    )
    body = parser.add_mutually_exclusive_group()
    body.add_argument("--body-size", type=int, metavar="N", help="send a body of N bytes")
    body.add_argument("--body-file", type=Path, metavar="F", help="send the contents of F")
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds to wait for a response before dropping the connection (default: 10)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds of load before measuring (default: 0)",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="check each response of the echo app against the request sent",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--hdr-log",
        type=Path,
        metavar="FILE",
        help="write the latency histogram of each second to FILE (HdrHistogram interval log)",
    )
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="no load: print the percentiles of these HDR interval logs merged (runs from "
        "several machines), exactly",
    )
    parser.add_argument(
        "--processes", type=int, default=1, metavar="P", help="client processes (default: 1)"
    )
    parser.add_argument(
        "--buffer-size",
        type=int,
        default=256 * KiB,
        metavar="BYTES",
        help="receive buffer per connection; with --verify, the largest response (default: 262144)",
    )
    parser.add_argument(
        "--max-head-size",
        type=int,
        default=16 * KiB,
        metavar="BYTES",
        help="largest response head accepted (default: 16384)",
    )


def config_from_args(args: argparse.Namespace) -> LoadConfig:
    """The `LoadConfig` the flags describe; raises ValueError (or OSError for --body-file)."""
    if args.body_size is not None:
        if args.body_size < 0:
            raise ValueError(f"--body-size must not be negative, got {args.body_size}")
        reps = args.body_size // len(_BODY_PATTERN) + 1
        body = (_BODY_PATTERN * reps)[: args.body_size]
    elif args.body_file is not None:
        body = args.body_file.read_bytes()
    else:
        body = b""
    if args.count is not None:
        duration = args.duration
    else:
        duration = args.duration if args.duration is not None else DEFAULT_DURATION
    mix = None
    if args.mix_file is not None:
        if args.mix_file.name.isdigit() and not args.mix_file.exists():
            raise ValueError(
                f"--requests takes a request mix file; for a count of requests use "
                f"-n/--count {args.mix_file.name}"
            )
        mix = load_mix(args.mix_file)
    return LoadConfig(
        url=args.url,
        cacert=args.cacert,
        insecure=args.insecure,
        unix_socket=args.unix_socket,
        connections=args.connections,
        depth=args.depth,
        duration=duration,
        requests=args.count,
        mode=args.mode,
        rate=args.rate,
        method=args.method,
        headers=[parse_header(h) for h in args.headers],
        body=body,
        mix=mix,
        timeout=args.timeout,
        warmup=args.warmup,
        verify=args.verify,
        processes=args.processes,
        buffer_size=args.buffer_size,
        max_head_size=args.max_head_size,
    )


def run(args: argparse.Namespace) -> int:
    if args.merge:
        return _merge(args)
    try:
        if args.url is None:
            raise ValueError("give the URL to load (or --merge FILE... to merge HDR logs)")
        config = config_from_args(args)
    except (ValueError, OSError) as e:
        print(f"pipeparse load: error: {e}", file=sys.stderr)
        return 2
    try:
        with LiveProgress() as live:
            result = run_load_sync(config, live.update if live.enabled else None)
    except KeyboardInterrupt:
        print("pipeparse load: interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, ValueError) as e:  # a load process failed, or a bad split
        print(f"pipeparse load: error: {e}", file=sys.stderr)
        return 1
    if args.hdr_log is not None:
        try:
            write_hdr_log(result, args.hdr_log, f"pipeparse load {config.url}")
        except OSError as e:
            print(
                f"pipeparse load: error: cannot write {args.hdr_log}: {e.strerror}", file=sys.stderr
            )
            return 1
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        print(format_summary(config, result))
    if result.requests == 0 or result.errors.get("verify", 0):
        return 1
    return 0


def _merge(args: argparse.Namespace) -> int:
    """``--merge FILE...``: the merged percentiles of HDR interval logs (no load is run)."""
    if args.url is not None:
        print(f"pipeparse load: error: --merge takes no URL (got {args.url!r})", file=sys.stderr)
        return 2
    try:
        h = merge_hdr_logs(args.merge)
    except ValueError as e:
        print(f"pipeparse load: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"requests": h.get_total_count(), "latency_ms": latency_ms(h)}))
    else:
        print(format_merged(args.merge, h))
    return 0
