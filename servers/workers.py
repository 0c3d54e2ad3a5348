"""Worker processes: N processes serving one listening socket, and their supervisor.

Strategy
--------
With ``workers > 1`` (`run_workers`) the parent binds and listens once, then starts N children
(``python -c``, so nothing of the parent's trio run is forked) that inherit the listening socket
(``pass_fds``) and accept on it; connections that arrive while a worker restarts wait in the
shared backlog. Each child is in a session of its own, so a terminal's Ctrl-C reaches only the
parent, which forwards SIGINT and SIGTERM to every child as SIGTERM (the children treat both
alike); a second signal is forwarded too, and the children abort. A child reports to the parent
through a status pipe: ``s`` once its signal handler is installed (the parent holds signals back
until then, since the default action would kill it) and ``r`` once it serves; the parent prints
the listening line when every worker has served. A child signalled while it starts finishes
starting, then shuts down gracefully, so the clients already waiting in the backlog are served,
not reset. A child also holds the read end of a pipe from the parent: if the parent dies, the
pipe's EOF shuts the child down gracefully. The parent restarts a worker that exits while no
shutdown was asked for (after a doubling pause when it lived less than a second), gives up when
one fails to start (exit code 3: the app cannot be loaded, or its lifespan startup failed), and
returns 0 once every child has exited after a signal. The supervisor runs on trio whatever the
loop; a worker serves on ``config.loop`` (`asyncio_server.run_asyncio` on asyncio and uvloop).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

import trio

from . import tls
from .config import ServerConfig, config_from_json, config_to_json
from .listen import Server, load_engine
from .logs import configure_logging
from .running import (
    _SIGNALS,
    _EarlyStop,
    _print_listening,
    _run_until_signalled,
    _unwrap_run,
    gc_threshold,
)
from .sockets import listening_socket, socket_address, unix_socket_owner

__all__ = ["EXIT_STARTUP_FAILED", "run_workers"]

log = logging.getLogger("pipeparse.server")

EXIT_STARTUP_FAILED = 3  # a worker's exit code when its app cannot start (no restart)
RESTART_QUICK = 1.0  # seconds: a worker that exits sooner than this is restarted after ...
RESTART_DELAY_MIN = 0.5  # ... a pause that starts here ...
RESTART_DELAY_MAX = 8.0  # ... and doubles up to this

_CHILD_CODE = (
    "import json, sys\n"
    "p = json.loads(sys.argv[1])\n"
    "sys.path[:0] = [e for e in p['path'] if e not in sys.path]\n"
    "from pipeparse.servers.workers import _worker_main\n"
    "sys.exit(_worker_main(p))\n"
)


def run_workers(
    app: str,
    config: ServerConfig,
    *,
    on_listening: Callable[[Server], None] | None = None,
    app_dir: str | None = None,
) -> int:
    """Serve `app` from ``config.workers`` processes sharing one listening socket (blocking).

    The parent binds (raising `OSError` if it cannot), reports the address through
    `on_listening` (a `Server` that only carries the address), starts and supervises the
    workers, and returns 0 once they exited after SIGINT/SIGTERM, 1 when a worker could not
    start. See the module docstring.
    """
    sock = listening_socket(config, reuse_port=True)
    try:
        with unix_socket_owner(sock):  # the supervisor bound it: it removes the file
            host, port = socket_address(sock)
            uds = host if sock.family == socket.AF_UNIX else None
            interface = _interface_of(app, config, app_dir)
            context = tls.server_context(config)  # a bad certificate fails here, once
            server = Server(host, port, config, interface, uds=uds, ssl_context=context)
            return int(_unwrap_run(_supervise, sock, app, config, server, on_listening, app_dir))
    finally:
        sock.close()


def _interface_of(app: str, config: ServerConfig, app_dir: str | None) -> str:
    """How the workers will serve `app`; loading it here also fails fast on a bad spec."""
    from .apps import load_app
    from .handlers import resolve_app

    return resolve_app(load_app(app, app_dir), config.interface).interface


async def _supervise(
    sock: socket.socket,
    app: str,
    config: ServerConfig,
    server: Server,
    on_listening: Callable[[Server], None] | None,
    app_dir: str | None,
) -> int:
    supervisor = _Supervisor(sock, app, config, app_dir, server, on_listening or _print_listening)
    with trio.open_signal_receiver(*_SIGNALS) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(supervisor.forward_signals, signals)
            async with trio.open_nursery() as workers:
                for index in range(1, config.workers + 1):
                    workers.start_soon(supervisor.keep_worker, index)
            nursery.cancel_scope.cancel()
    return 1 if supervisor.failed else 0


class _Worker:
    """A worker process, and what it told the parent through its status pipe."""

    __slots__ = ("held_signals", "proc", "takes_signals")

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.takes_signals = False  # its stop handler is installed (status b"s")
        self.held_signals = 0  # SIGTERMs to send once it does

    def signal(self) -> None:
        """SIGTERM now, or as soon as it can take it: before its handler is installed, the
        default action would kill it, and the connections queued for it would be reset."""
        if self.takes_signals:
            _send_signal(self.proc, signal.SIGTERM)
        else:
            self.held_signals += 1

    def now_takes_signals(self) -> None:
        self.takes_signals = True
        for _ in range(self.held_signals):
            _send_signal(self.proc, signal.SIGTERM)
        self.held_signals = 0


class _Supervisor:
    def __init__(
        self,
        sock: socket.socket,
        app: str,
        config: ServerConfig,
        app_dir: str | None,
        server: Server,
        on_listening: Callable[[Server], None],
    ) -> None:
        self.sock = sock
        self.app = app
        self.config = config
        self.app_dir = app_dir
        self.server = server
        self.on_listening = on_listening
        self.procs: dict[int, _Worker] = {}
        self.ready: set[int] = set()  # workers that have served (reported status b"r")
        self.stopping = trio.Event()
        self.failed = False

    def stop(self) -> None:
        """Send every worker SIGTERM: the first one drains it, a second one aborts it."""
        self.stopping.set()
        for worker in list(self.procs.values()):
            worker.signal()

    def _worker_ready(self, index: int) -> None:
        """Announce the address once every worker serves (not before: a client would wait in
        the backlog, and a signal then would have nobody to serve it)."""
        announced = len(self.ready) == self.config.workers
        self.ready.add(index)
        if not announced and len(self.ready) == self.config.workers and not self.stopping.is_set():
            self.on_listening(self.server)

    async def _follow_status(self, index: int, worker: _Worker, fd: int) -> None:
        """Read what the worker reports: b"s" its stop handler is installed, b"r" it serves."""
        async with trio.lowlevel.FdStream(fd) as stream:
            while data := await stream.receive_some(16):
                if b"s" in data:
                    worker.now_takes_signals()
                if b"r" in data:
                    self._worker_ready(index)

    async def forward_signals(self, signals: Any) -> None:
        async for signum in signals:
            again = " again: aborting" if self.stopping.is_set() else ": stopping"
            log.info("%s%s %d worker(s)", signal.Signals(signum).name, again, len(self.procs))
            self.stop()

    async def keep_worker(self, index: int) -> None:
        quick_exits = 0
        while not self.stopping.is_set():
            started = trio.current_time()
            code = await self._run_worker(index)
            if self.stopping.is_set():
                return
            if code == EXIT_STARTUP_FAILED:
                log.error("worker %d could not start: stopping", index)
                self.failed = True
                self.stop()
                return
            quick_exits = quick_exits + 1 if trio.current_time() - started < RESTART_QUICK else 0
            delay = (
                min(RESTART_DELAY_MIN * 2 ** (quick_exits - 1), RESTART_DELAY_MAX)
                if quick_exits
                else 0.0
            )
            log.warning(
                "worker %d exited (%s): restarting%s",
                index,
                _describe_exit(code),
                f" in {delay:g}s" if delay else "",
            )
            with trio.move_on_after(delay):
                await self.stopping.wait()

    async def _run_worker(self, index: int) -> int:
        payload = {
            "app": self.app,
            "app_dir": self.app_dir,
            "config": config_to_json(self.config),
            "fd": self.sock.fileno(),
            "path": sys.path,
            "worker": index,
        }
        read_end, write_end = os.pipe()  # the parent's liveness: EOF when it dies
        status_read, status_write = os.pipe()  # the worker's status reports (`_follow_status`)
        try:
            payload["parent_fd"] = read_end
            payload["status_fd"] = status_write
            try:
                proc = await trio.lowlevel.open_process(
                    [sys.executable, "-c", _CHILD_CODE, json.dumps(payload)],
                    pass_fds=(self.sock.fileno(), read_end, status_write),
                    start_new_session=True,
                )
            except BaseException:
                os.close(status_read)
                raise
            finally:
                os.close(read_end)
                os.close(status_write)
            worker = self.procs[index] = _Worker(proc)
            log.info("worker %d started (pid %d)", index, proc.pid)
            if self.stopping.is_set():  # a signal came while it was starting
                worker.signal()
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._follow_status, index, worker, status_read)
                    code = await proc.wait()
                    nursery.cancel_scope.cancel()
                return code
            finally:
                del self.procs[index]
                self.ready.discard(index)
        finally:
            os.close(write_end)


def _send_signal(proc: trio.Process, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it has just exited
        proc.send_signal(signum)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _worker_main(payload: dict[str, Any]) -> int:
    """A worker process: serve on the inherited socket until a signal or the parent's exit."""
    early_stop = _EarlyStop()
    for signum in _SIGNALS:
        signal.signal(signum, early_stop)
    status_fd = payload["status_fd"]
    try:
        _report(status_fd, b"s")  # the parent may signal it now (it held signals back)
        return _worker_serve(payload, early_stop, status_fd)
    except KeyboardInterrupt:  # a second signal outside trio's handling
        return 0
    finally:
        os.close(status_fd)


