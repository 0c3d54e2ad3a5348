"""The trio driver's wait for input (`servers/trio_readiness.Readiness`), over socket pairs.

A wait must end when data arrives, and at once for data that was there before the socket was
registered or that came while nobody waited (an edge is kept, not lost); a cancelled wait
leaves nothing behind; two waits on one socket are an error, as with trio's; and a socket the
driver served is no longer watched once its connection ends, so its descriptor number can be
reused. No sleeps: the tests wait until every task is blocked.
"""

from __future__ import annotations

import os
import select
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing

from pipeparse.servers.apps import plaintext
from pipeparse.servers.config import ServerConfig
from pipeparse.servers.handlers import resolve_app
from pipeparse.servers.trio_driver import serve_connection
from pipeparse.servers.trio_readiness import Readiness, readiness


def service() -> Readiness:
    found = readiness()
    assert found is not None  # (Linux: epoll)
    return found


@asynccontextmanager
async def watched_pair(
    before: bytes = b"",
) -> AsyncIterator[tuple[Readiness, int, trio.socket.SocketType, trio.socket.SocketType]]:
    """A socket pair whose first end the run's `Readiness` watches (after `before` was sent
    to it); unwatched and closed at the end."""
    ours, theirs = trio.socket.socketpair()
    with ours, theirs:
        if before:
            await theirs.send(before)
        watch = service()
        watch.register(ours.fileno())
        try:
            yield watch, ours.fileno(), ours, theirs
        finally:
            watch.unregister(ours.fileno())


async def test_a_wait_ends_when_data_arrives() -> None:
    async with watched_pair() as (watch, fd, _, theirs):
        woke: list[bool] = []
        async with trio.open_nursery() as nursery:

            async def waiter() -> None:
                await watch.wait(fd)
                woke.append(True)

            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert woke == []  # nothing to read: it waits
            await theirs.send(b"x")
        assert woke == [True]


async def test_data_already_there_and_an_edge_nobody_waited_for_are_kept() -> None:
    # readable already as it is registered: that counts as an edge
    async with watched_pair(before=b"before") as (watch, fd, ours, theirs):
        with trio.fail_after(5):
            await watch.wait(fd)
        assert await ours.recv(100) == b"before"
        await theirs.send(b"while nobody waits")
        await trio.testing.wait_all_tasks_blocked()  # the service takes the edge now
        with trio.fail_after(5):
            await watch.wait(fd)
        assert await ours.recv(100) == b"while nobody waits"


async def test_a_cancelled_wait_leaves_nothing_and_two_waits_are_an_error() -> None:
    async with watched_pair() as (watch, fd, _, _):
        with trio.CancelScope() as scope:
            scope.cancel()
            await watch.wait(fd)
        assert scope.cancelled_caught and fd not in watch.waiting
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch.wait, fd)
            await trio.testing.wait_all_tasks_blocked()
            try:
                await watch.wait(fd)
            except trio.BusyResourceError:
                busy = True
            else:
                busy = False
            nursery.cancel_scope.cancel()
        assert busy and fd not in watch.waiting


async def test_a_served_socket_is_unwatched_before_it_is_closed() -> None:
    """A descriptor number is reused: a registration left behind would hand a new socket's
    number the old one's edges."""
    ours, theirs = trio.socket.socketpair()
    fd = ours.fileno()
    keep = os.dup(fd)  # the socket outlives the server's descriptor: so would a registration
    handler = resolve_app(plaintext, "native").handler
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_connection, trio.SocketStream(ours), handler, ServerConfig())
        await theirs.send(b"GET /plaintext HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := await theirs.recv(4096):
            answer += chunk
        theirs.close()
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"Hello, World!")
    os.dup2(keep, fd)  # the same number on the same socket again: registered still?
    try:
        service().epoll.modify(fd, select.EPOLLIN | select.EPOLLET)
    except FileNotFoundError:
        watched = False
    else:
        watched = True
    os.close(fd)
    os.close(keep)
    assert not watched
