"""Listeners, the connection nursery, graceful shutdown, and running under signals.

Strategy
--------
One server is one listening socket (SO_REUSEADDR; SO_REUSEPORT too when it is shared by worker
processes) and two nurseries. The accept loops run in an outer nursery that the caller's
cancellation reaches; the connections run in an inner nursery whose scope is shielded, so
stopping never cuts a request short by accident. Every connection runs
``engine.serve_connection(stream, handler, config, client)`` under ``try/finally`` that closes
the stream; an exception from one connection is logged and stays there. An accept error
(EMFILE, ENFILE, ENOBUFS, ENOMEM, or any other OSError) is logged and retried after a pause that
doubles from 0.1 s up to 1 s, so running out of file descriptors slows the server down instead
of killing it.

Graceful shutdown, in three steps, whatever starts it (`Server.shutdown`, SIGINT/SIGTERM under
`run`, or the caller cancelling `serve`): the accept loops stop, the connections already
waiting in the backlog are accepted without waiting (closing would reset them), and the
listener closes; the server's `ShutdownSignal` is set; the connections get
``config.shutdown_timeout`` seconds to finish, then whatever is left is cancelled.
`Server.abort` (a second signal) cancels at once.

Engines watch the shutdown through `current_shutdown()`, which returns the `ShutdownSignal` of
the server running the calling task (a context variable that the connection tasks inherit), so
the ``serve_connection`` signature stays as it is. The intended use: once it is set, answer the
requests already read with ``Connection: close``, read no new ones, and close an idle keep-alive
connection at once (race its receive against ``await signal.wait()``). Until an engine does
this, an idle keep-alive connection holds the shutdown up to ``shutdown_timeout``.

Limits on load (`--limit-concurrency`, `--limit-max-requests`): `serve_listeners` makes the
server's `pipeparse.servers.admission.Admission` current for its connection tasks and counts
connections
in it; engines ask it before each request (see that module).

Access log and the command line's logging: `pipeparse.servers.logs` (re-exported here).

Workers (``workers > 1``, `run_workers`) are `pipeparse.servers.workers`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import gc
import importlib
import logging
import math
import signal
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any, Protocol

import trio

from pipeparse import Limits

from . import tls
from .admission import Admission, current_admission, using_admission
from .config import ServerConfig
from .logs import ACCESS_LOGGER, configure_logging, log_access
from .protocol import Handler
from .proxy import TrustedProxies
from .sockets import accept_queued, listening_socket, unix_socket_owner

__all__ = [
    "ACCESS_LOGGER",
    "ServeConnection",
    "Server",
    "ShutdownSignal",
    "bind_socket",
    "configure_logging",
    "current_shutdown",
    "gc_threshold",
    "load_engine",
    "log_access",
    "make_config",
    "run",
    "run_workers",
    "serve",
    "serve_listeners",
    "socket_address",
]

log = logging.getLogger("pipeparse.server")

BACKLOG = 2048  # listen() backlog by default (`ServerConfig.backlog`; capped by somaxconn)
ACCEPT_BACKOFF_MIN = 0.1  # seconds: first pause after an accept error ...
ACCEPT_BACKOFF_MAX = 1.0  # ... doubling up to this

_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class ServeConnection(Protocol):
    """An engine's entry point (``pipeparse.servers.engine_<name>.serve_connection``)."""

    def __call__(
        self,
        stream: trio.abc.Stream,
        handler: Handler,
        config: ServerConfig,
        client: tuple[str, int] | None = None,
    ) -> Awaitable[None]: ...


# --- shutdown signal ------------------------------------------------------------------------


class ShutdownSignal:
    """Set once, when its server begins a graceful shutdown.

    Attributes:
        deadline: the `trio.current_time()` at which the remaining connections are cancelled
            (``inf`` until the signal is set).
    """

    __slots__ = ("_callbacks", "_event", "deadline")

    def __init__(self) -> None:
        self._event = trio.Event()
        self._callbacks: dict[Callable[[], None], None] = {}  # (ordered; a connection's)
        self.deadline = math.inf

    def add_callback(self, callback: Callable[[], None]) -> None:
        """Call `callback` when the signal is set (a connection's, instead of a task that
        waits for it); remove it with `discard_callback`."""
        self._callbacks[callback] = None

    def discard_callback(self, callback: Callable[[], None]) -> None:
        self._callbacks.pop(callback, None)

    def is_set(self) -> bool:
        """True once the server stopped accepting and is draining its connections."""
        return self._event.is_set()

    async def wait(self) -> None:
        """Return once the signal is set."""
        await self._event.wait()

    def set(self, deadline: float) -> None:
        if not self._event.is_set():
            self.deadline = deadline
            self._event.set()
            for callback in list(self._callbacks):
                callback()


