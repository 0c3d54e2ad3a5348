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
  app (its ASGI form sleeps with asyncio under uvicorn).

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

Run it as ``python -m pipeparse.clients.crosscheck.wrk_servers [--rounds 3] [--duration 5] [--json]
[--only plaintext|plaintext-depth1|sleep ...]``. Exit status 0 when it ran (a missed target is
not an error), 2 when wrk is unavailable.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pipeparse.clients.bench.peers import (
    ServerSpec,
    missing_modules,
    running_servers,
    server_command,
)
from pipeparse.clients.bench.procs import available_cpus, can_pin, machine_info, pinned, split_cpus
from pipeparse.clients.bench.report import format_table
from pipeparse.clients.bench.server import rotated
from pipeparse.clients.bench.stats import median, safe_ratio
from pipeparse.clients.crosscheck.nginx import ensure_nginx, nginx_server
from pipeparse.clients.crosscheck.wrk import WRK_PIPELINE_LUA, WRK_RPS, WRK_TOTAL, ensure_wrk

__all__ = [
    "MATRICES",
    "TARGETS",
    "Contender",
    "Matrix",
    "Target",
    "WrkRun",
    "evaluate_targets",
    "main",
    "medians",
    "parse_args",
    "parse_wrk_output",
    "round_order",
    "wrk_command",
]

WRK_THREADS = 1
DEPTH = 16
# Peers at their fastest: uvicorn with httptools and uvloop (`bench_servers.server_command`).
UVICORN_HTTPTOOLS = ServerSpec("uvicorn", "asgi", "plaintext")
UVICORN_ECHO = ServerSpec("uvicorn", "asgi", "echo")
GRANIAN_ASGI = ServerSpec("granian", "asgi", "plaintext")
GRANIAN_ASGI_FLUSH = ServerSpec("granian-flush", "asgi", "plaintext")
NGINX_PLAINTEXT = 'location = /plaintext { return 200 "Hello, World!"; }'
WRK_GRACE = 60.0  # seconds wrk may run past its duration before it is given up on
PROBE_TIMEOUT = 10.0  # seconds the one GET before each measurement may take

_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(
    r"Socket errors:\s+connect (\d+), read (\d+), write (\d+), timeout (\d+)"
)
_SOCKET_KINDS = ("connect", "read", "write", "timeout")

Kind = Literal["pipeparse", "uvicorn", "granian", "nginx"]


# -- what is measured ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Contender:
    """One server of a matrix.

    Attributes:
        label: its name in tables and targets.
        kind: ``pipeparse`` (either engine, via `pipeparse serve`), a peer (``uvicorn``,
            ``granian``) or ``nginx``.
        spec: how `pipeparse.clients.bench.peers` starts it (every kind but nginx).
    """

    label: str
    kind: Kind
    spec: ServerSpec | None = None

    def __post_init__(self) -> None:
        if (self.kind != "nginx") != (self.spec is not None):
            raise ValueError("a spec is given for every server but nginx, and only for them")

    @property
    def loop(self) -> str:
        """Its event loop, for the report's loop column (`ServerSpec.loop`; nginx: epoll)."""
        return self.spec.loop if self.spec is not None else "epoll"


@dataclass(frozen=True, slots=True)
class Matrix:
    """Servers loaded alike: wrk with `connections` connections on `path`, `depth` requests in
    flight on each."""

    name: str
    path: str
    connections: int
    contenders: tuple[Contender, ...]
    depth: int = DEPTH


@dataclass(frozen=True, slots=True)
class Target:
    """The issue's goal: ``median(numerator) / median(denominator) >= goal`` in `matrix`."""

    matrix: str
    numerator: str
    denominator: str
    goal: float

    @property
    def name(self) -> str:
        return f"{self.matrix}: {self.numerator} / {self.denominator}"


def _pp(label: str, engine: str, interface: str, app: str, loop: str = "trio") -> Contender:
    extra = ("--loop", loop) if loop != "trio" else ()
    return Contender(label, "pipeparse", ServerSpec(engine, interface, app, extra))


