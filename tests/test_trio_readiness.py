"""The trio driver's input (`servers/trio_readiness.Readiness`), over socket pairs.

A watch is called once at its socket's next edge; data that was there before the socket was
registered, or that came while nobody watched, is an edge kept (`watch` says so), not lost; a
failing callback harms no other socket; a callback whose handler must wait goes on in its task
while another task of the pool leads; and a socket the driver served is no longer watched once
its connection ends, so its descriptor number can be reused. Through the driver: input that
comes while the connection's only task runs a handler that waits is served, the end of the
stream reaches such a handler, and a request costs no wake of a task beyond its read and its
handler's wake. No sleeps: the tests wait until every task is blocked.
"""

from __future__ import annotations

import os
import select
import socket
from collections import Counter
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

from pipeparse import HttpRequest, Response, ServerConnection, native
from pipeparse.servers.apps import echo, plaintext
from pipeparse.servers.config import ServerConfig
from pipeparse.servers.handlers import native_handler, resolve_app
from pipeparse.servers.protocol import ResponseSink
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


async def test_a_watch_is_called_once_at_the_next_edge() -> None:
    async with watched_pair() as (watch, fd, ours, theirs):
        calls: list[trio.CancelScope] = []
        assert watch.watch(fd, lambda scope: calls.append(scope))
        await trio.testing.wait_all_tasks_blocked()
        assert calls == []  # nothing to read: no call
        await theirs.send(b"x")
        await trio.testing.wait_all_tasks_blocked()
        assert len(calls) == 1 and fd not in watch.watchers  # once, then dropped
        assert await ours.recv(10) == b"x"
        await theirs.send(b"y")  # an edge with no watch is kept, not served
        await trio.testing.wait_all_tasks_blocked()
        assert len(calls) == 1 and fd in watch.ready


async def test_data_already_there_and_an_edge_nobody_watched_for_are_kept() -> None:
    # readable already as it is registered: that counts as an edge
    async with watched_pair(before=b"before") as (watch, fd, ours, theirs):
        await trio.testing.wait_all_tasks_blocked()  # the pool takes the edge now
        assert not watch.watch(fd, lambda scope: None)  # kept: the caller reads
        assert await ours.recv(100) == b"before"
        assert watch.watch(fd, lambda scope: None)  # (forgotten once told)
        watch.unwatch(fd)
        await theirs.send(b"while nobody watches")
        await trio.testing.wait_all_tasks_blocked()
        assert not watch.watch(fd, lambda scope: None)
        assert await ours.recv(100) == b"while nobody watches"


async def test_a_failing_watch_harms_no_other(caplog: pytest.LogCaptureFixture) -> None:
    async with watched_pair() as (watch, fd, ours, theirs), watched_pair() as (_, fd2, _, theirs2):
        calls: list[int] = []

        def fails(_: trio.CancelScope) -> None:
            calls.append(fd)
            raise RuntimeError("boom")

        assert watch.watch(fd, fails)
        await theirs.send(b"x")
        await trio.testing.wait_all_tasks_blocked()
        assert calls == [fd] and fd not in watch.watchers
        assert "readiness callback" in caplog.text
        assert await ours.recv(10) == b"x"  # (the edge was spent on the call)
        served = trio.Event()
        assert watch.watch(fd2, lambda scope: served.set())
        with trio.fail_after(5):  # the pool still serves every other socket
            await theirs2.send(b"y")
            await served.wait()


async def test_a_callback_that_must_wait_goes_on_in_its_task_while_another_leads() -> None:
    """The rest of a callback (a handler that suspended) runs in the task that called it, in
    the cancel scope it was given; meanwhile another task of the pool serves the sockets."""
    async with watched_pair() as (watch, fd, _, theirs), watched_pair() as (_, fd2, _, theirs2):
        release = trio.Event()
        events: list[str] = []
        scopes: list[trio.CancelScope] = []

        async def rest() -> None:
            events.append("waits")
            try:
                await release.wait()
            except trio.Cancelled:
                events.append("cancelled")
                raise
            events.append("released")

        def must_wait(scope: trio.CancelScope) -> Coroutine[Any, Any, None]:
            scopes.append(scope)
            return rest()

        for _ in range(2):  # the second time, in a task the pool kept
            assert watch.watch(fd, must_wait)
            await theirs.send(b"x")
            await trio.testing.wait_all_tasks_blocked()
            assert events[-1] == "waits"
            served: list[trio.CancelScope] = []
            assert watch.watch(fd2, served.append)
            await theirs2.send(b"y")
            await trio.testing.wait_all_tasks_blocked()
            assert len(served) == 1  # another task leads meanwhile
            if len(scopes) == 1:
                release.set()
                await trio.testing.wait_all_tasks_blocked()
                assert events == ["waits", "released"]
                release = trio.Event()
            else:
                scopes[-1].cancel()  # the scope it was given cancels the rest
                await trio.testing.wait_all_tasks_blocked()
                assert events == ["waits", "released", "waits", "cancelled"]


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


