"""Run one server test on every loop: trio, asyncio, and uvloop when installed.

Strategy: the tests stay trio tests (their clients are trio's), and `serving(loop, app,
**settings)` starts the server. On ``trio`` it is `pipeparse.serve` in a nursery, as before;
on ``asyncio``/``uvloop`` it is `pipeparse.start_asyncio_server` on a loop of that kind in a
thread of its own, so the server and the client never share a loop. Either way the test gets a
`Served`: the address, ``shutdown()``, ``stopped()`` (wait until the server stopped by itself)
and ``settled(n)`` (wait until the server holds at most `n` connections). `LoopEvent` is an
event a test sets and an app awaits on whichever loop serves it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

import pipeparse
from pipeparse.servers.asyncio_server import AsyncioServer, new_event_loop
from pipeparse.servers.listen import Server

__all__ = [
    "ENGINE_LOOPS",
    "LOOPS",
    "LoopEvent",
    "Served",
    "parametrize_engine_loops",
    "parametrize_loops",
    "serving",
]

LOOPS = ["trio", "asyncio"]
try:
    import uvloop  # noqa: F401

    LOOPS.append("uvloop")
except ImportError:
    pass

parametrize_loops = pytest.mark.parametrize("loop", LOOPS)
# Every engine on trio, and the pipeparse engine on every other loop (h11 is trio-only).
ENGINE_LOOPS = [("pipeparse", loop) for loop in LOOPS] + [("h11", "trio")]
parametrize_engine_loops = pytest.mark.parametrize(
    ("engine", "loop"), ENGINE_LOOPS, ids=[f"{e}-{lp}" for e, lp in ENGINE_LOOPS]
)
SAFETY = 20.0  # seconds: a server thread that has not stopped by then is a failure


class LoopEvent:
    """Set from any thread (or loop); awaited on trio or on asyncio."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._set = False
        self._wakers: list[Callable[[], object]] = []

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        with self._lock:
            self._set = True
            wakers, self._wakers = self._wakers, []
        for wake in wakers:
            wake()

    async def wait(self) -> None:
        try:
            token = trio.lowlevel.current_trio_token()
        except RuntimeError:  # not in trio: asyncio
            loop = asyncio.get_running_loop()
            future: asyncio.Future[None] = loop.create_future()

            def done() -> None:
                if not future.done():
                    future.set_result(None)

            with self._lock:
                if self._set:
                    return
                self._wakers.append(partial(loop.call_soon_threadsafe, done))
            await future
            return
        event = trio.Event()
        with self._lock:
            if self._set:
                return
            self._wakers.append(lambda: token.run_sync_soon(event.set))
        await event.wait()


@dataclass
class Served:
    """A running server, on whatever loop (see the module comment)."""

    loop: str
    host: str
    port: int
    url: str
    uds: str | None
    _trio: Server | None = None
    _asyncio: _AsyncioThread | None = None

    @property
    def closing(self) -> bool:
        if self._trio is not None:
            return self._trio.closing
        assert self._asyncio is not None and self._asyncio.server is not None
        return self._asyncio.server.closing

    def shutdown(self) -> None:
        if self._trio is not None:
            self._trio.shutdown()
        else:
            assert self._asyncio is not None
            self._asyncio.call(lambda server: server.shutdown())

    async def stopped(self) -> None:
        """Wait until the server has stopped by itself (``limit_max_requests``, say)."""
        if self._asyncio is not None:
            await self._asyncio.join()
        # (on trio, `serving`'s nursery waits for `serve` to return)

    async def settled(self, connections: int) -> None:
        """Wait until the server holds at most `connections` open connections."""
        if self._trio is not None:
            await trio.testing.wait_all_tasks_blocked()
            return
        assert self._asyncio is not None
        await self._asyncio.settled(connections)


class _AsyncioThread:
    """`start_asyncio_server` on a new loop, in a thread."""

    def __init__(self, loop: str, app: object, settings: dict[str, Any]) -> None:
        self.loop_name = loop
        self.app = app
        self.settings = settings
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: AsyncioServer | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            try:
                self.server = await pipeparse.start_asyncio_server(self.app, **self.settings)
            except BaseException as exc:
                self.error = exc
                return
            finally:
                self.ready.set()
            await self.server.wait_closed()

        with asyncio.Runner(loop_factory=lambda: new_event_loop(self.loop_name)) as runner:
            runner.run(main())

    async def start(self) -> AsyncioServer:
        self.thread.start()
        await trio.to_thread.run_sync(self.ready.wait, SAFETY)
        if self.error is not None:
            raise self.error
        assert self.server is not None
        return self.server

    def call(self, fn: Callable[[AsyncioServer], None]) -> None:
        assert self.loop is not None and self.server is not None
        if self.thread.is_alive() and not self.loop.is_closed():  # (not stopped by itself)
            self.loop.call_soon_threadsafe(fn, self.server)

    async def join(self) -> None:
        await trio.to_thread.run_sync(self.thread.join, SAFETY)
        assert not self.thread.is_alive(), "the asyncio server did not stop"

    async def settled(self, connections: int) -> None:
        assert self.loop is not None and self.server is not None
        server = self.server

        async def until() -> None:
            while len(server._connections) > connections:
                await asyncio.wait(
                    [p.closed for p in server._connections], return_when=asyncio.FIRST_COMPLETED
                )

        future = asyncio.run_coroutine_threadsafe(until(), self.loop)
        await trio.to_thread.run_sync(future.result, SAFETY)


@asynccontextmanager
async def serving(loop: str, app: object, **settings: Any) -> AsyncIterator[Served]:
    """Serve `app` on `loop` (port 0 unless `settings` say where) while the block runs; shut
    down gracefully after it (see the module comment)."""
    if not {"uds", "fd", "port"} & set(settings):
        settings["port"] = 0
    if loop == "trio":
        try:
            async with trio.open_nursery() as nursery:
                server: Server = await nursery.start(partial(pipeparse.serve, app, **settings))
                try:
                    yield Served(
                        loop, server.host, server.port, server.url, server.uds, _trio=server
                    )
                finally:
                    server.shutdown()
        except BaseExceptionGroup as group:  # one error (a failed start, say) as itself
            if len(group.exceptions) == 1 and not isinstance(
                group.exceptions[0], BaseExceptionGroup
            ):
                raise group.exceptions[0] from None
            raise
        return
    runner = _AsyncioThread(loop, app, {"host": "127.0.0.1", **settings})
    aserver = await runner.start()
    try:
        yield Served(loop, aserver.host, aserver.port, aserver.url, aserver.uds, _asyncio=runner)
    finally:
        runner.call(lambda s: s.shutdown())
        await runner.join()
