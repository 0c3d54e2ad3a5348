"""Faults over real sockets: a client that aborts mid-pipeline.

The pipeparse engine keeps reading while handlers run, so it sees the reset at once and cancels
them. The sequential h11 engine reads only between requests (as sequential servers do), so it
notices an abort when its handler finishes and it writes or reads next: not tested here.
"""

from __future__ import annotations

import functools
import socket
import struct

import trio

import pipeparse
from pipeparse import HttpRequest, Response
from pipeparse.servers.listen import Server


async def test_client_abort_cancels_in_flight_handlers() -> None:
    engine = "pipeparse"
    started = trio.Event()
    cancelled = trio.Event()

    @pipeparse.native
    async def handler(request: HttpRequest) -> Response:
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()
        return Response(b"never")

    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(
            functools.partial(pipeparse.serve, handler, port=0, engine=engine)
        )
        client = trio.socket.socket()
        await client.connect(("127.0.0.1", server.port))
        await client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" * 3)
        with trio.fail_after(10):
            await started.wait()
            # Abort: a reset, not a polite close.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            await cancelled.wait()
        server.shutdown()
