"""The request body sources of the trio driver: `NoBody` for a request whose body had all
arrived (shared per connection), `StreamedBody` for one whose body streams, piece by piece as
the protocol delivers them (`BodyData`, `BodyEnd`, `BodyError`)."""

from __future__ import annotations

from typing import Protocol

import trio

from pipeparse import ProtocolError, ServerConnection

__all__ = ["BodyDriver", "NoBody", "StreamedBody"]


class BodyDriver(Protocol):
    conn: ServerConnection
    gone: trio.Event
    done: bool

    async def perform_soon(self) -> None: ...


class NoBody:
    """The body source of a request whose body had all arrived."""

    __slots__ = ("gone",)

    def __init__(self, gone: trio.Event) -> None:
        self.gone = gone

    async def next_chunk(self) -> bytes | memoryview | None:
        return None

    async def wait_disconnect(self) -> None:
        await self.gone.wait()


class StreamedBody:
    """The streamed body of request `seq`: pieces as the protocol delivers them."""

    __slots__ = ("driver", "event", "item", "seq")

    def __init__(self, driver: BodyDriver, seq: int) -> None:
        self.driver = driver
        self.seq = seq
        self.event = trio.Event()
        self.item: memoryview | ProtocolError | None = None

    def put(self, item: memoryview | ProtocolError | None) -> None:
        self.item = item
        self.event.set()

    async def next_chunk(self) -> bytes | memoryview | None:
        driver = self.driver
        if driver.done:
            raise ProtocolError("client closed the connection", 400)
        self.event = event = trio.Event()
        driver.conn.read_body(self.seq)
        await driver.perform_soon()  # (a 100 Continue, a resume of reading, the piece)
        await event.wait()
        item = self.item
        self.item = None
        if isinstance(item, ProtocolError):
            raise item
        return item

    async def wait_disconnect(self) -> None:
        await self.driver.gone.wait()
