"""Listeners, the connection nursery, and graceful shutdown: `serve`, the entry of a server.

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

Engines watch the shutdown through `current_shutdown()` (`pipeparse.servers.shutdown`).

Limits on load (`--limit-concurrency`, `--limit-max-requests`): `serve_listeners` makes the
server's `pipeparse.servers.admission.Admission` current for its connection tasks and counts
connections in it; engines ask it before each request (see that module).

Where the rest lives (its public names are re-exported here): the shutdown signal in
`pipeparse.servers.shutdown`, the access log and the command line's logging in
`pipeparse.servers.logs`, `make_config` in `pipeparse.servers.config`, `bind_socket` and
`socket_address` in `pipeparse.servers.sockets`, and `run` (signals, GC) in
`pipeparse.servers.running`. Workers (``workers > 1``, `run_workers`) are
`pipeparse.servers.workers`'s.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

import trio

from . import tls
from .admission import Admission, current_admission, using_admission
from .config import ServerConfig, make_config
from .logs import ACCESS_LOGGER, configure_logging, log_access, single_exception
from .protocol import Handler
from .proxy import TrustedProxies
from .running import gc_threshold, run, run_workers
from .shutdown import ShutdownSignal, current_shutdown, using_shutdown
from .sockets import (
    accept_queued,
    bind_socket,
    host_port,
    listening_socket,
    socket_address,
    unix_path,
    unix_socket_owner,
)

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


def load_engine(name: str) -> ServeConnection:
    """The ``serve_connection`` of the engine `name` (``pipeparse`` or ``h11``)."""
    if name not in ("pipeparse", "h11"):
        raise ValueError(f"engine must be 'pipeparse' or 'h11', got {name!r}")
    module = importlib.import_module(f"pipeparse.servers.engine_{name}")
    serve_connection: ServeConnection = module.serve_connection
    return serve_connection


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
        return f"{scheme}://{host_port(self.host, self.port)}"

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
    undo_shutdown = using_shutdown(server.shutdown_signal)
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
        undo_shutdown()
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
            host_port(*client) if client else "an unknown peer",
            exc_info=single_exception(group),
        )
    finally:
        if admission is not None:
            admission.connection_closed()
        await tls.close_stream(stream)


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
    uds = unix_path(sock)
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
