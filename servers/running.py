"""Running a server as a program: `run` serves until SIGINT/SIGTERM, with the GC tuned.

Strategy: `run` owns the process, so it sets the collector's threshold (`gc_threshold`), runs
trio, and turns the first SIGINT/SIGTERM into a graceful shutdown and a second one into an
abort. With ``workers > 1`` it hands over to `pipeparse.servers.workers`, whose worker
processes run `_run_until_signalled` too (with `_EarlyStop` catching a signal that comes while
they start, and a pipe from the supervisor whose EOF stops them). The serving itself is
`pipeparse.servers.listen.serve`.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import trio

from .config import ServerConfig, make_config
from .logs import single_exception

if TYPE_CHECKING:
    from .listen import Server

__all__ = ["gc_threshold", "run", "run_workers"]

log = logging.getLogger("pipeparse.server")

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
        single = single_exception(group)
        if single is not group:
            raise single from None
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
    from .listen import serve  # (listen re-exports this module's names)

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
