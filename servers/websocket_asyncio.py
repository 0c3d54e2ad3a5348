"""A WebSocket on asyncio: the `WebSocketChannel` over the connection's transport. The
transport pushes bytes (`data_received`), so the session is fed without a reader task; the app
and the pinger are tasks. See `servers.websocket`."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from pipeparse import RequestHead

from .websocket import (
    ClientDisconnected,
    WebSocketEndpoint,
    WebSocketOptions,
    WebSocketSession,
)

__all__ = ["AsyncioWebSocket"]

log = logging.getLogger("pipeparse.server")

_CLOSE_WAIT = 2.0  # after the server's close frame, wait this long for the client's


class AsyncioWebSocket:
    """Serves one WebSocket on `transport` (the HTTP protocol hands its callbacks over)."""

    def __init__(
        self,
        transport: asyncio.Transport,
        endpoint: WebSocketEndpoint,
        head: RequestHead,
        client: tuple[str, int] | None,
        data: bytes,
        options: WebSocketOptions,
        date: bytes,
    ) -> None:
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        self.session = WebSocketSession(head, data, options, date)
        self.ws = endpoint(head, client, self.session, self)
        self.done = self.loop.create_future()  # the handshake's status, once it is over
        self._waiters: list[asyncio.Future[None]] = []
        self._drained: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._lost = False
        self._task = self.loop.create_task(self._serve())

    # -- the transport's callbacks, passed on by the HTTP protocol ------------------------

    def data_received(self, data: bytes) -> None:
        session = self.session
        out = session.feed(data)
        self.wake()
        if out and not self._lost:
            self.transport.write(out)
        if session.backlog > session.options.max_size and not self._reading_paused:
            self._reading_paused = True  # the app is behind: let TCP push back
            self.transport.pause_reading()

    def connection_lost(self) -> None:
        self._lost = True
        self.session.lost()
        self.wake()
        self.resume_writing()

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._drained = None

    def pause_writing(self) -> None:
        if self._drained is None:
            self._drained = self.loop.create_future()

    def going_away(self) -> None:
        """A graceful shutdown: close with 1012."""
        self.loop.create_task(self.ws.going_away())

    # -- WebSocketChannel ----------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        if self._lost or self.transport.is_closing():
            raise ClientDisconnected("the client went away")
        self.transport.write(data)
        if self._drained is not None:
            await self._drained

    async def wait(self) -> None:
        waiter = self.loop.create_future()
        self._waiters.append(waiter)
        await waiter

    def wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        session = self.session
        if self._reading_paused and session.backlog <= session.options.max_size:
            self._reading_paused = False
            if not self._lost:
                self.transport.resume_reading()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def abort(self) -> None:
        self.transport.abort()

    # -- serving -------------------------------------------------------------------------

    async def _serve(self) -> None:
        keeper = self.loop.create_task(self.ws.keep_alive())
        try:
            await self.ws.run()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CLOSE_WAIT):
                    while not self.session.finished:  # the client's close frame, or its EOF
                        await self.wait()
        except ClientDisconnected:
            pass
        except Exception:  # (the app's own errors are handled in `run`)
            log.exception("WebSocket connection failed")
        finally:
            keeper.cancel()
            self.transport.close()
            if not self.done.done():
                self.done.set_result(self.session.status)
