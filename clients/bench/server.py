"""The `server`, `wall` and `batching` sections: servers on loopback driven by the load client.

Strategy
--------
Every server a section compares is started once, before the section, and they all stay up
(idle ones cost nothing); each load shape is then run against every server side by side: in
each repeat the servers take turns, in an order that rotates from repeat to repeat, and a row
is the median over repeats of rps, p50 and p99. The load client runs in this process (one
process, `pipeparse.clients.load.client.run_load_sync`), pinned to the first CPU; the servers are
pinned to the
others, so on a 2-core machine the client and the server each own a core.

The `server` and `batching` sections use one connection by default: they measure what an engine
does with the requests of one pipelined connection (the subject of pipeparse); the `wall`
section is the one that adds connections, up to where each engine saturates. The `server`
section has depth-1 rows too (also in `--quick`): keep-alive without pipelining, the way most
real clients send. pipeparse runs on trio and, as extra servers of the same comparison, on the
other loops installed (`ServerSettings.loops`: asyncio and uvloop, quick: one of them); every
row has a ``loop`` column.

Handlers: the built-in `echo` app at ``/`` (`instant`), ``/?sleep_ms=1`` (`sleep1ms`) and
``/?sleep_ms=10`` (`sleep10ms`); peers serve the same app's ASGI form.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeparse.clients.bench.peers import (
    ENGINES,
    ServerSpec,
    StartedServer,
    installed_peers,
    running_servers,
)
from pipeparse.clients.bench.procs import available_cpus, pinned, split_cpus
from pipeparse.clients.bench.stats import Row, median, safe_ratio

__all__ = [
    "BATCHING_CONFIGS",
    "HANDLERS",
    "HANDLER_PATHS",
    "LoadShape",
    "ServerSettings",
    "batching_flags",
    "run_batching_bench",
    "run_server_bench",
    "run_wall_bench",
    "summarize_runs",
]

HANDLERS = ("instant", "sleep1ms", "sleep10ms")
HANDLER_PATHS = {"instant": "/", "sleep1ms": "/?sleep_ms=1", "sleep10ms": "/?sleep_ms=10"}
DEPTHS = (1, 4, 16)
INTERFACES = ("native", "asgi")
# pipeparse's loops besides trio, in the `server` section (uvloop only where installed).
LOOPS = tuple(lp for lp in ("asyncio", "uvloop") if importlib.util.find_spec(lp) is not None)
WALL_CONNECTIONS = (1, 2, 4, 8, 16, 32, 64)
WALL_DEPTH = 16
WALL_HANDLER = "instant"
WALL_INTERFACE = "asgi"  # the one interface every engine, peers included, serves
# (recv_size, flush): "adaptive" or a fixed receive size in bytes; "adaptive" or "each".
BATCHING_CONFIGS: tuple[tuple[int | str, str], ...] = (
    ("adaptive", "adaptive"),
    (4096, "adaptive"),
    (65536, "adaptive"),
    ("adaptive", "each"),
    (4096, "each"),
)
# The quick `server` grid: the targets' rows at depth 16, and instant handlers at depth 1.
QUICK_GRID: tuple[tuple[str, int], ...] = (("instant", 16), ("instant", 1), ("sleep10ms", 16))
QUICK_BATCHING_CONFIGS: tuple[tuple[int | str, str], ...] = (
    ("adaptive", "adaptive"),
    (4096, "adaptive"),
    ("adaptive", "each"),
)

Step = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """How much the server-driving sections measure (see `full()` and `quick()`)."""

    duration: float = 0.6  # seconds of measured load per run
    warmup: float = 0.1  # seconds of unmeasured load before each run
    repeats: int = 5  # runs per server per shape; rows are medians (more, shorter runs: a
    # noisy neighbour spoils fewer of them)
    connections: int = 1  # connections of the `server` and `batching` sections
    depths: tuple[int, ...] = DEPTHS
    handlers: tuple[str, ...] = HANDLERS
    interfaces: tuple[str, ...] = INTERFACES
    # (handler, depth) pairs to measure; None: every handler at every depth.
    grid: tuple[tuple[str, int], ...] | None = None
    peers: tuple[str, ...] = ()
    loops: tuple[str, ...] = LOOPS  # pipeparse's loops besides trio (the `server` section)
    wall_connections: tuple[int, ...] = WALL_CONNECTIONS
    batching_configs: tuple[tuple[int | str, str], ...] = BATCHING_CONFIGS
    batching_depths: tuple[int, ...] = (1, 16)
    timeout: float = 10.0  # the load client's per-request timeout

    def __post_init__(self) -> None:
        if self.duration <= 0 or self.warmup < 0:
            raise ValueError("duration must be positive and warmup not negative")
        if self.repeats < 1 or self.connections < 1:
            raise ValueError("repeats and connections must be at least 1")
        for h in (*self.handlers, *(h for h, _ in self.grid or ())):
            if h not in HANDLER_PATHS:
                raise ValueError(f"unknown handler {h!r}")

    @classmethod
    def full(cls, peers: bool = True) -> ServerSettings:
        return cls(peers=tuple(installed_peers()) if peers else ())

    @classmethod
    def quick(cls, peers: bool = False) -> ServerSettings:
        return cls(
            duration=0.3,
            warmup=0.1,
            repeats=3,
            grid=QUICK_GRID,
            peers=tuple(installed_peers()) if peers else (),
            loops=LOOPS[-1:],  # the fastest installed
            wall_connections=(1, 8, 64),
            batching_configs=QUICK_BATCHING_CONFIGS,
            batching_depths=(16,),
        )

    def pairs(self) -> list[tuple[str, int]]:
        """The (handler, depth) pairs of the `server` section, in run order."""
        if self.grid is not None:
            return list(self.grid)
        return [(h, d) for d in self.depths for h in self.handlers]


@dataclass(frozen=True, slots=True)
class LoadShape:
    path: str
    connections: int
    depth: int


# -- measuring -----------------------------------------------------------------------------


def _errors_total(errors: Any) -> int:
    if isinstance(errors, dict):
        return int(sum(errors.values()))
    return int(errors or 0)


def _error_kinds(errors: Any) -> str:
    if isinstance(errors, dict):
        return ", ".join(f"{k} {v}" for k, v in errors.items() if v)
    return str(errors)


Run = dict[str, Any]  # rps, p50_ms, p99_ms (None: no request completed), requests, errors


def measure_once(url: str, shape: LoadShape, settings: ServerSettings) -> Run:
    """One load run: ``{"rps", "p50_ms", "p99_ms", "requests", "errors", "error_kinds"}``."""
    from pipeparse.clients.load.client import (  # the load client (imported only when used)
        LoadConfig,
        run_load_sync,
    )

    config = LoadConfig(
        url=url,
        connections=shape.connections,
        depth=shape.depth,
        duration=settings.duration,
        warmup=settings.warmup,
        timeout=settings.timeout,
        processes=1,
    )
    result = run_load_sync(config).to_json()
    latency = result["latency_ms"]
    return {
        "rps": float(result["rps"]),
        "p50_ms": None if latency["p50"] is None else float(latency["p50"]),
        "p99_ms": None if latency["p99"] is None else float(latency["p99"]),
        "requests": int(result["requests"]),
        "errors": _errors_total(result["errors"]),
        "error_kinds": _error_kinds(result["errors"]),
    }


def _median_or_none(values: Sequence[float | None], digits: int) -> float | None:
    present = [v for v in values if v is not None]
    return round(median(present), digits) if present else None


def summarize_runs(runs: Sequence[Run]) -> dict[str, float | None]:
    """Medians of rps, p50 and p99 over repeated runs (latency: over runs that have one)."""
    return {
        "rps": round(median(r["rps"] for r in runs), 1),
        "p50_ms": _median_or_none([r["p50_ms"] for r in runs], 3),
        "p99_ms": _median_or_none([r["p99_ms"] for r in runs], 3),
    }


def rotated(items: Sequence[Any], shift: int) -> list[Any]:
    """`items` rotated left by `shift` (so each takes every position across repeats)."""
    if not items:
        return []
    k = shift % len(items)
    return [*items[k:], *items[:k]]


Measure = Callable[[str, LoadShape, ServerSettings], Run]


def side_by_side(
    servers: Sequence[StartedServer],
    shape: LoadShape,
    settings: ServerSettings,
    warnings: list[str],
    measure: Measure | None = None,
) -> dict[ServerSpec, dict[str, float | None]]:
    """Run `shape` against every server, `settings.repeats` times, rotating the order;
    returns each server's medians. Errors in a run are reported in `warnings`."""
    if measure is None:
        measure = measure_once
    runs: dict[ServerSpec, list[Run]] = {s.spec: [] for s in servers}
    for r in range(settings.repeats):
        for server in rotated(servers, r):
            result = measure(server.url(shape.path), shape, settings)
            if result["errors"] or not result["requests"]:
                warnings.append(
                    f"{server.spec.label} {shape.path} x{shape.connections} depth {shape.depth}: "
                    f"{result['errors']} errors ({result.get('error_kinds', '')}) "
                    f"in {result['requests']} requests"
                )
            runs[server.spec].append(result)
    return {spec: summarize_runs(rs) for spec, rs in runs.items()}