_current_shutdown: ContextVar[ShutdownSignal | None] = ContextVar(
    "pipeparse_shutdown", default=None
)


def current_shutdown() -> ShutdownSignal:
    """The `ShutdownSignal` of the server running this task (a never-set one outside servers)."""
    signal_ = _current_shutdown.get()
    return signal_ if signal_ is not None else ShutdownSignal()


# --- configuration --------------------------------------------------------------------------

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


def _config_to_json(config: ServerConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, Limits):
            value = {"limits": dataclasses.asdict(value)}
        elif isinstance(value, bytes):
            value = {"bytes": value.decode("latin-1")}
        out[f.name] = value
    return out


def _config_from_json(data: dict[str, Any]) -> ServerConfig:
    values: dict[str, Any] = {}
    for name, value in data.items():
        if isinstance(value, dict) and "limits" in value:
            value = Limits(**value["limits"])
        elif isinstance(value, dict) and "bytes" in value:
            value = value["bytes"].encode("latin-1")
        values[name] = value
    return ServerConfig(**values)


def load_engine(name: str) -> ServeConnection:
    """The ``serve_connection`` of the engine `name` (``pipeparse`` or ``h11``)."""
    if name not in ("pipeparse", "h11"):
        raise ValueError(f"engine must be 'pipeparse' or 'h11', got {name!r}")
    module = importlib.import_module(f"pipeparse.servers.engine_{name}")
    serve_connection: ServeConnection = module.serve_connection
    return serve_connection


# --- sockets --------------------------------------------------------------------------------


def bind_socket(
    host: str, port: int, *, reuse_port: bool = False, backlog: int = BACKLOG
) -> socket.socket:
    """A listening TCP socket on the first address `host` resolves to.

    SO_REUSEADDR is always set (a restart does not wait for TIME_WAIT); SO_REUSEPORT when
    `reuse_port` (worker processes; it also lets a new server take over the port while an old
    one drains). Raises `OSError` (for example EADDRINUSE) with the address in its message.
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, type_, proto, _, address = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            if not hasattr(socket, "SO_REUSEPORT"):
                raise OSError(errno.ENOPROTOOPT, "SO_REUSEPORT is not available here")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            where = _host_port(host, port)
            raise OSError(exc.errno, f"cannot listen on {where}: {exc.strerror}") from exc
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def socket_address(sock: socket.socket) -> tuple[str, int]:
    """``(host, port)`` a listening socket is bound to; ``(path, 0)`` for a Unix socket (the
    ASGI ``scope["server"]`` of one, as uvicorn gives)."""
    name = sock.getsockname()
    if isinstance(name, tuple):
        return (str(name[0]), int(name[1]))
    return (name.decode("latin-1") if isinstance(name, bytes) else str(name), 0)


def _unix_path(sock: socket.socket) -> str | None:
    return socket_address(sock)[0] if sock.family == socket.AF_UNIX else None


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _peer(stream: trio.abc.Stream) -> tuple[str, int] | None:
    if isinstance(stream, trio.SocketStream):
        try:
            peer = stream.socket.getpeername()
        except OSError:  # the client is already gone
            return None
        if isinstance(peer, tuple):
            return (str(peer[0]), int(peer[1]))
    return None


# --- the server -----------------------------------------------------------------------------


class Server:
    """A running server: what `serve` reports through ``task_status``.

    Attributes:
        host, port: the address it listens on (the real port when asked for port 0); on a
            Unix domain socket, its path and 0.
        uds: the Unix domain socket's path, or None.
        ssl_context: the TLS context connections are wrapped in, or None (plain HTTP).
        interface: how the app is served, ``"asgi"`` or ``"native"``.
        config: its `ServerConfig`.
        shutdown_signal: set when the graceful shutdown begins (see `current_shutdown`).
    """

    def __init__(
        self,
        host: str,
        port: int,
        config: ServerConfig,
        interface: str | None = None,
        uds: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.uds = uds
        self.ssl_context = ssl_context
        self.host = host
        self.port = port
        self.config = config
        self.interface = interface
        self.shutdown_signal = ShutdownSignal()
        self._accepting = trio.CancelScope()
        self._connections: trio.CancelScope | None = None
        self._aborted = False
        self._leave_queued = False  # a retiring worker leaves the backlog to its siblings

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def url(self) -> str:
        """``http://HOST:PORT``, or ``unix:PATH`` on a Unix domain socket."""
        if self.uds is not None:
            return f"unix:{self.uds}"
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{_host_port(self.host, self.port)}"

    @property
    def closing(self) -> bool:
        """True once `shutdown` (or `abort`) was called, or the caller cancelled."""
        return self._accepting.cancel_called or self.shutdown_signal.is_set()

    def shutdown(self) -> None:
        """Stop accepting; connections get ``config.shutdown_timeout`` seconds to finish."""
        self._accepting.cancel()

    def retire(self) -> None:
        """Shut down gracefully, but leave the connections still waiting in the backlog to the
        other processes that accept on the same socket (a worker replaced by its supervisor)."""
        self._leave_queued = True
        self.shutdown()

    def abort(self) -> None:
        """Stop accepting and cancel every connection now."""
        self._accepting.cancel()
        self._aborted = True
        if self._connections is not None:
            self._connections.cancel()

    def __repr__(self) -> str:
        return f"<pipeparse Server {self.url} engine={self.config.engine}>"


