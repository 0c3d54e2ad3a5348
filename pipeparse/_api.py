"""The server entry points: `serve` (inside a trio program) and `run` (blocking).

Strategy: thin wrappers that import `pipeparse.servers.listen` on first call, so ``import
pipeparse``
stays the sans-I/O core and loads no server code. Both take the app the same way: an ASGI 3
app, a native handler (``@native async def (request) -> Response``), or a string naming a
built-in app (``"plaintext"``, ``"echo"``) or ``"module:attr"``; it is resolved with
`pipeparse.servers.handlers.resolve_app` and its ASGI lifespan runs around the serving.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import socket

    import trio

    from pipeparse.servers.asyncio_server import AsyncioServer
    from pipeparse.servers.config import ServerConfig
    from pipeparse.servers.listen import Server

__all__ = ["run", "serve", "start_asyncio_server"]


async def serve(
    app: object,
    *,
    config: ServerConfig | None = None,
    sock: socket.socket | None = None,
    task_status: trio.TaskStatus[Server] | None = None,
    **overrides: Any,
) -> None:
    """Serve `app` over HTTP/1.1 until shut down (for `trio.Nursery.start`).

    ``server = await nursery.start(partial(pipeparse.serve, app, port=0))`` returns once it
    listens (`nursery.start` takes no keyword arguments: use `functools.partial`).

    Args:
        app: an ASGI 3 app, a native handler, or a built-in name / ``"module:attr"`` string.
        config: a `pipeparse.servers.config.ServerConfig` (default: its defaults).
        sock: serve on this bound, listening socket instead of binding ``host:port``.
        **overrides: fields of `ServerConfig` or of `pipeparse.Limits` to replace, such as
            ``port=0`` (any free port), ``engine="h11"`` or ``max_body_size=1 << 20``.

    Once it listens (and the app's lifespan startup is done), it reports a
    `pipeparse.servers.listen.Server` through `task_status`: ``server.host``, ``server.port`` (the
    real
    port for ``port=0``), ``server.url``, ``server.shutdown()`` to stop gracefully and
    ``server.abort()`` to cancel every connection now. Cancelling the call also shuts down
    gracefully: it stops accepting and gives open connections ``shutdown_timeout`` seconds.
    One process only: ``workers > 1`` needs `run`.
    """
    import trio

    from pipeparse.servers.listen import serve as _serve

    await _serve(
        app,
        config=config,
        sock=sock,
        task_status=trio.TASK_STATUS_IGNORED if task_status is None else task_status,
        **overrides,
    )


def run(app: object, *, config: ServerConfig | None = None, **overrides: Any) -> None:
    """Serve `app` until SIGINT or SIGTERM (blocking, in `trio.run`).

    The first signal shuts down gracefully, a second one cancels the open connections. Once it
    listens it prints the same line as ``pipeparse serve``: ``pipeparse: listening on
    http://HOST:PORT (engine E, interface I, workers N)`` (the real port for ``port=0``).
    Takes the arguments of `serve`; with ``workers=N`` (N > 1) `app` must be a string, and N
    processes share the port.

    Raises:
        OSError: the address cannot be bound.
        RuntimeError: a worker process could not start its app.
    """
    from pipeparse.servers.listen import run as _run

    if _run(app, config=config, **overrides) != 0:
        raise RuntimeError("a worker process could not start its app (see the log)")


async def start_asyncio_server(
    app: object,
    *,
    config: ServerConfig | None = None,
    sock: socket.socket | None = None,
    **overrides: Any,
) -> AsyncioServer:
    """Serve `app` on the running asyncio (or uvloop) loop; returns at once, listening.

    ``server = await pipeparse.start_asyncio_server(app, host="127.0.0.1", port=0)``; then
    ``server.port`` and ``server.url``; ``server.shutdown()`` starts a graceful shutdown (stop
    accepting, answer what was read, at most ``shutdown_timeout`` seconds) and ``await
    server.wait_closed()`` waits for it. Takes the arguments of `serve` (one process: no
    ``workers``; the pipeparse engine only). An ASGI app's lifespan startup runs before it
    returns, and its shutdown at the end of `wait_closed`.
    """
    from pipeparse.servers.asyncio_server import start_asyncio_server as _start

    return await _start(app, config=config, sock=sock, **overrides)