def _cpu_sides() -> tuple[set[int] | None, set[int] | None]:
    mine, peer = split_cpus(available_cpus())
    if mine == peer:
        return None, None
    return mine, peer


# -- sections ------------------------------------------------------------------------------


def server_specs(settings: ServerSettings) -> list[ServerSpec]:
    specs = [ServerSpec(e, i) for i in settings.interfaces for e in ENGINES]
    specs += [
        ServerSpec("pipeparse", i, extra=("--loop", loop))
        for i in settings.interfaces
        for loop in settings.loops
    ]
    if "asgi" in settings.interfaces:
        specs += [ServerSpec(p, "asgi") for p in settings.peers]
    return specs


def server_steps(settings: ServerSettings) -> int:
    return len(settings.pairs()) * len(settings.interfaces)


def run_server_bench(
    settings: ServerSettings, warnings: list[str], step: Step | None = None
) -> list[Row]:
    """engines x interface x handler x depth; rows as the issue names them."""
    mine, peer = _cpu_sides()
    specs = server_specs(settings)
    rows: list[Row] = []
    with running_servers(specs, peer) as servers, pinned(mine):
        for handler, depth in settings.pairs():
            for interface in settings.interfaces:
                group = [servers[s] for s in specs if s.interface == interface]
                shape = LoadShape(HANDLER_PATHS[handler], settings.connections, depth)
                medians = side_by_side(group, shape, settings, warnings)
                for spec, m in medians.items():
                    rows.append(
                        {
                            "engine": spec.engine,
                            "loop": spec.loop,
                            "interface": interface,
                            "handler": handler,
                            "depth": depth,
                            "connections": settings.connections,
                            **m,
                        }
                    )
                if step is not None:
                    step(f"{handler} depth {depth} {interface}")
    return rows


