"""What a load run's connections share: the `Plan` (prepared once) and the current `Phase`."""

from __future__ import annotations

import hashlib
import socket
from typing import Any

import trio

from pipeparse import KiB, Limits
from pipeparse.clients.load.config import LoadConfig, requests_of
from pipeparse.clients.load.request import Target, parse_url
from pipeparse.clients.load.result import LoadStats
from pipeparse.clients.load.tls import client_context
from pipeparse.clients.load.tls import wait_readable as tls_wait_readable

__all__ = ["RECV_SIZE", "SECONDS", "Phase", "Plan"]

SECONDS = 1.0
RECV_SIZE = 64 * KiB  # the most one read takes (a large read frames many responses at once)


class Plan:
    """The run's immutable parts, prepared once."""

    def __init__(self, config: LoadConfig) -> None:
        self.config = config
        self.target: Target = parse_url(config.url)
        mix = requests_of(config)
        self.mix = mix
        self.depth = config.depth
        self.batch = config.mode == "batch"
        # The cycle of requests and `depth` more: sending k requests from position p of the
        # cycle is one slice, ``requests[offsets[p]:offsets[p + k]]``.
        self.requests = memoryview(mix.data)
        self.offsets = mix.offsets
        self.cycle_len = len(mix)
        self.method = mix.one_method  # None: the mix has several methods
        self.timeout = config.timeout
        self.limits = Limits(max_head_size=config.max_head_size)
        self.verify = config.verify
        # What the echo app reports for the request at each position of the cycle:
        self.reports = [
            (spec.target, spec.method, len(spec.body), hashlib.sha256(spec.body).hexdigest())
            for spec in (mix.specs[i] for i in mix.cycle)
        ]
        self.recv_size = min(RECV_SIZE, config.buffer_size)
        # Open loop: seconds between two requests of one connection.
        self.interval = config.connections / config.rate if config.rate else 0.0
        self.sockaddr: Any = None
        self.family = socket.AF_INET
        self.tls = client_context(config.cacert, config.insecure) if self.target.tls else None
        # Over TLS a read may find decrypted bytes already in OpenSSL (see clients/load/tls.py).
        self.wait_readable = tls_wait_readable if self.tls else trio.lowlevel.wait_readable

    async def resolve(self) -> None:
        if self.config.unix_socket is not None:
            self.family, self.sockaddr = socket.AF_UNIX, self.config.unix_socket
            return
        infos = await trio.socket.getaddrinfo(
            self.target.host, self.target.port, type=socket.SOCK_STREAM
        )
        if not infos:
            raise OSError("no address found")
        self.family, _, _, _, self.sockaddr = infos[0]


class Phase:
    """One phase of the run (warmup or measurement): its stats, its end, its request budget."""

    __slots__ = ("budget", "end", "name", "sending", "start", "stats")

    def __init__(self, name: str, stats: LoadStats, end: float | None, budget: int | None):
        self.name = name
        self.stats = stats
        self.start = stats.start
        self.end = end
        self.budget = budget
        self.sending = True

    def take(self, k: int, at: float) -> int:
        """How many of `k` requests may be sent at `at` (and take them from the budget)."""
        if self.end is not None and at >= self.end:
            self.sending = False
            return 0
        b = self.budget
        if b is None:
            return k
        if k >= b:
            k = b
            self.sending = False
        self.budget = b - k
        return k

    def over(self, now: float) -> bool:
        return self.budget == 0 or (self.end is not None and now >= self.end)
