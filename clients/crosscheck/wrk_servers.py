"""The server issue's performance targets, measured with wrk: one script, reproducible.

Strategy: three matrices of servers, each loaded by wrk (1 thread, through
`clients/wrk_pipeline.lua`, which keeps DEPTH requests in flight per connection), one server at
a time:

- ``plaintext``: 64 connections at depth 16 on ``/plaintext`` against `pipeparse serve
  plaintext` (pipeparse engine native, h11 engine native, pipeparse engine ASGI, both interfaces
  again on ``--loop uvloop``: the table's loop column says which loop serves), the peers
  serving the same ASGI app (uvicorn with httptools and uvloop; granian's ASGI interface, and
  granian with ``--http1-pipeline-flush``), and nginx with one worker answering ``/plaintext``
  from its configuration (``return 200``: no file to open, nginx's fastest way to say it);
- ``plaintext-depth1``: the same at depth 1 (keep-alive without pipelining, as browsers send),
  without granian's pipeline flush (nothing to aggregate);
- ``sleep``: 16 connections at depth 16 on ``/?sleep_ms=10`` against `pipeparse serve echo`
  (pipeparse and h11 engines, native; pipeparse ASGI on uvloop) and uvicorn serving the same
  app (its ASGI form sleeps with asyncio under uvicorn); beside them the target's floor,
  ``trio_ceiling sleeps`` (each request's ``trio.sleep`` in a task of its own, no HTTP work:
  not a server, what trio allows on this machine).

Peers that are not installed (the `peers` extra) are skipped, and so are the targets against
them.

Each measurement starts a fresh server process, waits until it answers one GET with 200, runs
wrk, and stops the server, so no two servers ever run during a measurement. Rounds are taken in
turn (round 1 measures every server once, then round 2, ...), and the order of the servers
rotates from round to round so that drift on a noisy machine hurts each alike. wrk is pinned to
the first usable CPU and every server to the others (`pipeparse.clients.bench.procs`; no pinning
with a
single CPU). A run whose wrk output reports ``Non-2xx or 3xx responses`` or ``Socket errors``,
or that failed, is shown with its errors and left out of the median: a server that answers
errors must not look fast. A server's figure is the median requests/s over its clean runs;
each target is the ratio of two medians against its goal (also shown per round).

The exact commands (P: a free port; the pipeparse servers pick their own)::

    wrk -t1 -c64 -d5s -s clients/wrk_pipeline.lua http://127.0.0.1:P/plaintext -- 16
    wrk -t1 -c64 -d5s -s clients/wrk_pipeline.lua http://127.0.0.1:P/plaintext -- 1
    wrk -t1 -c16 -d5s -s clients/wrk_pipeline.lua 'http://127.0.0.1:P/?sleep_ms=10' -- 16
    python -m pipeparse.cli serve plaintext --engine pipeparse --interface native --port 0
    python -m pipeparse.cli serve plaintext --engine h11 --interface native --port 0
    python -m pipeparse.cli serve plaintext --engine pipeparse --interface asgi --port 0
    python -m pipeparse.cli serve plaintext --engine pipeparse --interface {native,asgi} \
        --port 0 --loop uvloop
    python -m uvicorn pipeparse.servers.apps:plaintext --http httptools --loop uvloop \\
        --host 127.0.0.1 --port P --log-level warning --no-access-log
    python -m granian --interface asgi --http 1 --host 127.0.0.1 --port P --workers 1 \\
        --log-level warning [--http1-pipeline-flush] pipeparse.servers.apps:plaintext
    nginx, worker_processes 1, location = /plaintext { return 200 "Hello, World!"; }
        (pipeparse.clients.crosscheck.nginx.nginx_server)
    python -m pipeparse.cli serve echo --engine pipeparse --interface native --port 0
    python -m pipeparse.cli serve echo --engine h11 --interface native --port 0
    python -m pipeparse.clients.crosscheck.trio_ceiling sleeps --port P

Run it as ``python -m pipeparse.clients.crosscheck.wrk_servers [--rounds 3] [--duration 5] [--json]
[--only plaintext|plaintext-depth1|sleep ...]``. Exit status 0 when it ran (a missed target is
not an error), 2 when wrk is unavailable.

Its parts: the matrices, targets and commands are `wrk_matrix`'s; wrk's output, the medians,
the targets evaluated and the report are `wrk_report`'s; this module runs the servers and wrk,
and is the command line.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence

from pipeparse.clients.bench.peers import running_servers
from pipeparse.clients.bench.procs import available_cpus, can_pin, pinned, split_cpus
from pipeparse.clients.crosscheck.nginx import nginx_server
from pipeparse.clients.crosscheck.wrk import WRK_PIPELINE_LUA, ensure_wrk
from pipeparse.clients.crosscheck.wrk_matrix import (
    MATRICES,
    NGINX_PLAINTEXT,
    TARGETS,
    WRK_THREADS,
    Contender,
    Matrix,
    Target,
    describe,
    unavailable,
    wrk_command,
)
from pipeparse.clients.crosscheck.wrk_report import (
    Results,
    WrkRun,
    build_report,
    evaluate_targets,
    format_report,
    medians,
    parse_wrk_output,
    round_order,
)

__all__ = [
    "MATRICES",
    "TARGETS",
    "Contender",
    "Matrix",
    "Results",
    "Target",
    "WrkRun",
    "cpu_sides",
    "describe",
    "evaluate_targets",
    "format_report",
    "main",
    "medians",
    "parse_args",
    "parse_wrk_output",
    "probe",
    "round_order",
    "serving",
    "unavailable",
    "wrk_command",
    "wrk_overtime",
    "wrk_result",
]

WRK_GRACE = 60.0  # seconds wrk may run past its duration before it is given up on
PROBE_TIMEOUT = 10.0  # seconds the one GET before each measurement may take


# -- running servers -------------------------------------------------------------------------


def _pin_to(cpus: set[int] | None) -> Callable[[], None] | None:
    if not cpus:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, cpus)

    return pin


@contextlib.contextmanager
def serving(contender: Contender, cpus: set[int] | None) -> Iterator[str]:
    """Start `contender` (pinned to `cpus`), yield its base URL, stop it at the end."""
    if contender.spec is not None:
        with running_servers([contender.spec], cpus) as started:
            yield started[contender.spec].url("")
    else:
        with contextlib.ExitStack() as stack:
            with pinned(cpus):  # nginx's master and worker inherit the affinity
                srv = stack.enter_context(nginx_server(workers=1, server_extra=NGINX_PLAINTEXT))
            yield srv.url


def probe(url: str) -> str | None:
    """GET `url` once: None when it answers 200, else what went wrong."""
    rest = url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=PROBE_TIMEOUT)
    try:
        conn.request("GET", "/" + path)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            return f"probe GET answered {response.status}"
        return None
    except (OSError, http.client.HTTPException) as exc:
        return f"probe GET failed: {exc!r}"
    finally:
        conn.close()


def run_wrk(
    wrk: str, url: str, connections: int, duration: int, depth: int, cpus: set[int] | None
) -> WrkRun:
    """Run wrk once (pinned to `cpus`) and parse its report."""
    cmd = wrk_command(wrk, url, connections, duration, depth)
    try:
        out = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            check=False,
            timeout=duration + WRK_GRACE,
            preexec_fn=_pin_to(cpus),  # pins the child before exec; no threads here
        )
    except subprocess.TimeoutExpired:
        return wrk_overtime(duration)
    return wrk_result(out.stdout, out.stderr, out.returncode)


def wrk_result(stdout: str, stderr: str, returncode: int) -> WrkRun:
    """A finished wrk's `WrkRun`: its report parsed; an error (no figure) if it failed."""
    run = parse_wrk_output(stdout)
    if returncode != 0:
        detail = (stderr.strip() or stdout.strip())[-300:]
        run.error = f"wrk exited with {returncode}: {detail}"
        run.rps = None
    return run


