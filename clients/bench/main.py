"""`pipeparse bench`: the project's benchmark, one section at a time.

Strategy: each section lives in its own module of `pipeparse.clients.bench` (`parse`, `seek`,
`server`, `connections`) and returns rows; this module only orders the sections, shows
progress, prints each section's table as it finishes, rewrites ``DIR/results.json`` after every
section (so an interrupted run keeps what it measured), draws the plots (`plot`) and ends with
the findings read off the rows (`findings`).
A section that cannot run here (a missing module, a server that won't start) is recorded under
``skipped`` with the reason, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipeparse.clients.bench.connections import (
    ConnectionSettings,
    connection_steps,
    run_connections_bench,
)
from pipeparse.clients.bench.findings import findings, format_findings
from pipeparse.clients.bench.plot import have_matplotlib, plot_all
from pipeparse.clients.bench.procs import machine_info
from pipeparse.clients.bench.report import Progress, format_table, make_progress, write_results
from pipeparse.clients.bench.seek import SeekSettings, run_seek_bench
from pipeparse.clients.bench.server import (
    ServerSettings,
    run_batching_bench,
    run_server_bench,
    run_wall_bench,
    server_steps,
)
from pipeparse.clients.bench.stats import Row

__all__ = ["SECTIONS", "add_arguments", "run"]

SECTIONS = ("parse", "seek", "server", "wall", "batching", "connections")
DEFAULT_OUT = "bench-out"
MAX_WARNINGS_SHOWN = 10  # the rest are in results.json
DEFAULT_CONNECTIONS = 1  # server and batching: one pipelined connection (wall adds more)


class SectionUnavailable(Exception):
    """A section cannot run on this installation (the reason is its message)."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Start servers on loopback, drive them with the load client, print a table per "
        "section, and write DIR/results.json and PNG plots."
    )
    parser.add_argument(
        "--quick", action="store_true", help="a thinner grid and fewer repeats (under 60 s)"
    )
    parser.add_argument(
        "--out", default=DEFAULT_OUT, metavar="DIR", help=f"output folder (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SECTIONS,
        metavar="SECTION",
        help=f"run only these sections ({', '.join(SECTIONS)})",
    )
    parser.add_argument(
        "--repeats",
        type=_positive_int,
        metavar="N",
        help="runs per figure, each figure their median (default 5; 3 with --quick)",
    )
    parser.add_argument(
        "--duration",
        type=_positive_float,
        metavar="SECONDS",
        help="seconds of measured load per server run (default 0.6; 0.3 with --quick)",
    )
    parser.add_argument(
        "--connections",
        type=_positive_int,
        metavar="N",
        default=DEFAULT_CONNECTIONS,
        help=f"connections in the server and batching sections (default {DEFAULT_CONNECTIONS})",
    )
    parser.add_argument(
        "--peers",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=(
            "include the peer servers that are installed (the `peers` extra): uvicorn "
            "(httptools, uvloop), hypercorn, granian ASGI with and without "
            "--http1-pipeline-flush (default: yes, but no with --quick)"
        ),
    )
    parser.add_argument(
        "--no-plots", dest="plots", action="store_false", help="do not draw PNG plots"
    )


def seek_settings(args: argparse.Namespace) -> SeekSettings:
    settings = SeekSettings.quick() if args.quick else SeekSettings()
    if args.repeats is not None:
        settings = replace(settings, runs=args.repeats)
    return settings


def server_settings(args: argparse.Namespace) -> ServerSettings:
    peers = (not args.quick) if args.peers is None else bool(args.peers)
    s = ServerSettings.quick(peers=peers) if args.quick else ServerSettings.full(peers=peers)
    changes: dict[str, Any] = {"connections": args.connections}
    if args.repeats is not None:
        changes["repeats"] = args.repeats
    if args.duration is not None:
        changes["duration"] = args.duration
    return replace(s, **changes)


def connection_settings(args: argparse.Namespace) -> ConnectionSettings:
    peers = (not args.quick) if args.peers is None else bool(args.peers)
    if args.quick:
        return ConnectionSettings.quick(peers=peers)
    return ConnectionSettings.full(peers=peers)


# -- sections ------------------------------------------------------------------------------


def _run_parse(args: argparse.Namespace, progress: Progress, warnings: list[str]) -> list[Row]:
    try:
        from pipeparse.clients.bench.parse import run_parse_bench
    except ImportError as exc:
        raise SectionUnavailable(
            f"pipeparse.clients.bench.parse is not available ({exc})"
        ) from None
    progress.start("parse", 1)
    kwargs: dict[str, Any] = {"quick": args.quick}
    if args.repeats is not None:
        kwargs["repeats"] = args.repeats
    rows = run_parse_bench(**kwargs)
    progress.step("parsers compared")
    return rows


def _run_seek(args: argparse.Namespace, progress: Progress, warnings: list[str]) -> list[Row]:
    settings = seek_settings(args)
    progress.start("seek", len(settings.ns) * len(settings.sizes))
    return run_seek_bench(settings, progress.step)