def _report(status_fd: int, status: bytes) -> None:
    """Tell the parent `status` (a parent that is gone is noticed through `parent_fd`)."""
    with contextlib.suppress(OSError):
        os.write(status_fd, status)


def _worker_serve(payload: dict[str, Any], early_stop: _EarlyStop, status_fd: int) -> int:
    from .apps import AppLoadError, load_app
    from .handlers import LifespanError, resolve_app

    config = config_from_json(payload["config"])
    configure_logging(config.log_level, config.access_log)
    sock = socket.socket(fileno=payload["fd"])
    try:
        try:
            app = load_app(payload["app"], payload["app_dir"])
            resolve_app(app, config.interface)
            load_engine(config.engine)
        except (AppLoadError, ImportError, TypeError, ValueError) as exc:
            log.error("worker %d cannot start: %s", payload["worker"], exc)
            return EXIT_STARTUP_FAILED
        try:
            if config.loop != "trio":  # each worker serves on an asyncio (or uvloop) loop
                from .asyncio_server import run_asyncio

                return run_asyncio(
                    app,
                    config,
                    config.loop,
                    lambda server: _report(status_fd, b"r"),
                    sock=sock,
                    parent_fd=payload["parent_fd"],
                    early_stop=lambda: early_stop.requested,
                )
            with gc_threshold(config.gc_threshold):
                _unwrap_run(
                    _run_until_signalled,
                    app,
                    config,
                    sock,
                    lambda server: _report(status_fd, b"r"),  # it serves: tell the parent
                    payload["parent_fd"],
                    early_stop,
                )
        except LifespanError as exc:
            log.error("worker %d: %s", payload["worker"], exc)
            return EXIT_STARTUP_FAILED
    finally:
        sock.close()
    return 0