def wrk_overtime(duration: int) -> WrkRun:
    """The `WrkRun` of a wrk given up on (`WRK_GRACE` past its `duration`)."""
    return WrkRun(error=f"wrk ran over {duration + WRK_GRACE:.0f} s")


Measure = Callable[[Matrix, Contender], WrkRun]


def measure_with(
    wrk: str, duration: int, wrk_cpus: set[int] | None, server_cpus: set[int] | None
) -> Measure:
    """A `Measure` that starts the server fresh, probes it, runs wrk, and stops it."""

    def measure(matrix: Matrix, contender: Contender) -> WrkRun:
        try:
            with serving(contender, server_cpus) as base:
                url = base + matrix.path
                problem = probe(url)
                if problem is not None:
                    return WrkRun(error=problem)
                return run_wrk(wrk, url, matrix.connections, duration, matrix.depth, wrk_cpus)
        except (RuntimeError, OSError) as exc:
            return WrkRun(error=f"server failed: {exc}")

    return measure


def run_rounds(
    matrices: Sequence[Matrix],
    rounds: int,
    measure: Measure,
    skipped: Mapping[str, Mapping[str, str]],
    progress: Callable[[str], None] | None = None,
) -> dict[str, dict[str, list[WrkRun]]]:
    """Take every measurement in `round_order`, one at a time; skipped servers are not run."""
    results: dict[str, dict[str, list[WrkRun]]] = {
        m.name: {c.label: [] for c in m.contenders if c.label not in skipped.get(m.name, {})}
        for m in matrices
    }
    for r, matrix, contender in round_order(matrices, rounds):
        if contender.label in skipped.get(matrix.name, {}):
            continue
        run = measure(matrix, contender)
        results[matrix.name][contender.label].append(run)
        if progress is not None:
            figure = f"{run.rps:>12,.0f} req/s" if run.rps is not None else f"{'-':>18}"
            trouble = run.problems()
            progress(
                f"round {r + 1}/{rounds} {matrix.name:<9} {contender.label:<18} {figure}"
                + (f"   ({trouble})" if trouble else "")
            )
    return results