# --- a handler that waits while it is the connection's only task ----------------------------


async def read_responses(sock: trio.socket.SocketType, count: int) -> bytes:
    """Read until `count` responses (each ends with its body, ``!``) came."""
    got = b""
    while got.count(b"!") < count:
        chunk = await sock.recv(65536)
        assert chunk, f"closed after {got!r}"
        got += chunk
    return got


def get(target: str) -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


async def idle_connection(
    nursery: trio.Nursery, app: object, config: ServerConfig | None = None
) -> tuple[int, trio.socket.SocketType]:
    """A connection served with native `app`, idle (its socket watched, its task parked): the
    next request is read and served by the run's `Readiness` pool."""
    ours, theirs = trio.socket.socketpair()
    handler = native_handler(app)  # type: ignore[arg-type]
    nursery.start_soon(serve_connection, trio.SocketStream(ours), handler, config or ServerConfig())
    await trio.testing.wait_all_tasks_blocked()
    assert ours.fileno() in service().watchers
    return ours.fileno(), theirs


async def test_input_that_comes_while_the_reader_handler_waits_is_read() -> None:
    """/wait blocks the task that read it until /go is answered: /go must be read while
    /wait's handler waits, with no task waiting for input (the socket is watched)."""
    go = trio.Event()

    @native
    async def app(request: HttpRequest) -> Response:
        if request.target == b"/wait":
            await go.wait()
        else:
            go.set()
        return Response(request.target + b"!")

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            fd, theirs = await idle_connection(nursery, app)
            await theirs.send(get("/wait"))
            await trio.testing.wait_all_tasks_blocked()
            assert fd in service().watchers
            await theirs.send(get("/go"))
            got = await read_responses(theirs, 2)
            assert got.index(b"/wait!") < got.index(b"/go!")
            theirs.close()
            nursery.cancel_scope.cancel()


async def test_the_end_of_the_stream_reaches_a_waiting_handler_through_the_watch() -> None:
    ended = trio.Event()

    @native
    async def app(request: HttpRequest) -> Response:
        await request.wait_disconnect()
        ended.set()
        return Response(b"late!")

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            fd, theirs = await idle_connection(nursery, app)
            await theirs.send(get("/"))
            await trio.testing.wait_all_tasks_blocked()
            assert fd in service().watchers
            theirs.close()
            await ended.wait()
    assert fd not in service().watchers


async def test_a_request_whose_handler_waits_wakes_no_second_task(
    mock_clock: trio.testing.MockClock,
) -> None:
    """Each request: the pool's leader wakes for its input (and serves it in line), another
    task of the pool takes the lead as its handler waits, and its handler's task wakes once
    when its wait ends; nothing else (a task of the connection woken, a pass to gather).
    Time stands still (`mock_clock`), so no timer (the idle trim, the request timeouts'
    watchdog) wakes a task however slow the machine is."""

    @native
    async def app(request: HttpRequest) -> Response:
        await trio.lowlevel.checkpoint()
        return Response(b"ok!")

    class Steps(trio.abc.Instrument):
        def __init__(self) -> None:
            self.steps: Counter[str] = Counter()

        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            self.steps[task.name] += 1

    count = 40
    ours, theirs = trio.socket.socketpair()
    steps = Steps()
    with trio.fail_after(10), theirs:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                serve_connection, trio.SocketStream(ours), native_handler(app), ServerConfig()
            )
            await theirs.send(get("/"))  # (the first request spawns the tasks)
            await read_responses(theirs, 1)
            trio.lowlevel.add_instrument(steps)
            for _ in range(count):
                await theirs.send(get("/"))
                await read_responses(theirs, 1)
            trio.lowlevel.remove_instrument(steps)
            nursery.cancel_scope.cancel()
    me = trio.lowlevel.current_task().name
    pool = steps.steps.pop("pipeparse readiness", 0)
    connection = sum(n for name, n in steps.steps.items() if name != me)
    assert pool <= 3 * count + 2 and connection <= 2, (pool, steps.steps)


