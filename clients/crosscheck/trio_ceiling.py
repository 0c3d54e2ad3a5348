"""Three ceilings for serving on trio, to run under wrk beside pipeparse.

``python -m pipeparse.clients.crosscheck.trio_ceiling {minimal,core,sleeps} --port P`` serves
``/plaintext`` on 127.0.0.1:P with one loop per connection, on raw sockets: wait until
readable, one read, answer, one write (the system calls pipeparse makes at depth 1).

- ``minimal``: no parsing at all, a canned answer per blank line read: what trio itself allows.
- ``core``: the same loop around pipeparse's `ServerConnection` (framing, dispatch, rendering),
  with the built-in app's native handler run inline: what the core costs with no driver around
  it (no timers, no graceful shutdown, no tasks for handlers that wait).
- ``sleeps``: the minimal loop for the sleep target (``/?sleep_ms=N``): each request read
  sleeps its N ms with ``trio.sleep`` in a task of its own (the connection's sleeping tasks are
  kept and woken one per request, as a server's workers are), then the read's canned answers go
  in one write: what trio allows for handlers that wait, before any HTTP work.

None is a server: no limits, timeouts or error handling, and in ``core`` a handler must not
wait. They measure how far the trio driver is from what its loop and its core allow (README,
Results).
"""

from __future__ import annotations

import argparse
import os
import re
import socket
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import suppress
from typing import Any

import trio

from pipeparse import HttpDate, HttpRequest, Response, ServerConnection
from pipeparse.actions import Start, Write
from pipeparse.servers.apps import plaintext
from pipeparse.servers.trio_bodies import NoBody

__all__ = ["LOOPS", "main", "serve_core", "serve_minimal", "serve_sleeps"]

_CANNED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n"
    b"Server: pipeparse\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\n\r\nHello, World!"
)
_native = plaintext.native
_date = HttpDate()


async def serve_minimal(
    sock: trio.socket.SocketType, first: Callable[[bytes], Awaitable[None]] | None = None
) -> None:
    """The canned answer once per request head read (counted by its blank line); with
    `first`, each read's answers wait until ``first(data)`` returned."""
    fd = sock.fileno()
    while True:
        await trio.lowlevel.wait_readable(fd)
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            continue
        if not data:
            return
        if first is not None:
            await first(data)
        os.write(fd, _CANNED * data.count(b"\r\n\r\n"))


_SLEEP_MS = re.compile(rb"sleep_ms=(\d+)")


async def serve_sleeps(sock: trio.socket.SocketType) -> None:
    """The minimal loop, with each read's answers sent once every one of its requests slept
    its ``sleep_ms`` (no value: no sleep), each in a task of its own."""
    async with trio.open_nursery() as nursery:
        await serve_minimal(sock, _Sleepers(nursery).sleep_each)
        nursery.cancel_scope.cancel()


class _Sleepers:
    """One connection's tasks that sleep for its requests: kept, parked between reads, and
    woken one per request (spawned when too few), as a server's workers would be."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.todo: list[float] = []
        self.parked = trio.lowlevel.ParkingLot()
        self.left = 0
        self.done = trio.Event()

    async def sleep_each(self, data: bytes) -> None:
        heads = data.split(b"\r\n\r\n")[:-1]
        self.todo = [int(m[1]) / 1000 if (m := _SLEEP_MS.search(h)) else 0.0 for h in heads]
        self.left = len(self.todo)
        if not self.left:
            return
        self.done = trio.Event()
        woken = len(self.parked.unpark(count=self.left))
        for _ in range(self.left - woken):
            self.nursery.start_soon(self._sleeper)
        await self.done.wait()

    async def _sleeper(self) -> None:
        while True:
            while not self.todo:
                await self.parked.park()
            await trio.sleep(self.todo.pop())
            self.left -= 1
            if not self.left:
                self.done.set()


async def serve_core(sock: trio.socket.SocketType) -> None:
    """`ServerConnection`'s actions performed in line: a `Start` runs the native handler to
    its end and reports the response, a `Write` is one write; other actions are ignored."""
    fd = sock.fileno()
    conn = ServerConnection(clock=trio.lowlevel.current_clock().current_time, date=_date)
    no_body = NoBody(trio.Event())
    while True:
        while actions := conn.actions():
            for action in actions:
                if type(action) is Start:
                    head = action.head
                    request = HttpRequest(
                        head.method, head.target, head.http_version, head.headers, action.seq,
                        action.body, no_body, None,
                    )  # fmt: skip
                    response = _run_to_end(_native(request))
                    body = response.body
                    assert isinstance(body, bytes)  # (the plaintext app's always are)
                    conn.respond(action.seq, response.status, response.headers, body)
                elif type(action) is Write:
                    os.write(fd, b"".join(action.parts))
        await trio.lowlevel.wait_readable(fd)
        view = conn.receive_view(16 * 1024)
        if view is None:
            return  # (the buffer is full: not a case this loop serves)
        try:
            n = os.readv(fd, [view])
        except BlockingIOError:
            continue
        finally:
            view.release()
        conn.received(n)
        if not n:
            return


def _run_to_end(coro: Coroutine[Any, Any, Response]) -> Response:
    try:
        coro.send(None)
    except StopIteration as stop:
        response: Response = stop.value
        return response
    raise RuntimeError("the ceiling loop runs handlers that do not wait")


LOOPS: dict[str, Callable[[trio.socket.SocketType], Awaitable[None]]] = {
    "minimal": serve_minimal,
    "core": serve_core,
    "sleeps": serve_sleeps,
}


async def _serve(loop: Callable[[trio.socket.SocketType], Awaitable[None]], port: int) -> None:
    listener = trio.socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    await listener.bind(("127.0.0.1", port))
    listener.listen(1024)
    print(f"listening on http://127.0.0.1:{listener.getsockname()[1]}", flush=True)
    async with trio.open_nursery() as nursery:
        while True:
            sock, _ = await listener.accept()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            nursery.start_soon(_closing, loop, sock)


async def _closing(
    loop: Callable[[trio.socket.SocketType], Awaitable[None]], sock: trio.socket.SocketType
) -> None:
    with sock, suppress(OSError):  # (the client went away)
        await loop(sock)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pipeparse.clients.crosscheck.trio_ceiling", description=__doc__
    )
    parser.add_argument("loop", choices=sorted(LOOPS))
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    with suppress(KeyboardInterrupt):
        trio.run(_serve, LOOPS[args.loop], args.port)


if __name__ == "__main__":
    main()