# -- command line ------------------------------------------------------------------------------


_PROG = "python -m pipeparse.clients.crosscheck.wrk_servers"


def parse_args(argv: Sequence[str] | None = None, prog: str = _PROG) -> argparse.Namespace:
    """The command line (`wrk_paired` takes the same)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default: 3)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default: 5)")
    parser.add_argument(
        "--only",
        nargs="+",
        action="extend",
        choices=[m.name for m in MATRICES],
        metavar="MATRIX",
        help="run only these matrices: " + ", ".join(m.name for m in MATRICES) + " (default: all)",
    )
    parser.add_argument("--json", action="store_true", help="print everything as JSON")
    a = parser.parse_args(argv)
    if a.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {a.rounds}")
    if a.duration < 1:
        parser.error(f"--duration must be at least 1 (seconds), got {a.duration}")
    if not a.only:
        a.only = [m.name for m in MATRICES]
    return a


def cpu_sides() -> tuple[set[int] | None, set[int] | None, str]:
    if not can_pin():
        return None, None, "off (no sched_setaffinity here)"
    cpus = available_cpus()
    if len(cpus) < 2:
        return None, None, "off (one CPU)"
    mine, peer = split_cpus(cpus)
    return mine, peer, f"wrk on CPU {sorted(mine)}, servers on CPUs {sorted(peer)}"


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    wrk = ensure_wrk()
    if wrk is None:
        print("wrk_servers: wrk is not installed and cannot be installed here", file=sys.stderr)
        return 2
    matrices = [m for m in MATRICES if m.name in a.only]
    skipped: dict[str, dict[str, str]] = {}
    for m in matrices:
        for c in m.contenders:
            reason = unavailable(c)
            if reason:
                skipped.setdefault(m.name, {})[c.label] = reason
    wrk_cpus, server_cpus, pinning = cpu_sides()
    progress = None if a.json else (lambda line: print(line, flush=True))
    results = run_rounds(
        matrices, a.rounds, measure_with(wrk, a.duration, wrk_cpus, server_cpus), skipped, progress
    )
    settings = {
        "rounds": a.rounds,
        "duration_s": a.duration,
        "wrk_threads": WRK_THREADS,
        "wrk": f"wrk -t{WRK_THREADS} -cC -d{a.duration}s -s {WRK_PIPELINE_LUA} URL -- DEPTH",
    }
    report = build_report(matrices, results, skipped, settings, pinning)
    if a.json:
        print(json.dumps(report, indent=2))
    else:
        print()
        print(format_report(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
