"""Writing on the trio driver: the part of `TrioDriver` that performs a `Write`.

What leaves at once is one buffer (`pipeparse._gather.gather`): the responses of a batch joined
into one ``bytes``, and written straight to the socket; trio's stream
(which waits for room) takes only what the socket did not. A large body (`LARGE_PIECE` bytes or
more) is not copied: it leaves in one ``os.writev`` with the bytes around it, and the rest of a
partial send as views (`unsent`), once the socket has room. The first large body of a
connection lifts its TCP_NOTSENT_LOWAT (trio sets 16 KiB, which took a 1 MiB body in about
five calls). Over TLS the stream encrypts (copies) anyway: one ``send_all`` each.

The root of `TrioDriver`'s bases (`ReadsStream` derives from it only because just one slotted
base may define a layout); the h11 engine writes through it too.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Coroutine
from contextlib import suppress
from typing import Any, Final

import trio
from mypy_extensions import mypyc_attr

from pipeparse._gather import MAX_BUFFERS, gather, unsent
from pipeparse._ordered import Chunk

__all__ = ["FLUSH_AT", "WritesStream"]

# Unsent bytes the kernel may hold once a connection sends a large body (see the module
# comment): at the kernel's send buffer ceiling one call places a 1 MiB body.
LARGE_SEND_LOWAT = 4 * 1024 * 1024
# Output bytes written without waiting for a batch's end (or, streamed, for another task).
FLUSH_AT: Final = 64 * 1024


@mypyc_attr(allow_interpreted_subclasses=True)  # (compiled build: the h11 engine's connection)
class WritesStream:
    """See the module comment; every attribute is set by `TrioDriver.__init__`."""

    __slots__ = ("large_sends",)

    stream: trio.abc.Stream
    fd: int
    large_sends: bool

    def _end(self) -> None:
        raise NotImplementedError

    def _write(self, parts: list[Chunk]) -> Coroutine[Any, Any, None] | None:
        """Write `parts` (one `Write`) as far as the socket takes them now, with no await:
        None when all of it went (the usual case), else the coroutine that sends the rest
        (`_send`), to await."""
        fd = self.fd
        if fd < 0 or len(parts) != 1:
            return self._send(parts)
        data = parts[0]
        try:
            n = os.write(fd, data)
        except BlockingIOError:
            n = 0
        except OSError:
            self._end()
            return None
        if n == len(data):
            return None
        return self._send([memoryview(data)[n:]])

    async def _send(self, parts: list[Chunk]) -> None:
        """Send `parts` (one `Write`) whole and in order; the connection ends if the client
        is gone, or if a cancel cut a response short (only closing is honest then)."""
        try:
            buffers = parts if len(parts) == 1 else gather(parts)
            if len(buffers) == 1:
                await self._send_one(buffers[0])
            else:
                await self._send_gathered(buffers)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self._end()
        except trio.Cancelled:
            self._end()
            raise

    async def _send_one(self, data: Chunk) -> None:
        """Straight to the socket when it takes everything (the usual case), through trio's
        stream for whatever it did not take."""
        fd = self.fd
        if fd >= 0:
            try:
                n = os.write(fd, data)
            except BlockingIOError:
                n = 0
            if n == len(data):
                return
            data = memoryview(data)[n:]
        await self.stream.send_all(data)

    async def _send_gathered(self, buffers: list[Chunk]) -> None:
        """One ``writev`` while the socket takes everything, else the rest (as views) once it
        has room."""
        fd = self.fd
        if fd < 0:
            for buffer in buffers:
                await self.stream.send_all(buffer)
            return
        if not self.large_sends:
            self.large_sends = True  # (one call per connection; not TCP: no such limit)
            stream = self.stream
            if isinstance(stream, trio.SocketStream):
                sock = stream.socket
                with suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, LARGE_SEND_LOWAT)
        while True:
            try:
                n = os.writev(fd, buffers[:MAX_BUFFERS])
            except BlockingIOError:
                n = 0
            buffers = unsent(buffers, n)
            if not buffers:
                return
            await trio.lowlevel.wait_writable(fd)