def _need_load_client() -> None:
    try:
        from pipeparse.clients.load import client  # noqa: F401
    except ImportError as exc:
        raise SectionUnavailable(
            f"the load client pipeparse.clients.load.client is not available ({exc})"
        ) from None


def _run_server(args: argparse.Namespace, progress: Progress, warnings: list[str]) -> list[Row]:
    _need_load_client()
    settings = server_settings(args)
    progress.start("server", server_steps(settings))
    return run_server_bench(settings, warnings, progress.step)


def _run_wall(args: argparse.Namespace, progress: Progress, warnings: list[str]) -> list[Row]:
    _need_load_client()
    settings = server_settings(args)
    progress.start("wall", len(settings.wall_connections))
    return run_wall_bench(settings, warnings, progress.step)


def _run_batching(args: argparse.Namespace, progress: Progress, warnings: list[str]) -> list[Row]:
    _need_load_client()
    settings = server_settings(args)
    progress.start("batching", len(settings.batching_depths))
    return run_batching_bench(settings, warnings, progress.step)


def _run_connections(
    args: argparse.Namespace, progress: Progress, warnings: list[str]
) -> list[Row]:
    _need_load_client()
    settings = connection_settings(args)
    progress.start("connections", connection_steps(settings))
    return run_connections_bench(settings, server_settings(args), warnings, progress.step)


Runner = Callable[[argparse.Namespace, Progress, list[str]], list[Row]]
RUNNERS: dict[str, Runner] = {
    "parse": _run_parse,
    "seek": _run_seek,
    "server": _run_server,
    "wall": _run_wall,
    "batching": _run_batching,
    "connections": _run_connections,
}


# -- the command ---------------------------------------------------------------------------


def _settings_doc(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    seek = seek_settings(args)
    srv = server_settings(args)
    return {
        "quick": args.quick,
        "sections": list(names),
        "connections": {
            "idle_counts": list(connection_settings(args).counts),
            "idle_app": "plaintext, one request per connection, then idle",
            "buffers": "depth 16, 64 connections, instant: growing vs --fixed-buffer",
        },
        "seek": {
            "ns": list(seek.ns),
            "sizes": list(seek.sizes),
            "messages": seek.messages,
            "connections_per_run": seek.connections,
            "runs": seek.runs,
            "cpu_clock": "time.thread_time (receiver thread, user+sys)",
        },
        "server": {
            "duration_s": srv.duration,
            "warmup_s": srv.warmup,
            "repeats": srv.repeats,
            "connections": srv.connections,
            "pairs": [list(p) for p in srv.pairs()],
            "interfaces": list(srv.interfaces),
            "peers": list(srv.peers),
            "handlers": {
                "instant": "echo /",
                "sleep1ms": "echo /?sleep_ms=1",
                "sleep10ms": "echo /?sleep_ms=10",
            },
            "wall": {
                "connections": list(srv.wall_connections),
                "depth": 16,
                "handler": "instant",
                "interface": "asgi",
            },
            "batching_depths": list(srv.batching_depths),
            "pinning": "load client on the first CPU, servers on the others",
        },
    }


def run(args: argparse.Namespace) -> int:
    names = [s for s in SECTIONS if args.only is None or s in args.only]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    machine = machine_info()
    settings = _settings_doc(args, names)
    sections: dict[str, list[Row]] = {}
    skipped: dict[str, str] = {}
    warnings: list[str] = []
    t0 = time.monotonic()
    progress = make_progress()
    try:
        for name in names:
            t = time.monotonic()
            try:
                rows = RUNNERS[name](args, progress, warnings)
            except SectionUnavailable as exc:
                skipped[name] = str(exc)
                progress.emit(f"\n## {name}: skipped ({exc})")
                continue
            except Exception as exc:  # a failed section must not lose the others
                skipped[name] = f"failed: {type(exc).__name__}: {exc}"
                progress.emit(f"\n## {name}: failed\n{traceback.format_exc()}")
                continue
            progress.finish()
            sections[name] = rows
            progress.emit(f"\n## {name} ({time.monotonic() - t:.1f} s)\n\n{format_table(rows)}")
            write_results(results_path, machine, sections, settings, skipped, warnings)
    finally:
        progress.close()
    found = findings(sections, skipped)
    write_results(results_path, machine, sections, settings, skipped, warnings, found)
    lines = [f"\nbench: {time.monotonic() - t0:.1f} s in all; results in {results_path}"]
    if args.plots and sections:
        if have_matplotlib():
            for path in plot_all(sections, out):
                lines.append(f"bench: plot {path}")
        else:
            lines.append("bench: matplotlib is not installed (pip install '.[plot]'): no plots")
    if found:
        lines.append("\n## findings\n\n" + format_findings(found))
    for w in warnings[:MAX_WARNINGS_SHOWN]:
        lines.append(f"bench: warning: {w}")
    if len(warnings) > MAX_WARNINGS_SHOWN:
        more = len(warnings) - MAX_WARNINGS_SHOWN
        lines.append(f"bench: ... and {more} more warnings in {results_path}")
    for name, why in skipped.items():
        lines.append(f"bench: {name} skipped: {why}")
    print("\n".join(lines), flush=True)
    return 1 if skipped else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pipeparse bench")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