async def test_an_upload_larger_than_the_socket_buffers_is_read_to_its_end() -> None:
    """A receive that fills its buffer spends the edge with data still in the socket: the next
    receive must read before it waits. (It used to wait, when earlier receives had found
    nothing, for an edge the blocked client could not cause: an upload with ``Expect:
    100-continue`` to a handler that sleeps first stopped after about 2.8 MB.)"""
    body = os.urandom(5_000_000)
    head = (
        b"POST /?sleep_ms=5 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
        b"Expect: 100-continue\r\n\r\n" % len(body)
    )
    for interface in ("native", "asgi"):
        handler = resolve_app(echo, interface).handler
        for _ in range(5):  # (it failed in most tries, not all)
            ours, theirs = trio.socket.socketpair()
            with trio.fail_after(20), theirs:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(
                        serve_connection, trio.SocketStream(ours), handler, ServerConfig()
                    )
                    await theirs.send(head)
                    assert (await theirs.recv(100)).startswith(b"HTTP/1.1 100 Continue")
                    view = memoryview(body)
                    while view:
                        view = view[await theirs.send(view[:65536]) :]
                    answer = b""
                    while b'"body_sha256"' not in answer or not answer.endswith(b"}"):
                        chunk = await theirs.recv(65536)
                        assert chunk, answer
                        answer += chunk
                    assert b'"body_len":5000000' in answer
                    nursery.cancel_scope.cancel()


# --- serving in the pool's tasks -------------------------------------------------------------


async def test_a_write_the_socket_cannot_take_goes_on_in_a_task_of_the_connection() -> None:
    """The pool's leader serves every connection: it must not wait for one client's socket. A
    response larger than the socket buffers is finished by a task of the connection, whole,
    and the pool serves other connections meanwhile."""
    body = os.urandom(4 * 1024 * 1024)

    @native
    async def app(request: HttpRequest) -> Response:
        return Response(body if request.target == b"/big" else b"small!")

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            _, slow = await idle_connection(nursery, app)
            _, other = await idle_connection(nursery, app)
            with slow, other:
                await slow.send(get("/big"))  # and does not read yet
                await trio.testing.wait_all_tasks_blocked()
                await other.send(get("/"))
                assert (await read_responses(other, 1)).endswith(b"small!")
                got = b""
                while len(got) < len(body) or not got.endswith(body[-100:]):
                    got += await slow.recv(1 << 20)
                assert got.endswith(body) and got.startswith(b"HTTP/1.1 200 ")
                await slow.send(get("/"))  # the connection goes on
                assert (await read_responses(slow, 1)).endswith(b"small!")
                nursery.cancel_scope.cancel()


async def test_a_connection_closes_only_once_the_handler_in_a_pool_task_answered() -> None:
    """The client sends a request and half-closes: the protocol answers it, then closes. The
    handler runs in a pool task, outside the connection's nursery: the stream must not be
    closed under it."""
    go = trio.Event()

    @native
    async def app(request: HttpRequest) -> Response:
        await go.wait()
        return Response(b"late!")

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            _, theirs = await idle_connection(nursery, app)
            with theirs:
                await theirs.send(get("/"))
                theirs.shutdown(socket.SHUT_WR)
                await trio.testing.wait_all_tasks_blocked()
                go.set()
                got = b""
                while chunk := await theirs.recv(4096):
                    got += chunk
        assert got.startswith(b"HTTP/1.1 200 ") and got.endswith(b"late!")


async def test_the_end_of_a_connection_cancels_its_handler_in_a_pool_task() -> None:
    """A server that stops cancels its connections: a handler that a pool task runs is not in
    the connection's nursery, so the connection cancels it itself."""
    events: list[str] = []

    @native
    async def app(request: HttpRequest) -> Response:
        try:
            await trio.sleep_forever()
        finally:
            events.append("ended")

    with trio.fail_after(10):
        async with trio.open_nursery() as outer:
            async with trio.open_nursery() as nursery:
                _, theirs = await idle_connection(nursery, app)
                await theirs.send(get("/"))
                await trio.testing.wait_all_tasks_blocked()
                assert events == []  # it runs, in a pool task
                nursery.cancel_scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert events == ["ended"]
            theirs.close()
            outer.cancel_scope.cancel()


