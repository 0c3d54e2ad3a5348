"""Serving on asyncio (or uvloop): listening, the ASGI lifespan, graceful shutdown.

Strategy: `start_asyncio_server` resolves the app (`handlers.resolve_app`), runs the ASGI
lifespan startup on the running loop (`_AsyncioLifespan`: the trio one in `handlers` needs a
trio nursery), and listens with ``loop.create_server`` (``create_unix_server`` on a Unix
socket; asyncio's TLS transport when ``ssl_certfile`` is set) on the socket `servers.sockets`
makes for the config (TCP, ``uds``, ``fd``), or on a worker's inherited one, with one
`asyncio_driver.HttpProtocol` per connection and one `admission.Admission` shared by them when
a load limit is set. The pure parts are the trio side's: `tls.server_context`, `proxy`,
`sockets`, `admission`, `logs`. It returns at once with an `AsyncioServer`: ``shutdown()``
stops accepting and tells every connection to finish what it has read (the `ServerConnection`
closes each when it is done), ``wait_closed()`` waits for that, for at most
``shutdown_timeout`` seconds before the rest are aborted, then runs the lifespan shutdown; the
Unix socket file it bound is removed as it stops accepting. `run_asyncio` is the blocking form
for ``pipeparse serve --loop asyncio|uvloop``, and what each worker process runs
(`servers.workers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable
from dataclasses import fields, replace
from typing import Any

from pipeparse import Limits

from . import tls
from .admission import Admission
from .asyncio_driver import HttpProtocol
from .config import ServerConfig
from .handlers import LifespanError, resolve_app
from .protocol import AsgiApp
from .proxy import TrustedProxies
from .running import gc_threshold
from .sockets import accept_queued, listening_socket, socket_address, unix_socket_owner

__all__ = ["AsyncioServer", "new_event_loop", "run_asyncio", "start_asyncio_server"]

log = logging.getLogger("pipeparse.server")
LOOPS = ("trio", "asyncio", "uvloop")


def new_event_loop(loop: str) -> asyncio.AbstractEventLoop:
    """A new event loop of the kind named (``asyncio`` or ``uvloop``)."""
    if loop == "asyncio":
        return asyncio.new_event_loop()
    if loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise RuntimeError(
                "--loop uvloop needs uvloop, which is not installed: "
                "pip install 'pipeparse[uvloop]' (or pip install uvloop)"
            ) from None
        new_loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return new_loop
    raise ValueError(f"loop must be 'asyncio' or 'uvloop' here, got {loop!r}")


class _AsyncioLifespan:
    """The ASGI lifespan protocol on asyncio. An app that does not support it (it raises, or
    returns, before answering the startup) is served without it, as the trio path does."""

    def __init__(self, app: AsgiApp, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state
        self.to_app: asyncio.Queue[Any] = asyncio.Queue()
        self.from_app: asyncio.Queue[Any] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.supported = True

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
        scope["state"] = self.state
        try:
            await self.app(scope, self.to_app.get, self.from_app.put)
        except Exception as exc:
            if self.supported:
                log.debug("ASGI lifespan not supported: %r", exc)
        finally:
            self.supported = False
            await self.from_app.put({"type": "lifespan.gone"})

    async def _ask(self, kind: str) -> None:
        if not self.supported:
            return
        await self.to_app.put({"type": f"lifespan.{kind}"})
        reply = await self.from_app.get()
        if reply["type"] == f"lifespan.{kind}.failed":
            raise LifespanError(f"ASGI lifespan {kind} failed: {reply.get('message', '')}")

    async def startup(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._main())
        await self._ask("startup")

    async def shutdown(self) -> None:
        try:
            await self._ask("shutdown")
        finally:
            if self.task is not None:
                self.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self.task


class AsyncioServer:
    """A server listening on the running asyncio loop (see the module comment).

    Attributes:
        host, port: the address it listens on (the real port when asked for port 0); on a
            Unix domain socket, its path and 0.
        uds: the Unix domain socket's path, or None.
        ssl_context: the TLS context connections are wrapped in, or None (plain HTTP).
        url: ``http://host:port``, ``https://...`` with TLS, ``unix:PATH`` on a Unix socket.
        interface: ``"asgi"`` or ``"native"``.
    """

    def __init__(
        self,
        server: asyncio.Server,
        config: ServerConfig,
        interface: str,
        connections: set[HttpProtocol],
        lifespan: _AsyncioLifespan | None,
        sock: socket.socket,
        adopt: Callable[[socket.socket], Awaitable[None]],
        ssl_context: ssl.SSLContext | None = None,
        owner: contextlib.ExitStack | None = None,
    ) -> None:
        self._server = server
        self._sock = sock
        self._adopt = adopt  # serves a connection accepted by hand (`shutdown`)
        self.config = config
        self.interface = interface
        self.ssl_context = ssl_context
        self._connections = connections
        self._lifespan = lifespan
        self._owner = owner  # removes the Unix socket file this server bound
        self._closing = False
        self._closed = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[None] | None = None
        self.host, self.port = socket_address(sock)
        self.uds: str | None = self.host if sock.family == socket.AF_UNIX else None

    @property
    def url(self) -> str:
        if self.uds is not None:
            return f"unix:{self.uds}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{host}:{self.port}"

    @property
    def closing(self) -> bool:
        return self._closing

    def shutdown(self) -> None:
        """Stop accepting; open connections answer what they read, within
        ``config.shutdown_timeout`` seconds (then they are aborted). The clients already
        waiting in the backlog are accepted and served too (closing would reset them)."""
        self._stop(take_queued=True)

    def retire(self) -> None:
        """Shut down gracefully, but leave the clients waiting in the backlog to the other
        processes that accept on the same socket (a worker at --limit-max-requests)."""
        self._stop(take_queued=False)

    def _stop(self, take_queued: bool) -> None:
        if self._closing:
            return
        self._closing = True
        queued = accept_queued(self._sock) if take_queued else []
        if queued:
            log.info("shutdown: serving %d connection(s) that were already waiting", len(queued))
        self._server.close()
        if self._owner is not None:
            self._owner.close()  # the socket file goes with the listener
        for proto in list(self._connections):
            proto.shutdown()
        self._task = asyncio.get_running_loop().create_task(self._finish(queued))

    async def _finish(self, queued: list[socket.socket]) -> None:
        try:
            await asyncio.gather(*[self._adopt(conn) for conn in queued])
            waiting = [p.closed for p in self._connections]
            if waiting:
                _, pending = await asyncio.wait(waiting, timeout=self.config.shutdown_timeout)
                if pending:
                    log.warning("%d connections still open after shutdown: aborted", len(pending))
                    for proto in list(self._connections):
                        proto.abort()
            await self._server.wait_closed()
            if self._lifespan is not None:
                await self._lifespan.shutdown()
        finally:
            if not self._closed.done():
                self._closed.set_result(None)

    async def wait_closed(self) -> None:
        """Wait until `shutdown` has finished (it must have been called, or is called later)."""
        await asyncio.shield(self._closed)


def _config(config: ServerConfig | None, overrides: dict[str, Any]) -> ServerConfig:
    config = config or ServerConfig()
    limit_names = {f.name for f in fields(Limits)}
    limits = {k: overrides.pop(k) for k in list(overrides) if k in limit_names}
    if limits:
        overrides["limits"] = replace(config.limits, **limits)
    return replace(config, **overrides) if overrides else config


async def start_asyncio_server(
    app: object,
    *,
    config: ServerConfig | None = None,
    sock: socket.socket | None = None,
    **overrides: Any,
) -> AsyncioServer:
    """Serve `app` on the running asyncio (or uvloop) loop; returns once it listens.

    It listens on `sock` when given (a worker's inherited socket), else on what the config
    names (``fd``, ``uds``, or ``host``/``port``; `servers.sockets`). With
    ``limit_max_requests`` it shuts itself down after that many requests.
    """
    from .apps import load_app

    config = _config(config, dict(overrides))
    if config.engine != "pipeparse":
        raise ValueError("the h11 engine runs on trio only; asyncio serves with engine 'pipeparse'")
    if config.workers != 1 and sock is None:
        raise ValueError(
            "start_asyncio_server serves in one process: use `pipeparse serve` for workers"
        )
    loop = asyncio.get_running_loop()
    target = load_app(app) if isinstance(app, str) else app
    ssl_context = tls.server_context(config)  # a bad certificate fails here, once
    owner = contextlib.ExitStack()  # what this server bound, undone when it stops
    if sock is None:
        sock = listening_socket(config)
        owner.enter_context(unix_socket_owner(sock))
    try:
        return await _listen(loop, target, config, sock, ssl_context, owner)
    except BaseException:
        owner.close()
        sock.close()
        raise


async def _listen(
    loop: asyncio.AbstractEventLoop,
    app: object,
    config: ServerConfig,
    sock: socket.socket,
    ssl_context: ssl.SSLContext | None,
    owner: contextlib.ExitStack,
) -> AsyncioServer:
    unix = sock.family == socket.AF_UNIX
    served = resolve_app(
        app,
        config.interface,
        server=None if unix else socket_address(sock),  # None on a Unix socket, as uvicorn
        scheme="https" if ssl_context is not None else "http",
        root_path=config.root_path,
        trusted=TrustedProxies.parse(config.forwarded_allow_ips) if config.proxy_headers else None,
    )
    lifespan = None
    asgi_app = served._asgi_app
    if asgi_app is not None:
        lifespan = _AsyncioLifespan(asgi_app, served._state)
        await lifespan.startup()
    connections: set[HttpProtocol] = set()
    box: list[AsyncioServer] = []

    def closing() -> bool:
        return bool(box) and box[0].closing

    def stop() -> None:  # --limit-max-requests reached
        if not box:
            return
        if config.workers > 1:  # a worker retires (its supervisor starts another) ...
            box[0].retire()
        else:  # ... a lone process stops
            box[0].shutdown()

    admission = None
    if config.limit_concurrency is not None or config.limit_max_requests is not None:
        admission = Admission(config.limit_concurrency, config.limit_max_requests, stop)

    def factory() -> HttpProtocol:
        return HttpProtocol(served.handler, config, connections, closing, admission)

    tls_options: dict[str, Any] = {}
    if ssl_context is not None:
        tls_options = {
            "ssl": ssl_context,
            "ssl_handshake_timeout": config.ssl_handshake_timeout,
            # close_notify is sent, then the connection closes within this, as on trio (the
            # default waits 30 s for a client that never answers it)
            "ssl_shutdown_timeout": tls.CLOSE_TIMEOUT,
        }

    async def adopt(conn: socket.socket) -> None:
        """Serve `conn`, taken from the backlog at a graceful stop: what its client sent by
        then is read first (the protocol reads nothing new once shut down, as on trio). Over
        TLS those bytes are the handshake's: the client is closed after it, unanswered."""
        conn.setblocking(False)
        first = b"" if ssl_context is not None else _read_waiting(conn, config.buffer_size)

        def adopted() -> HttpProtocol:
            return HttpProtocol(served.handler, config, connections, closing, admission, first)

        try:
            await loop.connect_accepted_socket(adopted, conn, **tls_options)
        except OSError as exc:  # a failed TLS handshake, say (timeouts and SSLError too)
            log.debug("a connection taken at shutdown failed: %s", exc)
            conn.close()

    if unix:
        tls_options = dict(tls_options)  # (not for `adopt`)
        if sys.version_info >= (3, 13) and isinstance(loop, asyncio.BaseEventLoop):
            # The file is its owner's to remove (`sockets.unix_socket_owner`): a worker's
            # server must not take the supervisor's socket file with it when it stops.
            tls_options["cleanup_socket"] = False
        server = await loop.create_unix_server(
            factory, sock=sock, backlog=config.backlog, **tls_options
        )
    else:
        server = await loop.create_server(factory, sock=sock, backlog=config.backlog, **tls_options)
    result = AsyncioServer(
        server, config, served.interface, connections, lifespan, sock, adopt, ssl_context, owner
    )
    box.append(result)
    return result


def _read_waiting(conn: socket.socket, most: int) -> bytes:
    """The bytes already received on non-blocking `conn` (up to `most`)."""
    parts: list[bytes] = []
    size = 0
    while size < most:
        try:
            data = conn.recv(most - size)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:  # reset: the client is gone
            break
        if not data:
            break
        parts.append(data)
        size += len(data)
    return b"".join(parts)


def run_asyncio(
    app: object,
    config: ServerConfig,
    loop_name: str,
    on_listening: Callable[[AsyncioServer], None] | None = None,
    *,
    sock: socket.socket | None = None,
    parent_fd: int | None = None,
    early_stop: Callable[[], bool] | None = None,
) -> int:
    """Serve until SIGINT or SIGTERM on a new loop of kind `loop_name` (blocking).

    A worker process (`servers.workers`) passes its inherited `sock`, the `parent_fd` whose EOF
    means the supervisor is gone (then it shuts down), and `early_stop`, true when a signal came
    while it was starting (then it shuts down once it serves).
    """
    loop = new_event_loop(loop_name)

    async def main() -> None:
        server = await start_asyncio_server(app, config=config, sock=sock)
        if on_listening is not None:
            on_listening(server)
        signals = 0

        def stop() -> None:
            nonlocal signals
            signals += 1
            if signals == 1:
                log.info("shutting down gracefully (again to abort)")
                server.shutdown()
            else:
                log.warning("signalled again: aborting the open connections")
                for proto in list(server._connections):
                    proto.abort()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        if early_stop is not None and early_stop():
            stop()
        if parent_fd is not None:
            loop.add_reader(parent_fd, _watch_parent, loop, parent_fd, server)
        try:
            await server.wait_closed()
        finally:
            if parent_fd is not None:
                loop.remove_reader(parent_fd)

    try:
        with gc_threshold(config.gc_threshold):
            loop.run_until_complete(main())
    finally:
        loop.close()
    return 0


def _watch_parent(loop: asyncio.AbstractEventLoop, fd: int, server: AsyncioServer) -> None:
    """The supervisor's pipe is readable: its EOF means the supervisor is gone."""
    try:
        data = os.read(fd, 64)
    except BlockingIOError:
        return
    except OSError:
        data = b""
    if data:
        return  # the parent never writes: only EOF matters
    loop.remove_reader(fd)
    if not server.closing:
        log.warning("the supervisor process is gone: shutting down")
        server.shutdown()
