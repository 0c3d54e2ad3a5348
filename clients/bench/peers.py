"""Servers under test, as subprocesses on loopback: start, wait until listening, stop.

Strategy: the bench never serves in its own process. pipeparse's engines run as
``python -m pipeparse.cli serve APP --engine E --interface I --port 0``; the server prints
``pipeparse: listening on http://HOST:PORT (...)`` as its first stdout line, and the bench reads
the port from it. Peer servers (the `peers` extra: uvicorn with httptools and uvloop, hypercorn,
granian's ASGI interface without and with ``--http1-pipeline-flush``) serve the same ASGI app
from `pipeparse.servers.apps` on a port the bench picks, and are ready once a TCP connect succeeds
(polled, bounded in time). Each server is pinned to the peer CPUs when there are two or more,
and stopped with SIGTERM (then killed if it lingers).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import select
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeparse.clients.bench.procs import can_pin, python_module

__all__ = [
    "CEILINGS",
    "ENGINES",
    "PEER_ENGINES",
    "PEER_MODULES",
    "ServerSpec",
    "StartedServer",
    "installed_peers",
    "missing_modules",
    "parse_listening_line",
    "peer_asgi_app",
    "running_servers",
    "server_command",
]

ENGINES = ("pipeparse", "h11")
# Not servers: the bare trio loops of `pipeparse.clients.crosscheck.trio_ceiling`, which bound
# what the engines can do (the wrk cross-check runs them beside the servers; app: the loop).
CEILINGS = ("trio-ceiling",)
# granian-flush: granian with --http1-pipeline-flush (it aggregates pipelined responses' writes).
PEER_ENGINES = ("uvicorn", "hypercorn", "granian", "granian-flush")
# The loop each peer serves on, as started here (`server_command`).
PEER_LOOPS = {
    "uvicorn": "uvloop",
    "hypercorn": "asyncio",
    "granian": "tokio",
    "granian-flush": "tokio",
}
# What a peer needs importable: uvicorn is measured at its fastest, with httptools and uvloop.
PEER_MODULES: dict[str, tuple[str, ...]] = {
    "uvicorn": ("uvicorn", "httptools", "uvloop"),
    "hypercorn": ("hypercorn",),
    "granian": ("granian",),
    "granian-flush": ("granian",),
}
HOST = "127.0.0.1"


def peer_asgi_app(app: str) -> str:
    """The import string a peer server loads for the built-in `app`
    (``pipeparse.servers.apps:APP``)."""
    return f"pipeparse.servers.apps:{app}"


START_TIMEOUT = 20.0  # seconds a server may take to listen
STOP_TIMEOUT = 10.0  # seconds a server may take to exit after SIGTERM

_LISTENING = re.compile(
    r"^pipeparse: listening on http://(?P<host>[^\s:]+|\[[^\]]+\]):(?P<port>\d+) "
    r"\(engine (?P<engine>[\w-]+), interface (?P<interface>[\w-]+), workers (?P<workers>\d+)\)"
)


def parse_listening_line(line: str) -> tuple[str, int]:
    """``(host, port)`` from a `pipeparse serve` start line; `ValueError` if it isn't one."""
    m = _LISTENING.match(line.strip())
    if m is None:
        raise ValueError(f"not a 'pipeparse: listening on' line: {line.strip()!r}")
    return m["host"].strip("[]"), int(m["port"])


def missing_modules(peer: str) -> list[str]:
    """The modules `peer` needs that are not installed here (none: it can run)."""
    return [m for m in PEER_MODULES[peer] if importlib.util.find_spec(m) is None]


def installed_peers() -> list[str]:
    """The peer servers that can run here (the `peers` extra installs them all)."""
    return [name for name in PEER_ENGINES if not missing_modules(name)]


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """One server to start.

    Attributes:
        engine: ``pipeparse``, ``h11``, or a peer (`PEER_ENGINES`).
        interface: ``native`` or ``asgi`` (peers: ``asgi`` only).
        app: the built-in app to serve (``echo``); peers serve its ASGI form.
        extra: more flags for the server's command line (``--flush each``).
    """

    engine: str
    interface: str = "native"
    app: str = "echo"
    extra: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.engine not in ENGINES + PEER_ENGINES + CEILINGS:
            raise ValueError(f"unknown engine {self.engine!r}")
        if self.interface not in ("native", "asgi"):
            raise ValueError(f"unknown interface {self.interface!r}")
        if self.engine in PEER_ENGINES and self.interface != "asgi":
            raise ValueError(f"{self.engine} serves the asgi interface only")

    @property
    def loop(self) -> str:
        """The event loop it serves on: pipeparse's ``--loop`` (trio by default), the h11
        engine's trio, or the peer's own."""
        if self.engine in ENGINES:
            extra = self.extra
            return extra[extra.index("--loop") + 1] if "--loop" in extra else "trio"
        if self.engine in CEILINGS:
            return "trio"
        return PEER_LOOPS[self.engine]

    @property
    def label(self) -> str:
        extra = " ".join(self.extra)
        return f"{self.engine}/{self.interface}" + (f" {extra}" if extra else "")


