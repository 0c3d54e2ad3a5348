"""What the wrk cross-check measures: its matrices of servers, its targets, and their commands.

A `Matrix` is servers loaded alike (connections, depth, path); a `Contender` one server of it;
a `Target` one of the issues' goals, a ratio of two medians in one matrix. `describe` gives the
command that starts a server, `unavailable` says why one cannot run here (a peer or nginx not
installed), and `wrk_command` is the load. The running and the figures are
`pipeparse.clients.crosscheck.wrk_servers`' and `wrk_report`'s.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Literal

from pipeparse.clients.bench.peers import ServerSpec, missing_modules, server_command
from pipeparse.clients.crosscheck.nginx import ensure_nginx
from pipeparse.clients.crosscheck.wrk import WRK_PIPELINE_LUA

__all__ = [
    "DEPTH",
    "MATRICES",
    "NGINX_PLAINTEXT",
    "TARGETS",
    "WRK_THREADS",
    "Contender",
    "Matrix",
    "Target",
    "describe",
    "unavailable",
    "wrk_command",
]

WRK_THREADS = 1
DEPTH = 16
# Peers at their fastest: uvicorn with httptools and uvloop (`bench_servers.server_command`).
UVICORN_HTTPTOOLS = ServerSpec("uvicorn", "asgi", "plaintext")
UVICORN_ECHO = ServerSpec("uvicorn", "asgi", "echo")
GRANIAN_ASGI = ServerSpec("granian", "asgi", "plaintext")
GRANIAN_ASGI_FLUSH = ServerSpec("granian-flush", "asgi", "plaintext")
# The sleep target's floor: each request's trio.sleep in a task of its own, no HTTP work.
TRIO_SLEEPS_CEILING = ServerSpec("trio-ceiling", "native", "sleeps")
NGINX_PLAINTEXT = 'location = /plaintext { return 200 "Hello, World!"; }'

Kind = Literal["pipeparse", "uvicorn", "granian", "nginx", "ceiling"]


# -- what is measured ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Contender:
    """One server of a matrix.

    Attributes:
        label: its name in tables and targets.
        kind: ``pipeparse`` (either engine, via `pipeparse serve`), a peer (``uvicorn``,
            ``granian``), ``nginx``, or a ``ceiling`` (a bare trio loop of
            `pipeparse.clients.crosscheck.trio_ceiling`: not a server, what trio allows).
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


# The plaintext servers of both depths (granian's pipeline flush only at depth 16: at depth 1
# there is nothing to aggregate).
_PLAINTEXT_SERVERS = (
    _pp("pipeparse/native", "pipeparse", "native", "plaintext"),
    _pp("h11/native", "h11", "native", "plaintext"),
    _pp("pipeparse/asgi", "pipeparse", "asgi", "plaintext"),
    _pp("pipeparse/native/uvloop", "pipeparse", "native", "plaintext", "uvloop"),
    _pp("pipeparse/asgi/uvloop", "pipeparse", "asgi", "plaintext", "uvloop"),
    Contender("uvicorn-httptools", "uvicorn", UVICORN_HTTPTOOLS),
    Contender("granian-asgi", "granian", GRANIAN_ASGI),
)
_NGINX = Contender("nginx-1-worker", "nginx")

MATRICES: tuple[Matrix, ...] = (
    Matrix(
        "plaintext",
        "/plaintext",
        64,
        (
            *_PLAINTEXT_SERVERS,
            Contender("granian-asgi-flush", "granian", GRANIAN_ASGI_FLUSH),
            _NGINX,
        ),
    ),
    Matrix("plaintext-depth1", "/plaintext", 64, (*_PLAINTEXT_SERVERS, _NGINX), depth=1),
    Matrix(
        "sleep",
        "/?sleep_ms=10",
        16,
        (
            _pp("pipeparse/native", "pipeparse", "native", "echo"),
            _pp("h11/native", "h11", "native", "echo"),
            _pp("pipeparse/asgi/uvloop", "pipeparse", "asgi", "echo", "uvloop"),
            Contender("uvicorn-httptools", "uvicorn", UVICORN_ECHO),
            Contender("trio-sleeps-ceiling", "ceiling", TRIO_SLEEPS_CEILING),
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
