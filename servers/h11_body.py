"""The h11 engine's request body: read on demand through h11, as a handler's `BodySource`.

Strategy: requests are served one at a time, so a connection has one `H11Body`, reset by
`begin` for each request. `begin` takes the body parts h11 already buffered without awaiting
(the whole body, when it is all there, goes to the handler with its request); `next_chunk`
reads on (sending ``100 Continue`` first when the client waits for it), with the body timeout
per read and the body size limit counted here. A body that breaks is remembered, so the
engine answers it (413, 408, 400) once the handler returns.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import h11
import trio

from pipeparse import ProtocolError

if TYPE_CHECKING:
    from .engine_h11 import _Connection

__all__ = ["H11Body"]


class H11Body:
    """The body of the current request, read on demand: the engine's `BodySource`.

    One per connection (requests are served one at a time); `begin` resets it per request.
    """

    def __init__(self, connection: _Connection) -> None:
        self.connection = connection
        self.pending: deque[bytes] = deque()
        self.done = True
        self.received = 0
        self.error: ProtocolError | None = None

    def begin(self) -> bytes | None:
        """Take the body parts already buffered (no I/O); the whole body if it is all there."""
        self.pending.clear()
        self.done = False
        self.received = 0
        self.error = None
        h = self.connection.h11
        parts: list[bytes] = []
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                raise ProtocolError(str(exc), exc.error_status_hint) from None
            kind = type(event)
            if isinstance(event, h11.Data):  # (isinstance: so the type checker knows `data`)
                self._count(len(event.data))
                parts.append(event.data)
            elif kind is h11.EndOfMessage:
                self.done = True
                if not parts:
                    return b""
                return b"".join(parts)
            else:  # NEED_DATA
                self.pending.extend(bytes(p) for p in parts)
                return None

    def _count(self, size: int) -> None:
        self.received += size
        limit = self.connection.limits.max_body_size
        if self.received > limit:
            raise ProtocolError(f"the request body exceeds the limit of {limit} bytes", 413)

    async def next_chunk(self) -> bytes | None:
        """The next piece of the body, or None at its end; `ProtocolError` if it breaks."""
        if self.pending:
            return self.pending.popleft()
        if self.done:
            return None
        if self.error is not None:
            raise self.error
        try:
            return await self._next_chunk()
        except ProtocolError as exc:
            self.error = exc
            raise

    async def _next_chunk(self) -> bytes | None:
        connection = self.connection
        h = connection.h11
        if h.they_are_waiting_for_100_continue:
            interim = h.send(h11.InformationalResponse(status_code=100, headers=[]))
            if interim:
                await connection.write(interim)
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                if connection.eof:
                    raise ProtocolError("the client closed the connection mid-body", 400) from None
                raise ProtocolError(str(exc), exc.error_status_hint) from None
            kind = type(event)
            if isinstance(event, h11.Data):  # (isinstance: so the type checker knows `data`)
                self._count(len(event.data))
                return bytes(event.data)
            if kind is h11.EndOfMessage:
                self.done = True
                return None
            reads = connection.reads
            with trio.move_on_after(connection.config.body_timeout):
                await connection.receive(reads)
                continue
            raise ProtocolError(f"no request body bytes for {connection.config.body_timeout}s", 408)

    async def discard(self) -> None:
        """Read off the rest of a body the handler left unread."""
        while await self.next_chunk() is not None:
            pass

    async def wait_disconnect(self) -> None:
        """Return once the client has closed (or broken) the connection.

        Reads ahead while it waits, into h11's buffer, at most `config.buffer_size` bytes per
        wait; past that it waits for another reader to see the end.
        """
        connection = self.connection
        budget = connection.config.buffer_size
        while not connection.eof and not connection.broken:
            if budget <= 0:
                await connection.eof_event.wait()
                return
            budget -= await connection.receive(connection.reads)
