"""pipeparse.servers.listen in one process: accepting, isolation of connections, shutdown, serve().

Most tests drive `serve_listeners` with a fake listener (a channel of memory streams, or of
OSErrors to raise) and a stand-in engine whose behaviour each client picks with its first line,
so nothing depends on a real engine. Time is trio's virtual clock (`autojump_clock`): a test
that checks a pause or a timeout reads `trio.current_time()`, never a wall clock. A few tests
use real loopback sockets: `pipeparse.serve` with a real engine, TCP_NODELAY, SO_REUSEPORT.
"""

from __future__ import annotations

import errno
import gc
import itertools
import logging
import math
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

import pipeparse
from pipeparse import Limits
from pipeparse.servers import listen
from pipeparse.servers import running as running_module
from pipeparse.servers.apps import plaintext
from pipeparse.servers.config import ServerConfig, config_from_json, config_to_json
from pipeparse.servers.handlers import resolve_app
from pipeparse.servers.listen import Server, ShutdownSignal, current_shutdown, serve_listeners
from pipeparse.servers.protocol import Handler, ResponseSink
from tests.loop_servers import parametrize_loops, serving

# Engines the real-socket tests run with (the lead adds "pipeparse" when it is ready).
ENGINES = ("pipeparse", "h11")

CONFIG = ServerConfig(shutdown_timeout=5.0)


