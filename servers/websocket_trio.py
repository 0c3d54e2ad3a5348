"""A WebSocket on trio: the `WebSocketChannel` over a trio stream, and the tasks that serve it
(a reader feeding the session, the app, the pinger). See `servers.websocket`."""

from __future__ import annotations

import os

import trio

from pipeparse import RequestHead

from .listen import current_shutdown
from .websocket import (
    ClientDisconnected,
    WebSocketEndpoint,
    WebSocketOptions,
    WebSocketSession,
)

__all__ = ["serve_websocket"]

_RECEIVE_SIZE = 64 * 1024
_CLOSE_WAIT = 2.0  # after the server's close frame, wait this long for the client's


class _TrioChannel:
    """On a plain TCP stream, bytes move straight through the socket's descriptor when it is
    ready (as the engine's do: trio's stream would add scheduler trips to every message);
    through the stream when it must wait, and always over TLS."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else -1
        self.reader = trio.CancelScope()
        self._sending = trio.StrictFIFOLock()
        self._waiters = trio.lowlevel.ParkingLot()
        self._eager_reads = 0

    async def receive(self) -> bytes:
        """The next bytes from the client (b"": it is gone)."""
        try:
            if self.fd < 0:
                return bytes(await self.stream.receive_some(_RECEIVE_SIZE))
            while True:
                try:
                    data = os.read(self.fd, _RECEIVE_SIZE)
                except BlockingIOError:
                    self._eager_reads = 0
                    await trio.lowlevel.wait_readable(self.fd)
                    continue
                self._eager_reads += 1
                if self._eager_reads >= 4:  # a client that never pauses starves nobody
                    self._eager_reads = 0
                    await trio.lowlevel.checkpoint()
                return data
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return b""

    async def send(self, data: bytes) -> None:
        try:
            if self.fd >= 0 and not self._sending.locked():  # nothing queued before it
                try:
                    sent = os.write(self.fd, data)
                except BlockingIOError:
                    sent = 0
                if sent == len(data):
                    return
                data = data[sent:]
            async with self._sending:
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ClientDisconnected("the client went away") from exc

    async def wait(self) -> None:
        await self._waiters.park()

    def wake(self) -> None:
        self._waiters.unpark_all()

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)

    def abort(self) -> None:
        self.reader.cancel()


async def serve_websocket(
    stream: trio.abc.Stream,
    endpoint: WebSocketEndpoint,
    head: RequestHead,
    client: tuple[str, int] | None,
    data: bytes,
    options: WebSocketOptions,
    date: bytes,
) -> int:
    """Serve the WebSocket that upgrade request `head` asked for, on `stream` (every earlier
    response is out); `data` arrived after its head. Returns when it is over, with the
    handshake's status (101, or the HTTP answer's); the caller closes the stream."""
    session = WebSocketSession(head, data, options, date)
    channel = _TrioChannel(stream)
    ws = endpoint(head, client, session, channel)

    async def read() -> None:
        with channel.reader:
            while not session.finished:
                if session.backlog > options.max_size:  # the app is behind: wait for it
                    await channel.wait()
                    continue
                data = await channel.receive()
                try:
                    await ws.received(data)
                except ClientDisconnected:
                    data = b""
                    session.lost()
                if not data:
                    break
        session.lost()  # (no-op after a close) the app's receive must not wait for ever
        channel.wake()

    def going_away() -> None:
        nursery.start_soon(ws.going_away)

    shutdown = current_shutdown()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        nursery.start_soon(ws.keep_alive)
        shutdown.add_callback(going_away)
        try:
            await ws.run()
            with trio.move_on_after(_CLOSE_WAIT):
                while not session.finished:  # the client's close frame, or its EOF
                    await channel.wait()
        finally:
            shutdown.discard_callback(going_away)
            nursery.cancel_scope.cancel()
    return session.status
