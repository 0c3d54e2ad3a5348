"""The response sink both drivers give a handler: `ResponseSink` calls become a
`ServerConnection`'s response events (`respond`, or `start_response` + `send_body`).

I/O-free: a streamed piece is handed to the driver's `stream_out`, which writes it (or has it
written) and waits while the output is over its high-water mark.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pipeparse import ServerConnection

__all__ = ["ConnectionSink", "SinkDriver"]

Body = bytes | bytearray | memoryview


class SinkDriver(Protocol):
    """What a `ConnectionSink` needs of its driver."""

    conn: ServerConnection

    async def stream_out(self) -> None:
        """A streamed piece was reported: write what may leave, wait while the output is
        over its high-water mark."""
        ...


class ConnectionSink:
    """One request's `ResponseSink` over `ServerConnection`'s response events. `status` and
    `sent` (body bytes) are for the access log."""

    __slots__ = ("driver", "finished", "headers", "sent", "seq", "started", "status", "streaming")

    def __init__(self, driver: SinkDriver, seq: int) -> None:
        self.driver = driver
        self.seq = seq
        self.started = False
        self.streaming = False
        self.finished = False
        self.status = 0
        self.sent = 0
        self.headers: Sequence[tuple[bytes, bytes]] = ()

    async def start(self, status: int, headers: Sequence[tuple[bytes, bytes]]) -> None:
        if self.started:
            raise RuntimeError("response already started")
        self.started = True
        self.status = status
        self.headers = headers

    def respond(self, status: int, headers: Sequence[tuple[bytes, bytes]], body: Body) -> None:
        """`start` and a last `send` in one call, with no await: a whole response (the ASGI
        adapter's usual case)."""
        if self.started:
            raise RuntimeError("response already started")
        self.started = self.finished = True
        self.status = status
        self.headers = headers
        self.sent = len(body)
        self.driver.conn.respond(self.seq, status, headers, body)

    async def send(self, data: Body, more: bool = False) -> None:
        if not self.started:
            raise RuntimeError("send() before start()")
        if self.finished:
            raise RuntimeError("response already complete")
        conn = self.driver.conn
        self.sent += len(data)
        if not self.streaming:
            if not more:  # the whole response at once (the usual case)
                self.finished = True
                conn.respond(self.seq, self.status, self.headers, data)
                return
            self.streaming = True
            conn.start_response(self.seq, self.status, self.headers)
        if not more:
            self.finished = True
        conn.send_body(self.seq, data, more)
        if more:
            await self.driver.stream_out()  # a streamed response goes out as it is produced