async def serve_listeners(
    handler: Handler,
    listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
    serve_connection: ServeConnection,
    config: ServerConfig,
    *,
    server: Server | None = None,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept on `listeners` and serve each connection with `serve_connection` and `handler`.

    The lower layer of `serve`: no app resolution, no binding; any `trio.abc.Listener` will do.
    Reports `server` (a new `Server` for the first listener's address if not given) through
    `task_status` once accepting, and returns after the graceful shutdown (see the module
    docstring). The listeners are closed on return.
    """
    if server is None:
        host, port = _listener_address(listeners)
        server = Server(host, port, config)
    token = _current_shutdown.set(server.shutdown_signal)
    admission = None
    if config.limit_concurrency is not None or config.limit_max_requests is not None:
        # A worker retires (its supervisor starts another); a lone process shuts down.
        on_limit = server.retire if config.workers > 1 else server.shutdown
        admission = Admission(config.limit_concurrency, config.limit_max_requests, on_limit)
    undo_admission = using_admission(admission)
    try:
        async with trio.open_nursery() as outer:
            with trio.CancelScope(shield=True):
                async with trio.open_nursery() as connections:
                    server._connections = connections.cancel_scope
                    if server._aborted:
                        connections.cancel_scope.cancel()
                    stopped = trio.Event()
                    outer.start_soon(
                        _accept_all,
                        server,
                        listeners,
                        connections,
                        handler,
                        serve_connection,
                        stopped,
                    )
                    task_status.started(server)
                    await stopped.wait()
                    deadline = trio.current_time() + config.shutdown_timeout
                    server.shutdown_signal.set(deadline)
                    connections.cancel_scope.deadline = deadline
                    log.info(
                        "shutting down: no longer accepting; connections have %gs to finish",
                        config.shutdown_timeout,
                    )
                if connections.cancel_scope.cancelled_caught:
                    log.warning("shutdown: cancelled the connections still open")
    finally:
        undo_admission()
        _current_shutdown.reset(token)
        for listener in listeners:
            await trio.aclose_forcefully(listener)


def _listener_address(listeners: Sequence[trio.abc.Listener[Any]]) -> tuple[str, int]:
    for listener in listeners:
        if isinstance(listener, trio.SocketListener):
            name = listener.socket.getsockname()
            if isinstance(name, tuple):
                return (str(name[0]), int(name[1]))
    return ("", 0)


async def _accept_all(
    server: Server,
    listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
    connections: trio.Nursery,
    handler: Handler,
    serve_connection: ServeConnection,
    stopped: trio.Event,
) -> None:
    try:
        with server._accepting:
            async with trio.open_nursery() as nursery:
                for listener in listeners:
                    nursery.start_soon(
                        _accept_loop, listener, connections, handler, serve_connection, server
                    )
    finally:
        if not (server._aborted or server._leave_queued):  # serve the clients waiting too
            config = server.config
            for stream in _take_queued(listeners):
                connections.start_soon(
                    _connection, stream, handler, serve_connection, config, server.ssl_context
                )
        stopped.set()
        for listener in listeners:
            await trio.aclose_forcefully(listener)  # cancel-safe: closes even when cancelled


def _take_queued(
    listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
) -> list[trio.SocketStream]:
    """The connections already waiting in the listening sockets' backlogs, accepted without
    waiting: closing the listener would reset them (a stop while workers start, say)."""
    streams = []
    for listener in listeners:
        if isinstance(listener, trio.SocketListener):
            # (plain accepts: this runs as the accept loops are cancelled, where a trio
            # accept would raise Cancelled instead)
            for conn in accept_queued(listener.socket):
                streams.append(trio.SocketStream(trio.socket.from_stdlib_socket(conn)))
    if streams:
        log.info("shutdown: serving %d connection(s) that were already waiting", len(streams))
    return streams


async def _accept_loop(
    listener: trio.abc.Listener[trio.abc.Stream],
    connections: trio.Nursery,
    handler: Handler,
    serve_connection: ServeConnection,
    server: Server,
) -> None:
    backoff = ACCEPT_BACKOFF_MIN
    config = server.config
    while True:
        try:
            stream = await listener.accept()
        except OSError as exc:
            kind = "out of resources" if exc.errno in _CAPACITY_ERRNOS else "failed"
            log.error("accept %s (%s): retrying in %gs", kind, exc, backoff)
            await trio.sleep(backoff)
            backoff = min(backoff * 2, ACCEPT_BACKOFF_MAX)
            continue
        except trio.ClosedResourceError:
            return
        backoff = ACCEPT_BACKOFF_MIN
        connections.start_soon(
            _connection, stream, handler, serve_connection, config, server.ssl_context
        )


async def _connection(
    stream: trio.abc.Stream,
    handler: Handler,
    serve_connection: ServeConnection,
    config: ServerConfig,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    client = _peer(stream)
    admission = current_admission()
    if admission is not None:
        admission.connection_opened()
    try:
        if ssl_context is not None:  # the handshake runs here, in this connection's task
            stream = tls.wrap(stream, ssl_context)
            if not await tls.handshake(stream, config.ssl_handshake_timeout, client):
                return
        await serve_connection(stream, handler, config, client)
    except* Exception as group:
        log.error(
            "connection from %s failed",
            _host_port(*client) if client else "an unknown peer",
            exc_info=_single(group),
        )
    finally:
        if admission is not None:
            admission.connection_closed()
        await tls.close_stream(stream)


def _single(group: BaseExceptionGroup[Any]) -> BaseException:
    """The one exception of `group` when it holds one (for readable logs), else the group."""
    leaves = list(_leaves(group))
    return leaves[0] if len(leaves) == 1 else group


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


async def serve(
    app: object,
    *,
    config: ServerConfig | None = None,
    sock: socket.socket | None = None,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
    **overrides: Any,
) -> None:
    """Serve `app` until shut down (see `pipeparse.serve`, which documents this)."""
    from .apps import load_app

    config = make_config(config, **overrides)
    if config.workers != 1 and sock is None:
        raise ValueError("serve() runs in one process: use run() or `pipeparse serve` for workers")
    if isinstance(app, str):
        app = load_app(app)
    serve_connection = load_engine(config.engine)
    owner: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if sock is None:
        sock = listening_socket(config)
        owner = unix_socket_owner(sock)  # removes the socket file it bound, at the end
    with owner:
        await _serve_on(app, config, sock, serve_connection, task_status)


async def _serve_on(
    app: object,
    config: ServerConfig,
    sock: socket.socket,
    serve_connection: ServeConnection,
    task_status: trio.TaskStatus[Server],
) -> None:
    from .handlers import resolve_app

    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    uds = _unix_path(sock)
    try:
        ssl_context = tls.server_context(config)
        host, port = socket_address(sock)
        served = resolve_app(
            app,
            config.interface,
            server=(host, port) if uds is None else None,  # None on a Unix socket, as uvicorn
            scheme="https" if ssl_context is not None else "http",
            root_path=config.root_path,
            trusted=TrustedProxies.parse(config.forwarded_allow_ips)
            if config.proxy_headers
            else None,
        )
    except BaseException:
        await trio.aclose_forcefully(listener)
        raise
    server = Server(host, port, config, served.interface, uds=uds, ssl_context=ssl_context)
    try:
        async with served.lifespan(config.shutdown_timeout):
            await serve_listeners(
                served.handler,
                [listener],
                serve_connection,
                config,
                server=server,
                task_status=task_status,
            )
    finally:
        await trio.aclose_forcefully(listener)


# --- running: signals, one process ----------------------------------------------------------

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run(
    app: object,
    *,
    config: ServerConfig | None = None,
    on_listening: Callable[[Server], None] | None = None,
    app_dir: str | None = None,
    **overrides: Any,
) -> int:
    """Serve `app` until SIGINT/SIGTERM (blocking); returns the exit status, 0 when stopped.

    The first signal shuts down gracefully, a second one aborts. `on_listening` is called with
    the `Server` once it listens (default: print the command line's listening line). With
    ``workers > 1``, `app` must be a spec string (built-in name or ``module:attr``): see
    `run_workers`.
    """
    config = make_config(config, **overrides)
    if config.workers > 1:
        if not isinstance(app, str):
            raise TypeError(
                "with workers > 1 the app must be given as a string (a built-in name or "
                "'module:attr'): each worker process imports it"
            )
        return run_workers(app, config, on_listening=on_listening, app_dir=app_dir)
    if on_listening is None:
        on_listening = _print_listening
    with gc_threshold(config.gc_threshold):
        _unwrap_run(_run_until_signalled, app, config, None, on_listening, None)
    return 0


@contextlib.contextmanager
def gc_threshold(threshold: int) -> Iterator[None]:
    """Python's generation-0 GC threshold set to `threshold` (0: unchanged) for the block.

    Only where the server owns the process (`run`, workers): `serve` runs inside someone
    else's program and leaves its collector alone. See `ServerConfig.gc_threshold`.
    """
    before = gc.get_threshold()
    if threshold:
        gc.set_threshold(threshold, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def _print_listening(server: Server) -> None:
    """The default `on_listening`: the command line's listening line on stdout, so a caller of
    `run` learns the address (the real port for ``port=0``)."""
    from .cli import listening_line

    config = server.config
    print(listening_line(server.url, config.engine, server.interface, config.workers), flush=True)


def _unwrap_run(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """`trio.run`, re-raising the single exception of a one-exception group as itself."""
    try:
        return trio.run(fn, *args)
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        if len(leaves) == 1:
            raise leaves[0] from None
        raise


async def _run_until_signalled(
    app: object,
    config: ServerConfig,
    sock: socket.socket | None,
    on_listening: Callable[[Server], None] | None,
    parent_fd: int | None,
    early_stop: _EarlyStop | None = None,
) -> None:
    with trio.open_signal_receiver(*_SIGNALS) as signals:
        async with trio.open_nursery() as nursery:
            server: Server = await nursery.start(_serve_then_stop, nursery, app, config, sock)
            if on_listening is not None:
                on_listening(server)
            if early_stop is not None and early_stop.requested:  # signalled while starting
                log.info("stopped while starting: shutting down gracefully (again to abort)")
                server.shutdown()
            nursery.start_soon(_stop_on_signals, server, signals)
            if parent_fd is not None:
                nursery.start_soon(_stop_when_parent_exits, server, parent_fd)


async def _serve_then_stop(
    nursery: trio.Nursery,
    app: object,
    config: ServerConfig,
    sock: socket.socket | None,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    await serve(app, config=config, sock=sock, task_status=task_status)
    nursery.cancel_scope.cancel()


async def _stop_on_signals(server: Server, signals: Any) -> None:
    async for signum in signals:
        name = signal.Signals(signum).name
        if not server.closing:
            log.info("%s: shutting down gracefully (again to abort)", name)
            server.shutdown()
        else:
            log.warning("%s again: aborting the open connections", name)
            server.abort()


async def _stop_when_parent_exits(server: Server, fd: int) -> None:
    async with trio.lowlevel.FdStream(fd) as stream:
        while await stream.receive_some(64):
            pass  # the parent never writes: only EOF matters
    if not server.closing:
        log.warning("the supervisor process is gone: shutting down")
        server.shutdown()


class _EarlyStop:
    """A worker's SIGINT/SIGTERM handler outside trio's: the first signal is noted (the worker
    starts anyway, then shuts down gracefully, serving the connections already queued), a
    second one interrupts (KeyboardInterrupt: the worker exits at once)."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


def run_workers(
    app: str,
    config: ServerConfig,
    *,
    on_listening: Callable[[Server], None] | None = None,
    app_dir: str | None = None,
) -> int:
    """Serve `app` from ``config.workers`` processes (blocking): see `pipeparse.servers.workers`."""
    from .workers import run_workers as _run_workers

    return _run_workers(app, config, on_listening=on_listening, app_dir=app_dir)
