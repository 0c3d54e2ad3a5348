"""What a load run does: `LoadConfig` (the `pipeparse load` flags, checked) and `Progress`.

Strategy: a config checks itself on creation (`check`), so a bad value is a ValueError naming
the setting before anything runs; the requests are checked by rendering them (`requests_of`),
the one request the URL and flags describe or a mix (`request_mix`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeparse import KiB
from pipeparse.clients.load.mix import Mix, RequestSpec
from pipeparse.clients.load.request import parse_url

__all__ = ["MODES", "LoadConfig", "Progress", "ProgressCallback", "requests_of"]

MODES = ("window", "batch")


@dataclass
class LoadConfig:
    """Everything a load run does (the `pipeparse load` flags).

    Attributes:
        url: ``http://host[:port]/target`` or ``https://...``.
        connections: connections open at once (in all processes together).
        depth: requests in flight per connection (window) or per batch (batch).
        duration: seconds of load; None: run by count only.
        requests: stop after this many requests are sent and settled; with `duration` too,
            whichever comes first.
        mode: ``window`` (sliding window) or ``batch`` (wrk-style batches of `depth`).
        rate: open loop at this many requests/s overall; None: closed loop, as fast as it goes.
        method, headers, body: the request. Content-Length comes from the body.
        mix: several requests with weights (`request_mix`), sent in place of the URL's target,
            `method` and `body`; `headers` are added to each. None: the one request.
        timeout: seconds without a response completing (with requests in flight) before a
            connection is dropped; also the connect timeout and the give-up time for a server
            that cannot be reached.
        warmup: seconds of load before measuring (not counted).
        verify: check every response against the `echo` app's report of the request.
        processes: OS processes sharing the connections (histograms merged exactly).
        buffer_size: receive buffer per connection, bytes (with `verify`, the largest response).
        max_head_size: largest response head (and trailer section), bytes.
        cacert: a CA bundle (PEM) to verify an https server with, besides the system's.
        insecure: do not verify the https server's certificate (curl's ``-k``).
        unix_socket: connect to this Unix domain socket instead of the URL's host and port
            (which still give the Host field), as curl's ``--unix-socket``.
    """

    url: str
    connections: int = 10
    depth: int = 16
    duration: float | None = 10.0
    requests: int | None = None
    mode: str = "window"
    rate: float | None = None
    method: str = "GET"
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    mix: list[RequestSpec] | None = None
    timeout: float = 10.0
    warmup: float = 0.0
    verify: bool = False
    processes: int = 1
    buffer_size: int = 256 * KiB
    max_head_size: int = 16 * KiB
    cacert: str | None = None
    insecure: bool = False
    unix_socket: str | None = None

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise ValueError naming the first setting that is out of range."""
        _positive_int("connections", self.connections)
        _positive_int("depth", self.depth)
        _positive_int("processes", self.processes)
        if self.duration is not None and not (self.duration > 0 and math.isfinite(self.duration)):
            raise ValueError(f"duration must be a positive number of seconds, got {self.duration}")
        if self.requests is not None:
            _positive_int("requests", self.requests)
        if self.duration is None and self.requests is None:
            raise ValueError("give a duration or a number of requests (or both)")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.rate is not None and not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError(f"rate must be a positive number of requests/s, got {self.rate}")
        if not (self.timeout > 0 and math.isfinite(self.timeout)):
            raise ValueError(f"timeout must be a positive number of seconds, got {self.timeout}")
        if not (self.warmup >= 0 and math.isfinite(self.warmup)):
            raise ValueError(f"warmup must be zero or more seconds, got {self.warmup}")
        if self.processes > self.connections:
            raise ValueError(
                f"{self.processes} processes need at least as many connections "
                f"(got {self.connections})"
            )
        if not isinstance(self.body, bytes):
            raise ValueError("body must be bytes")
        _positive_int("max_head_size", self.max_head_size)
        if self.buffer_size < self.max_head_size:
            raise ValueError(
                f"buffer_size ({self.buffer_size}) must be at least max_head_size "
                f"({self.max_head_size})"
            )
        if self.mix is not None:
            if not self.mix:
                raise ValueError("the request mix is empty")
            if self.body or self.method != "GET":
                raise ValueError("a request mix gives each request's method and body")
        # The URL and requests are checked by rendering them.
        requests_of(self)


def _positive_int(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot for a live display, taken every quarter second.

    Attributes:
        phase: ``connect``, ``warmup`` or ``load`` (``drain`` once sending has stopped).
        elapsed: seconds into the phase. planned: its planned length, if any.
        requests, sent, errors, bytes_received: so far in the phase.
        target_requests: the request count of the run, if it runs by count.
    """

    phase: str
    elapsed: float
    planned: float | None
    requests: int
    sent: int
    errors: int
    bytes_received: int
    target_requests: int | None = None


ProgressCallback = Callable[[Progress], None]


def requests_of(config: LoadConfig) -> Mix:
    """The run's requests, rendered: the mix, or the one request the URL and flags describe."""
    target = parse_url(config.url)
    if config.mix is not None:
        return Mix(config.mix, target, config.depth, extra_headers=config.headers)
    one = RequestSpec(target.target, config.method, tuple(config.headers), config.body)
    return Mix([one], target, config.depth)