class FakeListener(trio.abc.Listener[trio.abc.Stream]):
    """`accept` hands out what was queued: a server-side memory stream, or an OSError to raise."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[Any](math.inf)
        self.accept_times: list[float] = []
        self.closed = False

    def connect(self) -> trio.testing.MemoryStapledStream:  # type: ignore[name-defined]
        client, server = trio.testing.memory_stream_pair()
        self._send.send_nowait(server)
        return client

    def fail(self, exc: OSError) -> None:
        self._send.send_nowait(exc)

    async def accept(self) -> trio.abc.Stream:
        if self.closed:
            raise trio.ClosedResourceError
        self.accept_times.append(trio.current_time())
        item = await self._receive.receive()
        if isinstance(item, BaseException):
            raise item
        stream: trio.abc.Stream = item
        return stream

    async def aclose(self) -> None:
        self.closed = True
        await trio.lowlevel.checkpoint()


class StandIn:
    """A stand-in engine. The client's first line says what the connection does:

    ``echo X`` answers ``X``; ``boom`` raises ValueError; ``group`` raises an ExceptionGroup
    from a nursery; ``hold`` waits for `release` and then answers ``done`` (recording whether
    it was cancelled instead).
    """

    def __init__(self) -> None:
        self.release = trio.Event()
        self.holding = 0
        self.held = trio.Event()
        self.outcomes: list[str] = []
        self.signals: list[ShutdownSignal] = []

    async def __call__(
        self,
        stream: trio.abc.Stream,
        handler: Handler,
        config: ServerConfig,
        client: tuple[str, int] | None = None,
    ) -> None:
        self.signals.append(current_shutdown())
        line = b""
        while not line.endswith(b"\n"):
            data = await stream.receive_some(1)
            if not data:
                return
            line += data
        command, _, arg = line.strip().partition(b" ")
        if command == b"echo":
            await stream.send_all(arg + b"\n")
        elif command == b"boom":
            raise ValueError("the stand-in engine fails on purpose")
        elif command == b"group":
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_fail)
        elif command == b"hold":
            self.holding += 1
            self.held.set()
            try:
                await self.release.wait()
            except trio.Cancelled:
                self.outcomes.append("cancelled")
                raise
            self.outcomes.append("done")
            await stream.send_all(b"done\n")


async def _fail() -> None:
    raise RuntimeError("a task of the connection fails")


async def _unused_handler(request: pipeparse.HttpRequest, sink: ResponseSink) -> None:
    raise AssertionError("the stand-in engine never calls the handler")


async def receive_all(stream: trio.abc.ReceiveStream) -> bytes:
    out = b""
    while data := await stream.receive_some():
        out += data
    return out


@asynccontextmanager
async def running(
    engine: StandIn, listener: FakeListener, config: ServerConfig = CONFIG
) -> AsyncIterator[tuple[Server, list[str]]]:
    """Run `serve_listeners` in a nursery; yields the server and a list that gets "returned"."""
    ended: list[str] = []

    async def serve(task_status: trio.TaskStatus[Server]) -> None:
        await serve_listeners(_unused_handler, [listener], engine, config, task_status=task_status)
        ended.append("returned")

    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(serve)
        yield server, ended
        nursery.cancel_scope.cancel()


async def test_serves_connections_and_closes_every_stream() -> None:
    engine, listener = StandIn(), FakeListener()
    async with running(engine, listener):
        first, second = listener.connect(), listener.connect()
        await first.send_all(b"echo one\n")
        await second.send_all(b"echo two\n")
        # The stand-in never closes its stream: EOF here means the server closed it.
        assert await receive_all(first) == b"one\n"
        assert await receive_all(second) == b"two\n"


async def test_a_failing_connection_is_logged_and_the_server_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine, listener = StandIn(), FakeListener()
    with caplog.at_level(logging.ERROR, logger="pipeparse.server"):
        async with running(engine, listener) as (server, ended):
            for command in (b"boom\n", b"group\n"):
                failing = listener.connect()
                await failing.send_all(command)
                assert await receive_all(failing) == b""  # closed by the server
            ok = listener.connect()
            await ok.send_all(b"echo still here\n")
            assert await receive_all(ok) == b"still here\n"
            assert not ended and not server.closing
    errors = [r for r in caplog.records if r.name == "pipeparse.server"]
    assert [type(r.exc_info[1]) for r in errors if r.exc_info] == [ValueError, RuntimeError]


async def test_accept_errors_back_off_and_accepting_goes_on(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    engine, listener = StandIn(), FakeListener()
    with caplog.at_level(logging.ERROR, logger="pipeparse.server"):
        async with running(engine, listener):
            codes = (errno.EMFILE, errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.EMFILE)
            for code in (*codes, errno.ECONNABORTED):
                listener.fail(OSError(code, "simulated"))
            client = listener.connect()
            await client.send_all(b"echo served\n")
            assert await receive_all(client) == b"served\n"
            listener.fail(OSError(errno.EMFILE, "simulated"))  # a success reset the pause
            client = listener.connect()
            await client.send_all(b"echo again\n")
            assert await receive_all(client) == b"again\n"
    times = listener.accept_times
    pauses = [round(b - a, 6) for a, b in itertools.pairwise(times)]
    # virtual time: after each error a pause of 0.1 s doubling up to 1 s; a success resets it
    assert pauses == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 0.0, 0.1, 0.0]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("out of resources" in m for m in messages) == 6
    assert sum("accept failed" in m for m in messages) == 1


async def test_shutdown_stops_accepting_and_lets_connections_finish() -> None:
    engine, listener = StandIn(), FakeListener()
    async with running(engine, listener) as (server, ended):
        client = listener.connect()
        await client.send_all(b"hold\n")
        await engine.held.wait()
        server.shutdown()
        await trio.testing.wait_all_tasks_blocked()
        assert listener.closed and server.closing and not ended
        assert engine.signals[0].is_set() and engine.signals[0] is server.shutdown_signal
        engine.release.set()
        assert await receive_all(client) == b"done\n"
        while not ended:
            await trio.sleep(0)
    assert engine.outcomes == ["done"]


async def test_shutdown_cancels_connections_after_shutdown_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine, listener = StandIn(), FakeListener()
    config = ServerConfig(shutdown_timeout=7.0)
    async with running(engine, listener, config) as (server, ended):
        listener.connect()
        await listener.connect().send_all(b"hold\n")
        await engine.held.wait()
        start = trio.current_time()
        server.shutdown()
        while not ended:
            await trio.sleep(0.5)
        assert trio.current_time() - start == pytest.approx(7.0, abs=0.5)
        assert server.shutdown_signal.deadline == pytest.approx(start + 7.0)
    assert engine.outcomes == ["cancelled"]


async def test_abort_cancels_connections_at_once(autojump_clock: trio.testing.MockClock) -> None:
    engine, listener = StandIn(), FakeListener()
    async with running(engine, listener) as (server, ended):
        await listener.connect().send_all(b"hold\n")
        await engine.held.wait()
        start = trio.current_time()
        server.abort()
        while not ended:
            await trio.sleep(0)
        assert trio.current_time() == start
    assert engine.outcomes == ["cancelled"]


async def test_a_cancelled_caller_still_gets_a_graceful_shutdown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine, listener = StandIn(), FakeListener()
    server_box: list[Server] = []

    async def serve(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            await serve_listeners(
                _unused_handler,
                [listener],
                engine,
                CONFIG,
                task_status=_Capture(server_box),
            )

    async with trio.open_nursery() as nursery:
        scope: trio.CancelScope = await nursery.start(serve)
        client = listener.connect()
        await client.send_all(b"hold\n")
        await engine.held.wait()
        scope.cancel()  # the caller cancels serve_listeners
        await trio.testing.wait_all_tasks_blocked()
        assert listener.closed and server_box[0].shutdown_signal.is_set()
        await trio.sleep(1.0)  # less than shutdown_timeout: the connection is still alive
        engine.release.set()
        assert await receive_all(client) == b"done\n"
    assert engine.outcomes == ["done"]


class _Capture(trio.TaskStatus[Server]):
    """A task_status that keeps what is reported."""

    def __init__(self, box: list[Server]) -> None:
        self.box = box

    def started(self, value: Server | None = None) -> None:
        assert value is not None
        self.box.append(value)


def test_current_shutdown_outside_a_server_is_never_set() -> None:
    assert not current_shutdown().is_set()
    assert current_shutdown().deadline == math.inf


def test_log_access_writes_one_line_on_pipeparse_access(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=listen.ACCESS_LOGGER):
        listen.log_access(("127.0.0.1", 5000), b"GET", b"/plaintext?a=1", 200, 13)
        listen.log_access(None, b"POST", b"/", 413, 0)
    assert [r.getMessage() for r in caplog.records] == [
        '127.0.0.1:5000 "GET /plaintext?a=1" 200 13',
        '- "POST /" 413 0',
    ]


@parametrize_loops
@pytest.mark.parametrize("interface", ["native", "asgi"])
async def test_the_access_log_is_the_same_on_every_loop(
    loop: str, interface: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Over a real socket: one line per response, the peer's address, the body bytes sent (none
    for HEAD), and a protocol error's 400 as ``"- -"``."""
    caplog.set_level(logging.INFO, logger=listen.ACCESS_LOGGER)
    async with serving(loop, "plaintext", interface=interface, access_log=True) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            host, port = stream.socket.getsockname()[:2]
            peer = f"{host}:{port}"
            await stream.send_all(
                b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"
                b"HEAD /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"
                b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n"
                b"BAD\r\n\r\n"
            )
            while await stream.receive_some():
                pass
    lines = [r.getMessage() for r in caplog.records if r.name == listen.ACCESS_LOGGER]
    assert lines[:3] == [
        f'{peer} "GET /plaintext" 200 13',
        f'{peer} "HEAD /plaintext" 200 0',
        f'{peer} "GET /nope" 404 9',
    ]
    assert len(lines) == 4 and lines[3].startswith(f'{peer} "- -" 400 ')