def wall_specs(settings: ServerSettings) -> list[ServerSpec]:
    return [ServerSpec(e, WALL_INTERFACE) for e in (*ENGINES, *settings.peers)]


def run_wall_bench(
    settings: ServerSettings, warnings: list[str], step: Step | None = None
) -> list[Row]:
    """Depth 16, instant handler, ASGI: rps and latency as connections grow."""
    mine, peer = _cpu_sides()
    specs = wall_specs(settings)
    rows: list[Row] = []
    with running_servers(specs, peer) as servers, pinned(mine):
        group = [servers[s] for s in specs]
        for connections in settings.wall_connections:
            shape = LoadShape(HANDLER_PATHS[WALL_HANDLER], connections, WALL_DEPTH)
            for spec, m in side_by_side(group, shape, settings, warnings).items():
                rows.append({"engine": spec.engine, "connections": connections, **m})
            if step is not None:
                step(f"{connections} connections")
    return rows


def batching_flags(recv_size: int | str, flush: str) -> tuple[str, ...]:
    """The `pipeparse serve` flags for one batching setting (adaptive: the default, no flag)."""
    flags: list[str] = []
    if recv_size != "adaptive":
        if not isinstance(recv_size, int) or recv_size <= 0:
            raise ValueError(f"recv_size must be 'adaptive' or a positive int, got {recv_size!r}")
        flags += ["--recv-size", str(recv_size)]
    if flush != "adaptive":
        if flush != "each":
            raise ValueError(f"flush must be 'adaptive' or 'each', got {flush!r}")
        flags += ["--flush", flush]
    return tuple(flags)


def run_batching_bench(
    settings: ServerSettings, warnings: list[str], step: Step | None = None
) -> list[Row]:
    """The pipeparse engine's adaptive batching against fixed settings, side by side.

    Rows: ``{"recv_size", "flush", "handler", "depth", "connections", "rps", "p50_ms",
    "p99_ms", "rps_vs_adaptive"}``; recv_size is "adaptive" or bytes per receive.
    """
    mine, peer = _cpu_sides()
    configs = list(settings.batching_configs)
    specs = [ServerSpec("pipeparse", "native", extra=batching_flags(*c)) for c in configs]
    rows: list[Row] = []
    with running_servers(specs, peer) as servers, pinned(mine):
        group = [servers[s] for s in specs]
        for depth in settings.batching_depths:
            shape = LoadShape(HANDLER_PATHS["instant"], settings.connections, depth)
            medians = side_by_side(group, shape, settings, warnings)
            base = medians[specs[0]]["rps"] if configs[0] == ("adaptive", "adaptive") else None
            for (recv_size, flush), spec in zip(configs, specs, strict=True):
                m = medians[spec]
                ratio = None if base is None or m["rps"] is None else safe_ratio(m["rps"], base)
                rows.append(
                    {
                        "recv_size": recv_size,
                        "flush": flush,
                        "handler": "instant",
                        "depth": depth,
                        "connections": settings.connections,
                        **m,
                        "rps_vs_adaptive": None if ratio is None else round(ratio, 3),
                    }
                )
            if step is not None:
                step(f"depth {depth}")
    return rows