def server_label(engine: str, loop: str) -> str:
    """How tables and plots name a server: the engine, with pipeparse's loop unless trio."""
    return f"{engine}/{loop}" if engine == "pipeparse" and loop != "trio" else engine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def server_command(spec: ServerSpec, port: int = 0) -> list[str]:
    """The command line that starts `spec` (port 0: let pipeparse pick; peers need one)."""
    if spec.engine in ENGINES:
        return [
            *python_module("pipeparse.cli"),
            "serve",
            spec.app,
            "--engine",
            spec.engine,
            "--interface",
            spec.interface,
            "--port",
            str(port),
            *spec.extra,
        ]
    if spec.engine in CEILINGS:
        return [
            *python_module("pipeparse.clients.crosscheck.trio_ceiling"),
            spec.app,
            "--port",
            str(port),
        ]
    if spec.engine == "uvicorn":
        return [
            *python_module("uvicorn"),
            peer_asgi_app(spec.app),
            "--http",
            "httptools",
            "--loop",
            "uvloop",
            "--host",
            HOST,
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
            *spec.extra,
        ]
    if spec.engine in ("granian", "granian-flush"):
        flush = ["--http1-pipeline-flush"] if spec.engine == "granian-flush" else []
        return [
            *python_module("granian"),
            "--interface",
            "asgi",
            "--http",
            "1",
            "--host",
            HOST,
            "--port",
            str(port),
            "--workers",
            "1",
            "--log-level",
            "warning",
            *flush,
            *spec.extra,
            peer_asgi_app(spec.app),
        ]
    return [
        *python_module("hypercorn"),
        peer_asgi_app(spec.app),
        "--bind",
        f"{HOST}:{port}",
        "--log-level",
        "warning",
        *spec.extra,
    ]


@dataclass(slots=True)
class StartedServer:
    spec: ServerSpec
    proc: subprocess.Popen[str]
    stderr: Any  # a temporary file: a pipe nobody reads could fill and stall the server
    port: int = 0

    def url(self, path: str = "/") -> str:
        return f"http://{HOST}:{self.port}{path}"


def _start(spec: ServerSpec, cpus: set[int] | None) -> StartedServer:
    port = 0 if spec.engine in ENGINES else _free_port()
    # Closed by _stop, which every started server goes through.
    stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")  # noqa: SIM115
    proc = subprocess.Popen(
        server_command(spec, port),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    if cpus and can_pin():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(proc.pid, cpus)
    return StartedServer(spec, proc, stderr, port)


def _fail(server: StartedServer, why: str) -> RuntimeError:
    _terminate(server.proc)
    err = ""
    with contextlib.suppress(OSError, ValueError):
        server.stderr.seek(0)
        err = server.stderr.read()[-2000:]
    _stop(server)
    return RuntimeError(f"{server.spec.label} did not start: {why}\n{err}".rstrip())


def _wait_listening(server: StartedServer, deadline: float) -> None:
    proc = server.proc
    if server.spec.engine in ENGINES:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            raise _fail(server, f"no start line within {START_TIMEOUT:.0f} s")
        line = proc.stdout.readline()
        try:
            _, server.port = parse_listening_line(line)
        except ValueError as exc:
            raise _fail(server, str(exc)) from None
        return
    while time.monotonic() < deadline:  # a peer: poll until it accepts (bounded)
        if proc.poll() is not None:
            raise _fail(server, f"exited with status {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, server.port), 0.5):
            return
        time.sleep(0.05)
    raise _fail(server, f"not accepting within {START_TIMEOUT:.0f} s")


def _terminate(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)


def _stop(server: StartedServer) -> None:
    proc = server.proc
    _terminate(proc)
    for stream in (proc.stdout, server.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


@contextlib.contextmanager
def running_servers(
    specs: Sequence[ServerSpec], cpus: set[int] | None = None
) -> Iterator[dict[ServerSpec, StartedServer]]:
    """Start every spec at once (they start in parallel), wait for each, stop all after."""
    started: list[StartedServer] = []
    try:
        for spec in specs:
            started.append(_start(spec, cpus))
        deadline = time.monotonic() + START_TIMEOUT
        for server in started:
            _wait_listening(server, deadline)
        yield {s.spec: s for s in started}
    finally:
        for server in started:
            _stop(server)