def test_configure_logging_sets_levels_and_does_not_stack_handlers() -> None:
    logger = logging.getLogger("pipeparse")
    access = logging.getLogger(listen.ACCESS_LOGGER)
    saved = (logger.level, logger.propagate, list(logger.handlers), access.level)
    try:
        listen.configure_logging("warning", access_log=False)
        listen.configure_logging("debug", access_log=True)
        ours = [h for h in logger.handlers if getattr(h, "_pipeparse", False)]
        assert len(ours) == 1
        assert logger.level == logging.DEBUG and access.level == logging.INFO
        listen.configure_logging("error", access_log=False)
        assert logger.level == logging.ERROR and not access.isEnabledFor(logging.INFO)
    finally:
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        logger.handlers[:] = saved[2]
        access.setLevel(saved[3])


def test_make_config_routes_limits_and_rejects_unknown_names() -> None:
    config = listen.make_config(port=0, max_body_size=1024, engine="h11")
    assert (config.port, config.engine, config.limits.max_body_size) == (0, "h11", 1024)
    assert config.limits.max_headers == Limits().max_headers
    base = ServerConfig(max_in_flight=3)
    assert listen.make_config(base) is base
    assert listen.make_config(base, port=1).max_in_flight == 3
    with pytest.raises(TypeError, match="max_bdy_size"):
        listen.make_config(max_bdy_size=1)
    with pytest.raises(TypeError, match="not both"):
        listen.make_config(limits=Limits(), max_headers=5)
    with pytest.raises(ValueError, match="max_in_flight"):
        listen.make_config(max_in_flight=0)


def test_gc_threshold_holds_for_the_block_and_is_restored() -> None:
    before = gc.get_threshold()
    with listen.gc_threshold(before[0] + 1234):
        assert gc.get_threshold() == (before[0] + 1234, *before[1:])
    assert gc.get_threshold() == before
    with listen.gc_threshold(0):  # 0: the interpreter's setting stays
        assert gc.get_threshold() == before
    with pytest.raises(ValueError, match="gc_threshold"):
        ServerConfig(gc_threshold=-1)


def test_run_tunes_the_collector_only_while_it_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    def record(*args: Any) -> None:
        seen.append(gc.get_threshold()[0])

    monkeypatch.setattr(running_module, "_unwrap_run", record)
    before = gc.get_threshold()
    assert listen.run("plaintext", gc_threshold=before[0] + 99) == 0
    assert seen == [before[0] + 99]
    assert gc.get_threshold() == before