async def test_a_request_timeout_cancels_a_handler_in_a_pool_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events: list[str] = []

    @native
    async def app(request: HttpRequest) -> Response:
        if request.target == b"/slow":
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                events.append("cancelled")
                raise
        if request.target == b"/nap":
            await trio.sleep(1)
        return Response(b"fast!")

    async with trio.open_nursery() as nursery:
        _, theirs = await idle_connection(nursery, app, ServerConfig(request_timeout=5))
        with theirs:
            await theirs.send(get("/slow"))
            got = b""
            while b"503" not in got:
                got += await theirs.recv(4096)
            await trio.testing.wait_all_tasks_blocked()
            assert events == ["cancelled"]
            await theirs.send(get("/"))  # the connection goes on
            assert (await read_responses(theirs, 1)).endswith(b"fast!")
            for _ in range(4):  # and the pool (the task whose scope was cancelled too)
                await theirs.send(get("/nap"))
                assert (await read_responses(theirs, 1)).endswith(b"fast!")
            nursery.cancel_scope.cancel()


async def test_a_first_streamed_piece_over_the_mark_served_in_line_survives_a_client_gone() -> None:
    """A handler's first step, run in line by the pool's leader while it performs, streams
    more than the output's high-water mark: it must yield, not park to wait for the task that
    performs (itself: it would be woken from a lot it had not parked in yet, and the
    connection's end then broke trio's bookkeeping, in about half the tries)."""
    big = b"x" * (100 * 1024)

    async def app(request: HttpRequest, sink: ResponseSink) -> None:
        await sink.start(200, ())
        await sink.send(big, more=True)
        await sink.send(b"end", more=False)

    for close_early in (False, *[True] * 12):
        ours, theirs = trio.socket.socketpair()
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve_connection, trio.SocketStream(ours), app, ServerConfig())
                await trio.testing.wait_all_tasks_blocked()  # idle: the pool serves it
                await theirs.send(get("/"))
                if not close_early:
                    got = b""
                    while not got.endswith(b"end\r\n0\r\n\r\n"):
                        got += await theirs.recv(1 << 20)
                    assert big in got
                theirs.close()
                await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()


async def test_a_cancelled_handler_whose_nursery_fails_ends_its_connection_not_the_run(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Run in a pool task (a system task: what escapes it ends the whole trio run), a handler
    whose nursery raises while the request timeout cancels it: the error is logged and the
    client still gets its 503."""

    async def child() -> None:
        try:
            await trio.sleep_forever()
        finally:
            raise ValueError("cleanup failed")

    @native
    async def app(request: HttpRequest) -> Response:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child)
            await trio.sleep_forever()
        return Response(b"never")

    async with trio.open_nursery() as nursery:
        _, theirs = await idle_connection(nursery, app, ServerConfig(request_timeout=1))
        with theirs:
            await theirs.send(get("/"))
            assert (await theirs.recv(4096)).startswith(b"HTTP/1.1 503 ")
            await trio.testing.wait_all_tasks_blocked()
            assert "cleanup failed" in caplog.text
            nursery.cancel_scope.cancel()


async def test_a_failure_while_the_pool_serves_a_connection_ends_that_connection(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in the path the pool's leader runs in line must not leave the connection with no
    task and no watch (nothing would read it again, and no timeout would end it): it ends,
    as it would in a task of its own."""

    class Flaky(ServerConnection):
        def received(self, n: int) -> None:
            super().received(n)
            raise RuntimeError("boom")

    ours, theirs = trio.socket.socketpair()
    handler = resolve_app(plaintext, "native").handler
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            partial(serve_connection, connection=Flaky), trio.SocketStream(ours), handler,
            ServerConfig(),
        )  # fmt: skip
        await trio.testing.wait_all_tasks_blocked()  # idle: the pool serves it
        with theirs, trio.fail_after(10):
            await theirs.send(get("/plaintext"))
            assert await theirs.recv(4096) == b""  # closed (well before its keep-alive timeout)
    assert "boom" in caplog.text