MATRICES: tuple[Matrix, ...] = (
    Matrix(
        "plaintext",
        "/plaintext",
        64,
        (
            _pp("pipeparse/native", "pipeparse", "native", "plaintext"),
            _pp("h11/native", "h11", "native", "plaintext"),
            _pp("pipeparse/asgi", "pipeparse", "asgi", "plaintext"),
            _pp("pipeparse/native/uvloop", "pipeparse", "native", "plaintext", "uvloop"),
            _pp("pipeparse/asgi/uvloop", "pipeparse", "asgi", "plaintext", "uvloop"),
            Contender("uvicorn-httptools", "uvicorn", UVICORN_HTTPTOOLS),
            Contender("granian-asgi", "granian", GRANIAN_ASGI),
            Contender("granian-asgi-flush", "granian", GRANIAN_ASGI_FLUSH),
            Contender("nginx-1-worker", "nginx"),
        ),
    ),
    Matrix(
        "plaintext-depth1",
        "/plaintext",
        64,
        (
            _pp("pipeparse/native", "pipeparse", "native", "plaintext"),
            _pp("h11/native", "h11", "native", "plaintext"),
            _pp("pipeparse/asgi", "pipeparse", "asgi", "plaintext"),
            _pp("pipeparse/native/uvloop", "pipeparse", "native", "plaintext", "uvloop"),
            _pp("pipeparse/asgi/uvloop", "pipeparse", "asgi", "plaintext", "uvloop"),
            Contender("uvicorn-httptools", "uvicorn", UVICORN_HTTPTOOLS),
            Contender("granian-asgi", "granian", GRANIAN_ASGI),
            Contender("nginx-1-worker", "nginx"),
        ),
        depth=1,
    ),
    Matrix(
        "sleep",
        "/?sleep_ms=10",
        16,
        (
            _pp("pipeparse/native", "pipeparse", "native", "echo"),
            _pp("h11/native", "h11", "native", "echo"),
            _pp("pipeparse/asgi/uvloop", "pipeparse", "asgi", "echo", "uvloop"),
            Contender("uvicorn-httptools", "uvicorn", UVICORN_ECHO),
        ),
    ),
)

# The connection protocol issue's goals (12), then the asyncio driver's (13).
TARGETS: tuple[Target, ...] = (
    Target("plaintext", "pipeparse/native", "h11/native", 15.0),
    Target("plaintext", "pipeparse/native", "nginx-1-worker", 1.0),
    Target("plaintext", "pipeparse/asgi", "granian-asgi-flush", 1.1),
    Target("plaintext-depth1", "pipeparse/native", "uvicorn-httptools", 1.2),
    Target("plaintext-depth1", "pipeparse/asgi", "uvicorn-httptools", 1.0),
    Target("sleep", "pipeparse/native", "h11/native", 12.0),
    Target("plaintext-depth1", "pipeparse/native/uvloop", "uvicorn-httptools", 1.5),
    Target("plaintext-depth1", "pipeparse/asgi/uvloop", "granian-asgi", 1.0),
    Target("plaintext", "pipeparse/asgi/uvloop", "granian-asgi-flush", 1.15),
    Target("sleep", "pipeparse/asgi/uvloop", "uvicorn-httptools", 10.0),
)


# -- commands --------------------------------------------------------------------------------


def wrk_command(
    wrk: str, url: str, connections: int, duration: int, depth: int = DEPTH
) -> list[str]:
    """``wrk -t1 -cC -dDs -s clients/wrk_pipeline.lua URL -- DEPTH``."""
    return [
        wrk,
        f"-t{WRK_THREADS}",
        f"-c{connections}",
        f"-d{duration}s",
        "-s",
        str(WRK_PIPELINE_LUA),
        url,
        "--",
        str(depth),
    ]


def describe(contender: Contender) -> str:
    """The command that starts `contender`, for the report (P: the port)."""
    if contender.spec is None:
        return (
            f"nginx, worker_processes 1, {NGINX_PLAINTEXT}"
            " (pipeparse.clients.crosscheck.nginx.nginx_server)"
        )
    cmd = server_command(contender.spec, 0)
    if contender.kind != "pipeparse":
        cmd[cmd.index("--port") + 1] = "P"  # a free port, chosen when it starts
    cmd[0] = "python"
    return " ".join(cmd)


def unavailable(contender: Contender) -> str | None:
    """Why `contender` cannot run here (None: it can)."""
    if contender.kind in ("uvicorn", "granian"):
        assert contender.spec is not None
        missing = missing_modules(contender.spec.engine)
        if missing:
            return f"skipped: {' and '.join(missing)} not installed (the `peers` extra)"
    elif contender.loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        return "skipped: uvloop is not installed (the `uvloop` extra)"
    elif contender.kind == "nginx" and ensure_nginx() is None:
        return "skipped: nginx is not installed and cannot be installed here"
    return None


# -- wrk's output ----------------------------------------------------------------------------


