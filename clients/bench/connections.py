"""The `connections` section: memory against idle keep-alive connections, and what growing
receive buffers cost a deep pipeline.

Strategy
--------
- RSS: each server (pipeparse's engine on trio, asyncio and uvloop when installed, and the
  installed peers serving the same ``plaintext`` app's ASGI form) is started alone, with a
  keep-alive timeout longer than the measurement;
  `pipeparse.clients.bench.idle` opens connections up to each count in turn (each sends one
  request, reads the answer, then idles) and reads the server's RSS. A row is one server at one
  count: RSS, and its growth since before the first connection, per connection.
- Throughput: pipeparse with its growing buffers against the same server with
  ``--fixed-buffer`` (the whole 256 KiB up front, as before), side by side, 64 connections at
  depth 16, instant handler (`server.side_by_side`: repeats in turn, medians).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeparse.clients.bench.idle import raise_nofile_limit, rss_per_connection
from pipeparse.clients.bench.peers import (
    HOST,
    ServerSpec,
    installed_peers,
    running_servers,
    server_label,
)
from pipeparse.clients.bench.procs import available_cpus, pinned, split_cpus
from pipeparse.clients.bench.server import HANDLER_PATHS, LoadShape, ServerSettings, side_by_side
from pipeparse.clients.bench.stats import Row, safe_ratio

__all__ = [
    "ConnectionSettings",
    "connection_steps",
    "idle_specs",
    "run_connections_bench",
]

LOOPS = ("asyncio", "uvloop")  # besides trio, pipeparse's default
COUNTS = (1000, 5000, 10000)
QUICK_COUNTS = (250, 1000)
DEPTH = 16
LOAD_CONNECTIONS = 64
IDLE_SECONDS = "600"  # keep-alive timeout while connections idle: longer than the measurement
FIXED = "--fixed-buffer"

Step = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    counts: tuple[int, ...] = COUNTS
    peers: tuple[str, ...] = ()
    load_connections: int = LOAD_CONNECTIONS
    depth: int = DEPTH

    @classmethod
    def full(cls, peers: bool = True) -> ConnectionSettings:
        return cls(peers=tuple(installed_peers()) if peers else ())

    @classmethod
    def quick(cls, peers: bool = False) -> ConnectionSettings:
        return cls(counts=QUICK_COUNTS, peers=tuple(installed_peers()) if peers else ())


def idle_specs(settings: ConnectionSettings) -> list[ServerSpec]:
    """The servers whose memory is measured: pipeparse on each loop, then the peers."""
    idle = ("--keep-alive-timeout", IDLE_SECONDS)
    specs = [ServerSpec("pipeparse", "native", "plaintext", idle)]
    for loop in LOOPS:
        if importlib.util.find_spec(loop) is not None:  # (uvloop is an extra)
            specs.append(ServerSpec("pipeparse", "native", "plaintext", (*idle, "--loop", loop)))
    for peer in settings.peers:
        # Each peer's idle keep-alive timeout (granian has none to set: it keeps them open).
        flag = {"uvicorn": "--timeout-keep-alive", "hypercorn": "--keep-alive"}.get(peer)
        extra = (flag, IDLE_SECONDS) if flag else ()
        specs.append(ServerSpec(peer, "asgi", "plaintext", extra))
    return specs


def connection_steps(settings: ConnectionSettings) -> int:
    return len(idle_specs(settings)) + 1


def server_name(spec: ServerSpec) -> str:
    """``pipeparse`` (on trio), ``pipeparse/asyncio``, ``pipeparse/uvloop``, or the peer."""
    return server_label(spec.engine, spec.loop)


def _row(measure: str, server: str, connections: int, **values: Any) -> Row:
    row: Row = {
        "measure": measure,
        "server": server,
        "connections": connections,
        "rss_mib": None,
        "kib_per_connection": None,
        "depth": None,
        "rps": None,
        "p99_ms": None,
        "rps_vs_fixed": None,
    }
    row.update(values)
    return row


def measure_idle(
    settings: ConnectionSettings, warnings: list[str], step: Step | None = None
) -> list[Row]:
    """RSS rows: every server at every count (a server that fails is a warning)."""
    limit = raise_nofile_limit()
    counts = sorted(c for c in settings.counts if c + 64 <= limit)
    if len(counts) < len(settings.counts):
        warnings.append(f"connections: RLIMIT_NOFILE is {limit}: counts above it skipped")
    rows: list[Row] = []
    for spec in idle_specs(settings):
        try:
            with running_servers([spec]) as servers:
                server = servers[spec]
                for count, rss, per in rss_per_connection(
                    HOST, server.port, server.proc.pid, counts
                ):
                    rows.append(
                        _row(
                            "idle rss",
                            server_name(spec),
                            count,
                            rss_mib=round(rss / 2**20, 1),
                            kib_per_connection=round(per / 1024, 1),
                        )
                    )
        except (OSError, RuntimeError) as exc:
            warnings.append(f"connections: {spec.label}: {exc}")
        if step is not None:
            step(f"idle connections: {server_name(spec)}")
    return rows


def measure_buffers(
    settings: ConnectionSettings,
    load: ServerSettings,
    warnings: list[str],
    step: Step | None = None,
) -> list[Row]:
    """Depth-16 rows: growing buffers against the fixed 256 KiB buffer, side by side."""
    growing = ServerSpec("pipeparse", "native")
    fixed = ServerSpec("pipeparse", "native", extra=(FIXED,))
    shape = LoadShape(HANDLER_PATHS["instant"], settings.load_connections, settings.depth)
    mine, peer = split_cpus(available_cpus())  # the load client on one CPU, servers on the rest
    shared = mine == peer  # one CPU: no pinning
    with (
        running_servers([growing, fixed], None if shared else peer) as servers,
        pinned(None if shared else mine),
    ):
        medians = side_by_side([servers[growing], servers[fixed]], shape, load, warnings)
    base = medians[fixed]["rps"]
    rows = []
    for name, spec in (("growing", growing), ("fixed 256K", fixed)):
        m = medians[spec]
        ratio = None if m["rps"] is None or base is None else safe_ratio(m["rps"], base)
        rows.append(
            _row(
                f"buffer {name}",
                "pipeparse",
                settings.load_connections,
                depth=settings.depth,
                rps=m["rps"],
                p99_ms=m["p99_ms"],
                rps_vs_fixed=None if ratio is None else round(ratio, 3),
            )
        )
    if step is not None:
        step("depth 16: growing vs fixed buffers")
    return rows


def run_connections_bench(
    settings: ConnectionSettings,
    load: ServerSettings,
    warnings: list[str],
    step: Step | None = None,
) -> list[Row]:
    return measure_idle(settings, warnings, step) + measure_buffers(settings, load, warnings, step)


def rss_series(rows: Sequence[Row]) -> dict[str, list[tuple[int, float]]]:
    """For the plot: each server's (connections, RSS MiB), in order."""
    out: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        if r["measure"] == "idle rss":
            out.setdefault(r["server"], []).append((r["connections"], r["rss_mib"]))
    return out
