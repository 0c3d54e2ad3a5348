"""`pipeparse serve`: run the trio server from the command line.

Strategy: one flag per `ServerConfig` field and per `Limits` field (``--max-body-size`` for
``limits.max_body_size``), named after the field, defaulting to the field's default; `_FLAGS`
lists them and a test checks the list against the dataclasses, so a new setting cannot miss its
flag. Values are checked by the argparse types below (sizes take ``K``/``KiB`` and ``M``/``MiB``
suffixes, powers of 1024); `ServerConfig`'s own checks run next and a failure is reported as a
usage error (exit 2).

The first line on stdout, flushed at once, is exactly
``pipeparse: listening on http://HOST:PORT (engine ENGINE, interface INTERFACE, workers N)``,
with the real port when ``--port 0`` was asked for (``unix:PATH`` instead of
``http://HOST:PORT`` with ``--uds``) and INTERFACE the one the app is served
through (``asgi`` or ``native``). Logs go to stderr. SIGINT or SIGTERM stops the server
gracefully (exit 0; a second signal aborts the open connections). Exit codes: 0 stopped,
1 cannot listen or a worker could not start, 2 usage error (bad flag, an app that cannot be
loaded).

APP defaults to ``plaintext``, the built-in app the benchmark drives (``GET /plaintext``).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import signal
import sys
from collections.abc import Callable
from typing import Any

from pipeparse import KiB, Limits, MiB

from .config import ServerConfig

__all__ = [
    "add_arguments",
    "config_from_args",
    "listening_line",
    "parse_seconds",
    "parse_size",
    "run",
]

_SIZE = re.compile(r"(\d+)\s*(k|kib|m|mib)?", re.IGNORECASE)
_UNITS = {None: 1, "k": KiB, "kib": KiB, "m": MiB, "mib": MiB}


def parse_size(text: str) -> int:
    """Bytes: a whole number, optionally with K/KiB or M/MiB (``16K`` is 16384)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size: use whole bytes, or K/KiB or M/MiB (e.g. 16384, 16K, 1M)"
        )
    unit = match.group(2)
    return int(match.group(1)) * _UNITS[unit.lower() if unit else None]