@dataclass(slots=True)
class WrkRun:
    """One wrk run. `error` is set when it produced no figure (then `rps` is None)."""

    rps: float | None = None
    requests: int | None = None
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    @property
    def clean(self) -> bool:
        """A figure, with no error responses and no socket errors."""
        return (
            self.error is None
            and self.rps is not None
            and self.non_2xx == 0
            and not any(self.socket_errors.values())
        )

    def problems(self) -> str:
        """What is wrong with this run, in words ('' when clean)."""
        parts = []
        if self.error:
            parts.append(self.error)
        if self.non_2xx:
            parts.append(f"{self.non_2xx} non-2xx/3xx responses")
        errors = {k: v for k, v in self.socket_errors.items() if v}
        if errors:
            parts.append("socket errors " + ", ".join(f"{k} {v}" for k, v in errors.items()))
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rps": self.rps,
            "requests": self.requests,
            "non_2xx": self.non_2xx,
            "socket_errors": dict(self.socket_errors),
            "error": self.error,
            "clean": self.clean,
        }


def parse_wrk_output(stdout: str) -> WrkRun:
    """A `WrkRun` from wrk's report; `error` set when there is no Requests/sec line."""
    run = WrkRun()
    m = WRK_RPS.search(stdout)
    if m is None:
        tail = stdout.strip().splitlines()[-3:]
        run.error = "no Requests/sec in wrk's output" + (f": {' | '.join(tail)}" if tail else "")
    else:
        run.rps = float(m.group(1))
    total = WRK_TOTAL.search(stdout)
    run.requests = int(total.group(1)) if total else None
    non = _NON_2XX.search(stdout)
    run.non_2xx = int(non.group(1)) if non else 0
    sock = _SOCKET_ERRORS.search(stdout)
    run.socket_errors = {
        kind: int(sock.group(i + 1)) if sock else 0 for i, kind in enumerate(_SOCKET_KINDS)
    }
    return run


# -- order and figures -------------------------------------------------------------------------


def round_order(matrices: Sequence[Matrix], rounds: int) -> list[tuple[int, Matrix, Contender]]:
    """Every measurement in the order taken: round by round; within a round, matrix by matrix,
    each matrix's servers rotated by the round's index (round 0 in the listed order)."""
    return [
        (r, matrix, contender)
        for r in range(rounds)
        for matrix in matrices
        for contender in rotated(matrix.contenders, r)
    ]


Results = Mapping[str, Mapping[str, Sequence[WrkRun]]]  # matrix -> label -> runs, by round


def medians(results: Results) -> dict[str, dict[str, float | None]]:
    """matrix -> label -> median rps over the clean runs (None: no clean run)."""
    out: dict[str, dict[str, float | None]] = {}
    for matrix, by_label in results.items():
        out[matrix] = {}
        for label, runs in by_label.items():
            clean = [r.rps for r in runs if r.clean and r.rps is not None]
            out[matrix][label] = median(clean) if clean else None
    return out


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None:
        return None
    return safe_ratio(numerator, denominator)


def evaluate_targets(
    results: Results, skipped: Mapping[str, Mapping[str, str]] | None = None
) -> list[dict[str, Any]]:
    """Each target whose matrix ran: the ratio of medians, the per-round ratios, the status.

    Status: ``met`` / ``not met``; ``unknown`` when the baseline has no figure (skipped, or
    no clean run); ``not met`` when the pipeparse side has none (its runs failed or erred).
    """
    skipped = skipped or {}
    meds = medians(results)
    out: list[dict[str, Any]] = []
    for target in TARGETS:
        if target.matrix not in results:
            continue
        by_label = results[target.matrix]
        num_runs = by_label.get(target.numerator, ())
        den_runs = by_label.get(target.denominator, ())
        per_round = [
            _ratio(n.rps if n.clean else None, d.rps if d.clean else None)
            for n, d in zip(num_runs, den_runs, strict=False)
        ]
        num = meds[target.matrix].get(target.numerator)
        den = meds[target.matrix].get(target.denominator)
        ratio = _ratio(num, den)
        note = ""
        if num is None:
            status = "not met"
            note = f"{target.numerator} has no clean run"
        elif den is None:
            status = "unknown"
            note = skipped.get(target.matrix, {}).get(target.denominator) or (
                f"{target.denominator} has no clean run"
            )
        else:
            status = "met" if ratio is not None and ratio >= target.goal else "not met"
        out.append(
            {
                "target": target.name,
                "matrix": target.matrix,
                "numerator": target.numerator,
                "denominator": target.denominator,
                "goal": target.goal,
                "ratio": ratio,
                "per_round": per_round,
                "status": status,
                "note": note,
            }
        )
    return out


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


def _probe(url: str) -> str | None:
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
        return WrkRun(error=f"wrk ran over {duration + WRK_GRACE:.0f} s")
    run = parse_wrk_output(out.stdout)
    if out.returncode != 0:
        detail = (out.stderr.strip() or out.stdout.strip())[-300:]
        run.error = f"wrk exited with {out.returncode}: {detail}"
        run.rps = None
    return run