def test_config_survives_the_trip_to_a_worker() -> None:
    config = listen.make_config(
        port=0, server_name=b"x\xe9", max_head_size=2048, shutdown_timeout=1.5, access_log=True
    )
    wire = config_to_json(config)
    import json

    assert config_from_json(json.loads(json.dumps(wire))) == config


def test_bind_socket_reports_a_busy_address_and_sets_reuse_port() -> None:
    with listen.bind_socket("127.0.0.1", 0, reuse_port=True) as sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
        port = sock.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}") as info:
            listen.bind_socket("127.0.0.1", port)
        assert info.value.errno == errno.EADDRINUSE
    with listen.bind_socket("127.0.0.1", 0) as sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0


# --- real sockets ---------------------------------------------------------------------------


async def test_accepted_sockets_get_tcp_nodelay() -> None:
    seen: list[int] = []

    async def engine(
        stream: trio.abc.Stream,
        handler: Handler,
        config: ServerConfig,
        client: tuple[str, int] | None = None,
    ) -> None:
        assert isinstance(stream, trio.SocketStream)
        seen.append(stream.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        assert client is not None and client[0] == "127.0.0.1"
        await stream.send_all(b"x")

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_listeners, _unused_handler, listeners, engine, CONFIG)
        assert server.port != 0 and server.url == f"http://127.0.0.1:{server.port}"
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        assert await receive_all(stream) == b"x"
        await stream.aclose()
        server.shutdown()
    assert seen == [1]


@pytest.mark.parametrize("engine", ["pipeparse", "h11"])
async def test_a_graceful_stop_serves_the_connections_already_waiting(engine: str) -> None:
    """Clients that connected before the server accepted them wait in the backlog; a graceful
    stop accepts them before closing the listener, which would reset them, and the engine
    answers what they had already sent."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    clients = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(3)]  # queued
    for client in clients:
        await client.send_all(b"GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    server = Server("127.0.0.1", port, CONFIG)
    server.shutdown()  # before it ever accepts: only the stop's own accepts can serve them
    handler = resolve_app(plaintext, "native").handler
    serve_connection = listen.load_engine(engine)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                partial(
                    serve_listeners, handler, listeners, serve_connection, CONFIG, server=server
                )
            )
            for client in clients:
                async with client:
                    response = await receive_all(client)
                assert response.startswith(b"HTTP/1.1 200 "), response
                assert response.endswith(b"Hello, World!")


async def http_get(port: int, target: str) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
        )
        return await receive_all(stream)


@pytest.mark.parametrize("engine", ENGINES)
async def test_pipeparse_serve_reports_the_port_and_serves(engine: str) -> None:
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(
            partial(pipeparse.serve, "plaintext", port=0, engine=engine)
        )
        assert server.port != 0 and server.host == "127.0.0.1"
        assert server.interface == "native"
        response = await http_get(server.port, "/plaintext")
        assert response.startswith(b"HTTP/1.1 200 ")
        assert response.endswith(b"\r\n\r\nHello, World!")
        server.shutdown()


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_client_that_waits_for_each_answer_keeps_being_served(engine: str) -> None:
    """Over a real socket, one request at a time on one connection: the engine's attempts to
    read at once find nothing every time (it stops trying after two, retries now and then),
    and every request is still read and answered, with pipelined batches in between."""
    request = b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(
            partial(pipeparse.serve, "plaintext", port=0, engine=engine)
        )
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            received = b""
            for batch in [1] * 20 + [16] + [1] * 10 + [3]:
                await stream.send_all(request * batch)
                with trio.fail_after(10):
                    while received.count(b"Hello, World!") < batch:
                        chunk = await stream.receive_some()
                        assert chunk, "the server closed the connection"
                        received += chunk
                assert received.count(b"HTTP/1.1 200 ") == batch
                received = b""
        server.shutdown()


@pytest.mark.parametrize("engine", ENGINES)
async def test_serve_runs_the_asgi_lifespan_around_serving(engine: str) -> None:
    events: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    events.append("startup")
                    await send({"type": "lifespan.startup.complete"})
                else:
                    events.append("shutdown")
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        events.append("request")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(
            partial(pipeparse.serve, app, port=0, engine=engine, shutdown_timeout=2)
        )
        assert events == ["startup"] and server.interface == "asgi"
        assert (await http_get(server.port, "/")).startswith(b"HTTP/1.1 204 ")
        nursery.cancel_scope.cancel()  # cancelling serve also shuts down gracefully
    assert events == ["startup", "request", "shutdown"]


async def test_serve_refuses_workers_and_unknown_settings() -> None:
    with pytest.raises(ValueError, match="workers"):
        await pipeparse.serve("plaintext", workers=2)
    with pytest.raises(TypeError, match="prot"):
        await pipeparse.serve("plaintext", prot=0)