def _positive_size(text: str) -> int:
    value = parse_size(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be more than 0 bytes")
    return value


def _at_least(least: int) -> Callable[[str], int]:
    """A parser of whole numbers from `least` up."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{text!r}: must be at least {least}")
        return value

    return parse


_positive_int = _at_least(1)
_count_or_zero = _at_least(0)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: a port is 0 (any free port) to 65535")
    return value


def parse_seconds(text: str, *, allow_zero: bool = False) -> float:
    """Seconds: a finite number, positive (or also 0 when `allow_zero`)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        least = "0 or more" if allow_zero else "more than 0"
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number of seconds, {least}")
    return value


def _seconds(text: str) -> float:
    return parse_seconds(text)


def _seconds_or_zero(text: str) -> float:
    return parse_seconds(text, allow_zero=True)


def _recv_size(text: str) -> int:
    return parse_size(text)  # 0 means adaptive


def _server_name(text: str) -> bytes:
    if not text or not all(0x21 <= ord(c) <= 0x7E or c == " " for c in text):
        raise argparse.ArgumentTypeError(f"{text!r}: the Server header needs printable ASCII")
    return text.encode("ascii")


def _cert_reqs(text: str) -> int:
    if text not in ("0", "1", "2"):
        raise argparse.ArgumentTypeError(f"{text!r}: use 0 (none), 1 (optional) or 2 (required)")
    return int(text)


def _format_size(value: int) -> str:
    if value and value % MiB == 0:
        return f"{value // MiB}M"
    if value and value % KiB == 0:
        return f"{value // KiB}K"
    return str(value)


_DEFAULTS = ServerConfig()


def _default(field: str) -> Any:
    if field in Limits.__dataclass_fields__:
        return getattr(_DEFAULTS.limits, field)
    return getattr(_DEFAULTS, field)


# field -> (type or None for a flag without value, choices, metavar, help); size fields show
# their default as a size.
_Kind = Callable[[str], Any] | None
_FLAGS: dict[str, tuple[_Kind, tuple[str, ...] | None, str | None, str]] = {
    "host": (str, None, "HOST", "address to listen on"),
    "port": (_port, None, "PORT", "port to listen on; 0 picks a free one (printed)"),
    "uds": (str, None, "PATH", "listen on this Unix domain socket instead (default: none)"),
    "fd": (
        _count_or_zero,
        None,
        "N",
        "serve on the inherited listening socket N, e.g. from systemd (default: none)",
    ),
    "ssl_certfile": (str, None, "FILE", "serve HTTPS with this certificate chain (PEM)"),
    "ssl_keyfile": (str, None, "FILE", "its private key (default: in --ssl-certfile)"),
    "ssl_keyfile_password": (str, None, "PASSWORD", "password of an encrypted key"),
    "ssl_ca_certs": (str, None, "FILE", "CA certificates for client certificates"),
    "ssl_cert_reqs": (
        _cert_reqs,
        None,
        "{0,1,2}",
        "client certificates: 0 none, 1 optional, 2 required",
    ),
    "ssl_ciphers": (str, None, "CIPHERS", "OpenSSL cipher list (default: Python's)"),
    "ssl_handshake_timeout": (
        _seconds,
        None,
        "SECONDS",
        "a TLS handshake must finish within this",
    ),
    "engine": (
        str,
        ("pipeparse", "h11"),
        None,
        "pipeparse: concurrent; h11: sequential (trio only)",
    ),
    "loop": (
        str,
        ("trio", "asyncio", "uvloop"),
        None,
        "event loop; asyncio and uvloop (pip install 'pipeparse[uvloop]') serve asyncio-only"
        " apps, with --engine pipeparse",
    ),
    "interface": (str, ("auto", "asgi", "native"), None, "app interface; auto prefers native"),
    "pipeline_policy": (
        str,
        ("safe", "all", "serial"),
        None,
        "which pipelined requests run concurrently (safe: only safe methods)",
    ),
    "max_in_flight": (_positive_int, None, "K", "requests framed but unanswered, per connection"),
    "workers": (_positive_int, None, "N", "worker processes serving one port"),
    "limit_concurrency": (
        _positive_int,
        None,
        "N",
        "most connections plus in-flight requests at once; beyond it 503 (default: no limit)",
    ),
    "limit_max_requests": (
        _positive_int,
        None,
        "N",
        "a process exits gracefully after N requests; workers are replaced (default: never)",
    ),
    "backlog": (_positive_int, None, "N", "listen queue of connections not yet accepted"),
    "log_level": (
        str,
        ("critical", "error", "warning", "info", "debug"),
        None,
        "level of the pipeparse.* loggers (stderr)",
    ),
    "access_log": (None, None, None, "log one line per response on pipeparse.access"),
    "buffer_size": (_positive_size, None, "SIZE", "receive buffer per connection"),
    "fixed_buffer": (None, None, None, argparse.SUPPRESS),  # testing: the whole buffer up front
    "max_head_size": (_positive_size, None, "SIZE", "request head limit (431)"),
    "max_headers": (_positive_int, None, "N", "header fields per head (431)"),
    "max_target_size": (_positive_size, None, "SIZE", "request-target limit (414)"),
    "max_body_size": (_positive_size, None, "SIZE", "decoded body limit (413)"),
    "max_chunk_line": (_positive_size, None, "SIZE", "chunk-size line limit (400)"),
    "max_empty_lines": (
        _positive_int,
        None,
        "N",
        "empty lines ignored before a request line (400 beyond)",
    ),
    "header_timeout": (_seconds, None, "SECONDS", "a head must arrive within this (408)"),
    "keep_alive_timeout": (_seconds, None, "SECONDS", "idle connections close after this"),
    "body_timeout": (_seconds, None, "SECONDS", "longest wait for more body bytes"),
    "request_timeout": (_seconds, None, "SECONDS", "a handler over this gets 503"),
    "shutdown_timeout": (
        _seconds_or_zero,
        None,
        "SECONDS",
        "on shutdown, open connections may finish within this",
    ),
    "recv_size": (_recv_size, None, "SIZE", "bytes per receive; 0: adaptive"),
    "flush": (str, ("adaptive", "each"), None, "when responses are written"),
    "server_name": (_server_name, None, "NAME", "value of the Server header"),
    "proxy_headers": (
        None,
        None,
        None,
        "believe X-Forwarded-For/-Proto and Forwarded from --forwarded-allow-ips peers",
    ),
    "forwarded_allow_ips": (
        str,
        None,
        "IPS",
        "comma list of proxy addresses or networks trusted with proxy headers; * for all",
    ),
    "root_path": (str, None, "PATH", "the app's mount point behind a proxy (scope root_path)"),
    "ws": (
        str,
        ("auto", "none"),
        None,
        "WebSockets for ASGI apps (wsproto); none: Upgrade requests are plain HTTP",
    ),
    "ws_max_size": (_positive_size, None, "SIZE", "largest WebSocket message (1009 beyond)"),
    "ws_ping_interval": (_seconds_or_zero, None, "SECONDS", "WebSocket ping interval; 0: none"),
    "ws_ping_timeout": (
        _seconds_or_zero,
        None,
        "SECONDS",
        "a WebSocket whose pong is later is dropped; 0: wait",
    ),
    "gc_threshold": (
        _count_or_zero,
        None,
        "N",
        "generation-0 threshold of Python's garbage collector; 0: Python's own",
    ),
}

_SIZE_FIELDS = frozenset(
    name for name, (kind, *_rest) in _FLAGS.items() if kind in (_positive_size, _recv_size)
)


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `pipeparse serve` (see the module docstring)."""
    parser.description = "Run the pipeparse HTTP/1.1 server until SIGINT or SIGTERM."
    parser.epilog = (
        "Sizes are bytes, or K/KiB and M/MiB (powers of 1024). The first stdout line is "
        "'pipeparse: listening on http://HOST:PORT (...)'. SIGINT or SIGTERM stops the server "
        "gracefully (open connections get --shutdown-timeout); a second signal aborts them."
    )
    parser.add_argument(
        "app",
        nargs="?",
        default="plaintext",
        metavar="APP",
        help="a built-in app (plaintext, echo) or module:attribute (default: plaintext)",
    )
    for field, (kind, choices, metavar, help_text) in _FLAGS.items():
        default = _default(field)
        if kind is None:
            parser.add_argument(_flag(field), action="store_true", default=default, help=help_text)
            continue
        if default is None:  # an optional limit: its help says what None means
            parser.add_argument(
                _flag(field), type=kind, default=None, metavar=metavar, help=help_text
            )
            continue
        shown = (
            _format_size(default)
            if field in _SIZE_FIELDS
            else default.decode()
            if isinstance(default, bytes)
            else default
        )
        parser.add_argument(
            _flag(field),
            type=kind,
            choices=choices,
            default=default,
            metavar=metavar,
            help=f"{help_text} (default: {shown})",
        )
    parser.set_defaults(_serve_parser=parser)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """The `ServerConfig` the parsed flags describe (raises `ValueError` if inconsistent)."""
    limits = Limits(**{f: getattr(args, f) for f in Limits.__dataclass_fields__})
    values = {f: getattr(args, f) for f in ServerConfig.__dataclass_fields__ if f != "limits"}
    return ServerConfig(limits=limits, **values)


def listening_line(url: str, engine: str, interface: str | None, workers: int) -> str:
    """The first stdout line: the benchmark parses ``http://HOST:PORT`` from it."""
    return (
        f"pipeparse: listening on {url} (engine {engine}, interface {interface}, workers {workers})"
    )


def run(args: argparse.Namespace) -> int:
    """Run `pipeparse serve` with parsed `args`; returns the exit status."""
    from . import listen
    from .apps import AppLoadError, load_app
    from .handlers import LifespanError, resolve_app

    parser: argparse.ArgumentParser = args._serve_parser
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    if config.loop != "trio":
        from .asyncio_server import new_event_loop

        try:
            new_event_loop(config.loop).close()  # uvloop missing: a clear error, now
        except RuntimeError as exc:
            parser.error(str(exc))
    app_dir = os.getcwd()
    try:
        listen.load_engine(config.engine)
        app = load_app(args.app, app_dir)
        resolve_app(app, config.interface)
    except (AppLoadError, ImportError, TypeError, ValueError) as exc:
        parser.error(f"cannot serve {args.app!r}: {exc}")
    listen.configure_logging(config.log_level, config.access_log)

    def on_listening(server: listen.Server) -> None:
        line = listening_line(server.url, config.engine, server.interface, config.workers)
        print(line, flush=True)

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # until trio's handler is in
    try:
        if config.workers > 1:  # a trio supervisor; each worker runs config.loop
            return listen.run_workers(args.app, config, on_listening=on_listening, app_dir=app_dir)
        if config.loop != "trio":
            from .asyncio_server import run_asyncio

            def on_asyncio_listening(server: Any) -> None:
                line = listening_line(server.url, config.engine, server.interface, 1)
                print(line, flush=True)

            return run_asyncio(app, config, config.loop, on_listening=on_asyncio_listening)
        return listen.run(app, config=config, on_listening=on_listening)
    except KeyboardInterrupt:  # a signal before or after the server's own handling
        return 0
    except (OSError, LifespanError) as exc:
        print(f"pipeparse serve: error: {exc}", file=sys.stderr, flush=True)
        return 1
