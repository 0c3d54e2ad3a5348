"""CPU time per request of the sans-I/O core and of the asyncio driver, in process (no sockets).

``python -m pipeparse.clients.crosscheck.core_cost`` feeds pipelined plaintext requests to

- ``core``: a `ServerConnection` alone, each `Start` answered at once with `respond`;
- ``native`` / ``asgi``: the asyncio driver's `HttpProtocol` over a stub transport, with the
  built-in plaintext app's native or ASGI handler,

at depths 1 and 16, and prints the process CPU time per request (best of ``--rounds``, after
one round to warm up: CPU time, so that other processes on a shared machine count as little
as they can). What it leaves
out is the event loop and the kernel, which wrk measures (`wrk_servers`).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from pipeparse import ServerConnection
from pipeparse.actions import Start
from pipeparse.servers.apps import plaintext
from pipeparse.servers.asyncio_driver import HttpProtocol
from pipeparse.servers.config import ServerConfig
from pipeparse.servers.handlers import resolve_app

__all__ = ["main", "measure"]

REQUEST = (
    b"GET /plaintext HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
)
_HEADERS = ((b"content-type", b"text/plain"),)
CASES = ("core", "native", "asgi")


class _Transport:
    """Enough of an asyncio transport for `HttpProtocol`: it counts writes."""

    def __init__(self) -> None:
        self.writes = 0

    def write(self, data: Any) -> None:
        self.writes += 1

    def writelines(self, data: Any) -> None:
        self.writes += 1

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def is_closing(self) -> bool:
        return False

    def close(self) -> None: ...

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None: ...


def _core_feeder() -> Callable[[bytes], None]:
    conn = ServerConnection()

    def feed(data: bytes) -> None:
        conn.receive_data(data)
        while actions := conn.actions():
            for action in actions:
                if type(action) is Start:
                    conn.respond(action.seq, 200, _HEADERS, b"Hello, World!")

    return feed


def _driver_feeder(interface: str) -> tuple[Callable[[bytes], None], _Transport]:
    protocol = HttpProtocol(resolve_app(plaintext, interface).handler, ServerConfig(), set(), bool)
    transport = _Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol.data_received, transport


def measure(case: str, depth: int, requests: int = 64_000, rounds: int = 5) -> float:
    """Microseconds of process CPU time per request (the best of `rounds`)."""
    if case not in CASES:
        raise ValueError(f"case must be one of {CASES}, got {case!r}")
    batches = max(1, requests // depth)
    data = REQUEST * depth

    async def run() -> float:
        if case == "core":
            feed = _core_feeder()
            transport = None
        else:
            feed, transport = _driver_feeder(case)
        for _ in range(batches):  # a round to warm up (caches, memory), not timed
            feed(data)
        best = float("inf")
        for _ in range(rounds):
            start = time.process_time()
            for _ in range(batches):
                feed(data)
            best = min(best, time.process_time() - start)
        if transport is not None and transport.writes != (rounds + 1) * batches:
            raise RuntimeError(f"{transport.writes} writes for {(rounds + 1) * batches} batches")
        return best / (batches * depth) * 1e6

    return asyncio.run(run())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pipeparse.clients.crosscheck.core_cost", description=__doc__
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds, best kept (default: 5)")
    parser.add_argument(
        "--requests", type=int, default=64_000, help="requests per round (default: 64000)"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.requests < 1:
        parser.error("--rounds and --requests must be at least 1")
    for case in CASES:
        for depth in (1, 16):
            us = measure(case, depth, args.requests, args.rounds)
            print(f"{case:7s} depth {depth:2d}: {us:6.2f} us of CPU per request")


if __name__ == "__main__":
    main()