Measure = Callable[[Matrix, Contender], WrkRun]


def measure_with(
    wrk: str, duration: int, wrk_cpus: set[int] | None, server_cpus: set[int] | None
) -> Measure:
    """A `Measure` that starts the server fresh, probes it, runs wrk, and stops it."""

    def measure(matrix: Matrix, contender: Contender) -> WrkRun:
        try:
            with serving(contender, server_cpus) as base:
                url = base + matrix.path
                problem = _probe(url)
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


# -- report ------------------------------------------------------------------------------------


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_report(report: Mapping[str, Any]) -> str:
    """The tables and targets, as text."""
    lines: list[str] = []
    rounds = report["settings"]["rounds"]
    for name, matrix in report["matrices"].items():
        lines.append(
            f"\n## {name}: wrk -t{WRK_THREADS} -c{matrix['connections']} -d"
            f"{report['settings']['duration_s']}s, depth {matrix['depth']}, {matrix['path']}"
        )
        rows: list[dict[str, Any]] = []
        notes: list[str] = []
        for label, server in matrix["servers"].items():
            row: dict[str, Any] = {"server": label, "loop": server.get("loop", "-")}
            if server.get("skipped"):
                notes.append(f"{label}: {server['skipped']}")
                rows.append(row | {f"round {i + 1}": "-" for i in range(rounds)} | {"median": "-"})
                continue
            for i, run in enumerate(server["runs"]):
                cell = "-" if run["rps"] is None else f"{run['rps']:,.0f}"
                if not run["clean"]:
                    cell += " !"
                    problems = WrkRun(
                        rps=run["rps"],
                        requests=run["requests"],
                        non_2xx=run["non_2xx"],
                        socket_errors=run["socket_errors"],
                        error=run["error"],
                    ).problems()
                    notes.append(f"{label}, round {i + 1}: {problems} (not in the median)")
                row[f"round {i + 1}"] = cell
            med = server["median"]
            row["median"] = "-" if med is None else f"{med:,.0f}"
            rows.append(row)
        lines.append(format_table(rows))
        lines.extend(f"- {n}" for n in notes)
        for label, server in matrix["servers"].items():
            lines.append(f"  {label}: {server['command']}")
    lines.append("\n## targets")
    rows = []
    for t in report["targets"]:
        row = {
            "target": t["target"],
            "goal": f">= {t['goal']:g}",
            "median ratio": _fmt_ratio(t["ratio"]),
        }
        for i, value in enumerate(t["per_round"]):
            row[f"round {i + 1}"] = _fmt_ratio(value)
        row["status"] = t["status"] + (f" ({t['note']})" if t["note"] else "")
        rows.append(row)
    lines.append(format_table(rows))
    lines.append(f"\npinning: {report['pinning']}")
    return "\n".join(lines).lstrip("\n")


# -- command line ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipeparse.clients.crosscheck.wrk_servers",
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


def _cpu_sides() -> tuple[set[int] | None, set[int] | None, str]:
    if not can_pin():
        return None, None, "off (no sched_setaffinity here)"
    cpus = available_cpus()
    if len(cpus) < 2:
        return None, None, "off (one CPU)"
    mine, peer = split_cpus(cpus)
    return mine, peer, f"wrk on CPU {sorted(mine)}, servers on CPUs {sorted(peer)}"


def build_report(
    matrices: Sequence[Matrix],
    results: Results,
    skipped: Mapping[str, Mapping[str, str]],
    settings: Mapping[str, Any],
    pinning: str,
) -> dict[str, Any]:
    meds = medians(results)
    out_matrices: dict[str, Any] = {}
    for m in matrices:
        servers: dict[str, Any] = {}
        for c in m.contenders:
            entry: dict[str, Any] = {"command": describe(c), "loop": c.loop}
            reason = skipped.get(m.name, {}).get(c.label)
            if reason:
                entry |= {"skipped": reason, "runs": [], "median": None}
            else:
                entry |= {
                    "runs": [r.as_dict() for r in results[m.name][c.label]],
                    "median": meds[m.name][c.label],
                }
            servers[c.label] = entry
        out_matrices[m.name] = {
            "path": m.path,
            "connections": m.connections,
            "depth": m.depth,
            "servers": servers,
        }
    return {
        "settings": dict(settings),
        "pinning": pinning,
        "machine": machine_info(),
        "matrices": out_matrices,
        "targets": evaluate_targets(results, skipped),
    }


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
    wrk_cpus, server_cpus, pinning = _cpu_sides()
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
