"""Soak: mixed pipelined load on one server for a while; errors (expect 0) and memory over time.

    python -m pipeparse.clients.crosscheck.soak [--duration 120] [--engine pipeparse] [--interval
    10]

Starts ``pipeparse serve echo`` on loopback (with the bench's launcher), then runs the load
client in rounds of `interval` seconds, each round a different mix (plain GETs at depth 16,
POSTs with 4 KiB bodies, handlers that sleep 1 ms, a deep batch-mode pipeline, verification of
every response), and samples the server's resident memory (VmRSS) after each round. Prints a
line per round and a summary; exits 1 if any request failed or memory grew by more than
``--max-growth-mib`` after the first round (the first round warms caches and the allocator).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

from pipeparse.clients.bench.peers import ServerSpec, running_servers
from pipeparse.clients.load.client import LoadConfig, run_load_sync

__all__ = ["main"]

_MIXES: list[tuple[str, dict[str, Any]]] = [
    ("get depth 16", dict(depth=16, connections=16)),
    ("post 4 KiB", dict(depth=8, connections=8, method="POST", body=b"x" * 4096)),
    ("sleep 1 ms", dict(depth=16, connections=16, path="/?sleep_ms=1")),
    ("batch depth 64", dict(depth=64, connections=4, mode="batch")),
    ("verify", dict(depth=16, connections=8, verify=True)),
]


@dataclass
class Round:
    mix: str
    requests: int
    errors: int
    rps: float
    rss_mib: float


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeparse.clients.crosscheck.soak", description=__doc__
    )
    parser.add_argument("--duration", type=float, default=120.0, help="seconds in all")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds per round")
    parser.add_argument("--engine", choices=["pipeparse", "h11"], default="pipeparse")
    parser.add_argument("--max-growth-mib", type=float, default=16.0)
    args = parser.parse_args(argv)
    rounds: list[Round] = []
    spec = ServerSpec(args.engine, app="echo")
    with running_servers([spec]) as started:  # bounded start; always stopped afterwards
        server = started[spec]
        start = time.monotonic()
        i = 0
        while time.monotonic() - start < args.duration:
            name, mix = _MIXES[i % len(_MIXES)]
            i += 1
            options = dict(mix)
            path = str(options.pop("path", "/"))
            config = LoadConfig(url=server.url(path), duration=args.interval, **options)
            result = run_load_sync(config)
            r = Round(
                name, result.requests, result.error_total, result.rps, rss_mib(server.proc.pid)
            )
            rounds.append(r)
            print(
                f"round {i:3d} {r.mix:15s} {r.requests:9d} requests {r.rps:9.0f} req/s "
                f"{r.errors} errors  server RSS {r.rss_mib:7.1f} MiB",
                flush=True,
            )
    if not rounds:
        print("soak: no round ran (duration shorter than one round?)")
        return 1
    total_errors = sum(r.errors for r in rounds)
    growth = rounds[-1].rss_mib - rounds[0].rss_mib
    print(
        f"soak: {len(rounds)} rounds, {sum(r.requests for r in rounds)} requests, "
        f"{total_errors} errors, RSS {rounds[0].rss_mib:.1f} -> {rounds[-1].rss_mib:.1f} MiB "
        f"(growth {growth:+.1f} MiB after round 1)"
    )
    return 0 if total_errors == 0 and growth <= args.max_growth_mib else 1


if __name__ == "__main__":
    raise SystemExit(main())
