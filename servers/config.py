"""ServerConfig: every setting of `pipeparse serve`, with its default (and units in its name).

`make_config` applies keyword overrides (the keywords of `pipeparse.serve` and `run`);
`config_to_json` and `config_from_json` carry a config to worker processes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from pipeparse import KiB, Limits

from .proxy import TrustedProxies
from .websocket import WebSocketOptions

__all__ = [
    "Engine",
    "Interface",
    "Loop",
    "PipelinePolicy",
    "ServerConfig",
    "config_from_json",
    "config_to_json",
    "make_config",
]

Engine = Literal["pipeparse", "h11"]
Interface = Literal["auto", "asgi", "native"]
PipelinePolicy = Literal["safe", "all", "serial"]
Loop = Literal["trio", "asyncio", "uvloop"]

SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    uds: str | None = None  # listen on this Unix domain socket instead of host/port
    fd: int | None = None  # serve on this inherited listening socket (socket activation)
    # TLS (uvicorn's names): serve https when ssl_certfile is set; see servers/tls.py.
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None  # None: the key is in ssl_certfile
    ssl_keyfile_password: str | None = None
    ssl_ca_certs: str | None = None  # CA certificates to check client certificates against
    ssl_cert_reqs: int = 0  # ssl.CERT_NONE (0), CERT_OPTIONAL (1), CERT_REQUIRED (2)
    ssl_ciphers: str | None = None  # an OpenSSL cipher list; None: Python's default
    ssl_handshake_timeout: float = 10 * SECONDS  # a TLS handshake must finish within this
    engine: Engine = "pipeparse"
    loop: Loop = "trio"  # the event loop; asyncio and uvloop serve with the pipeparse engine
    interface: Interface = "auto"
    pipeline_policy: PipelinePolicy = "safe"
    max_in_flight: int = 16  # requests framed but not yet answered, per connection
    buffer_size: int = 256 * KiB  # receive buffer per connection, bytes
    # Testing and benchmarks: give every connection its whole buffer_size up front (the
    # buffer of old) instead of a block that grows with the bytes in flight.
    fixed_buffer: bool = False
    limits: Limits = field(default_factory=Limits)
    header_timeout: float = 10 * SECONDS  # a head must complete within this (408)
    keep_alive_timeout: float = 5 * SECONDS  # idle connection closed after this
    body_timeout: float = 30 * SECONDS  # longest wait for more body bytes
    request_timeout: float = 60 * SECONDS  # a handler over this gets 503
    shutdown_timeout: float = 10 * SECONDS  # in-flight work may finish within this
    recv_size: int = 0  # bytes per receive; 0: adaptive (see servers/trio_reading.py)
    flush: Literal["adaptive", "each"] = "adaptive"  # when responses are written
    workers: int = 1
    # The most connections plus in-flight requests the process serves at once (None: no
    # limit); a request beyond it is answered 503 with Connection: close (uvicorn's name).
    limit_concurrency: int | None = None
    # A process exits gracefully after serving this many requests (None: never); with
    # workers the supervisor starts a fresh one (a guard against slow leaks).
    limit_max_requests: int | None = None
    backlog: int = 2048  # listen() queue of connections not yet accepted
    access_log: bool = False
    log_level: str = "info"
    server_name: bytes = b"pipeparse"
    # Generation-0 threshold of Python's cyclic GC in a process the server owns (`run`, the
    # CLI, workers); 0 leaves the interpreter's (700). Requests in flight keep thousands of
    # young objects alive, so at 700 most of them are promoted and full collections walk the
    # whole heap every few thousand requests; nothing is cyclic garbage on the hot path.
    gc_threshold: int = 10_000
    # Behind a proxy (uvicorn's names): believe X-Forwarded-For/-Proto and RFC 7239 Forwarded
    # from the peers in forwarded_allow_ips (comma list of addresses or networks, "*": all) to
    # set the client address and scheme; see servers/proxy.py.
    proxy_headers: bool = False
    forwarded_allow_ips: str = "127.0.0.1"
    root_path: str = ""  # the app's mount point behind a proxy: scope["root_path"]
    # WebSockets for ASGI apps (uvicorn's names; see servers/websocket.py). "none": an
    # Upgrade request is an ordinary HTTP request (the app's routes answer it).
    ws: Literal["auto", "none"] = "auto"
    ws_max_size: int = 16 * 1024 * KiB  # a larger message closes the WebSocket with 1009
    ws_ping_interval: float = 20 * SECONDS  # the server pings this often; 0: never
    ws_ping_timeout: float = 20 * SECONDS  # a pong later than this drops it; 0: wait

    def __post_init__(self) -> None:
        if self.loop not in ("trio", "asyncio", "uvloop"):
            raise ValueError(f"loop must be trio, asyncio or uvloop, got {self.loop!r}")
        if self.loop != "trio" and self.engine != "pipeparse":
            raise ValueError(
                f"the {self.engine} engine runs on trio only: --loop {self.loop} needs "
                "--engine pipeparse"
            )
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {self.max_in_flight}")
        if self.buffer_size < 1024:
            raise ValueError(f"buffer_size must be at least 1024 bytes, got {self.buffer_size}")
        if self.buffer_size <= self.limits.max_head_size:
            raise ValueError(
                f"buffer_size ({self.buffer_size}) must exceed max_head_size "
                f"({self.limits.max_head_size}): a whole head must fit in the buffer"
            )
        if self.recv_size < 0:
            raise ValueError(f"recv_size must be 0 (adaptive) or positive, got {self.recv_size}")
        if self.flush not in ("adaptive", "each"):
            raise ValueError(f"flush must be 'adaptive' or 'each', got {self.flush!r}")
        if self.gc_threshold < 0:
            raise ValueError(
                f"gc_threshold must be 0 (leave as is) or positive, got {self.gc_threshold}"
            )
        for name in ("limit_concurrency", "limit_max_requests"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 (or None: no limit), got {value}")
        if self.ssl_certfile is None and (
            self.ssl_keyfile is not None or self.ssl_ca_certs is not None
        ):
            raise ValueError("ssl_keyfile and ssl_ca_certs need ssl_certfile")
        if self.ssl_cert_reqs not in (0, 1, 2):
            raise ValueError(
                f"ssl_cert_reqs must be 0 (none), 1 (optional) or 2 (required), got "
                f"{self.ssl_cert_reqs}"
            )
        if self.ws not in ("auto", "none"):
            raise ValueError(f"ws must be 'auto' or 'none', got {self.ws!r}")
        if self.ws_max_size < 1:
            raise ValueError(f"ws_max_size must be at least 1 byte, got {self.ws_max_size}")
        for name in ("ws_ping_interval", "ws_ping_timeout"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 (off) or positive, got {getattr(self, name)}")
        if self.uds is not None and self.fd is not None:
            raise ValueError("give either uds or fd, not both")
        if self.uds is not None and not self.uds:
            raise ValueError("uds must be a path, got ''")
        if self.fd is not None and self.fd < 0:
            raise ValueError(f"fd must be 0 or more, got {self.fd}")
        TrustedProxies.parse(self.forwarded_allow_ips)  # raises ValueError naming the entry
        if self.root_path and (not self.root_path.startswith("/") or self.root_path.endswith("/")):
            raise ValueError(
                f"root_path must start with '/' and not end with one (or be ''), got "
                f"{self.root_path!r}"
            )
        if not self.root_path.isascii():
            raise ValueError(f"root_path must be ASCII, got {self.root_path!r}")
        if self.backlog < 1:
            raise ValueError(f"backlog must be at least 1, got {self.backlog}")
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        for name in (
            "header_timeout",
            "keep_alive_timeout",
            "body_timeout",
            "request_timeout",
            "ssl_handshake_timeout",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    def websocket_options(self) -> WebSocketOptions:
        """The WebSocket limits and timers (0 seconds: off)."""
        return WebSocketOptions(
            max_size=self.ws_max_size,
            ping_interval=self.ws_ping_interval or None,
            ping_timeout=self.ws_ping_timeout or None,
            server_name=self.server_name,
        )


# --- overrides and the wire form -------------------------------------------------------------

_CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(ServerConfig))
_LIMIT_FIELDS = frozenset(f.name for f in dataclasses.fields(Limits))


def make_config(config: ServerConfig | None = None, **overrides: Any) -> ServerConfig:
    """`config` (default: `ServerConfig()`) with `overrides` applied.

    An override may name a field of `ServerConfig` or of `Limits` (``max_body_size=...``
    replaces that one limit). Raises `TypeError` for an unknown name and `ValueError` for a
    bad value.
    """
    base = config if config is not None else ServerConfig()
    unknown = sorted(set(overrides) - _CONFIG_FIELDS - _LIMIT_FIELDS)
    if unknown:
        raise TypeError(
            f"unknown server setting(s) {', '.join(unknown)}: settings are the fields of "
            "ServerConfig and of Limits"
        )
    limits = {k: overrides.pop(k) for k in list(overrides) if k in _LIMIT_FIELDS}
    if limits:
        if "limits" in overrides:
            raise TypeError("give either limits= or single limits (max_body_size=...), not both")
        overrides["limits"] = dataclasses.replace(base.limits, **limits)
    return dataclasses.replace(base, **overrides) if overrides else base


def config_to_json(config: ServerConfig) -> dict[str, Any]:
    """`config` as JSON-ready data (for a worker process); `config_from_json` reads it back."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, Limits):
            value = {"limits": dataclasses.asdict(value)}
        elif isinstance(value, bytes):
            value = {"bytes": value.decode("latin-1")}
        out[f.name] = value
    return out


def config_from_json(data: dict[str, Any]) -> ServerConfig:
    """The `ServerConfig` that `config_to_json` gave `data` for."""
    values: dict[str, Any] = {}
    for name, value in data.items():
        if isinstance(value, dict) and "limits" in value:
            value = Limits(**value["limits"])
        elif isinstance(value, dict) and "bytes" in value:
            value = value["bytes"].encode("latin-1")
        values[name] = value
    return ServerConfig(**values)
