"""Limits on load over real sockets: --limit-concurrency, --limit-max-requests, --backlog.

Strategy: `pipeparse.serve` on loopback in this process, with an ASGI app whose ``/block``
requests wait for an event the test sets, so the load (connections plus requests in flight) is
exactly what the test built when the next request arrives. Nothing waits on a clock: every
wait is for a response, an EOF, or `wait_all_tasks_blocked` (every server task has settled).
The workers' replacement after --limit-max-requests runs the real command in a subprocess.
"""

from __future__ import annotations

import re
import socket
import struct
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import pipeparse
from pipeparse.servers import listen, sockets
from pipeparse.servers.admission import Admission
from pipeparse.servers.config import ServerConfig
from pipeparse.servers.listen import Server
from tests.loop_servers import (
    LOOPS,
    LoopEvent,
    parametrize_engine_loops,
    parametrize_loops,
    serving,
)
from tests.test_cli_serve import (
    SAFETY,
    WORKER_STARTED,
    http_get,
    listening,
    serve_command,
    started,
    wait_for,
)

ENGINES = ("pipeparse", "h11")
GET = "GET {} HTTP/1.1\r\nHost: t\r\n\r\n"


class BlockingApp:
    """``/block`` waits until `release` is set (`entered` tells one is waiting, `entered_twice`
    two); anything else answers at once. It serves on any loop (`LoopEvent`)."""

    def __init__(self) -> None:
        self.entered = LoopEvent()
        self.entered_twice = LoopEvent()
        self.release = LoopEvent()
        self.blocked = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/block":
            self.blocked += 1
            (self.entered if self.blocked == 1 else self.entered_twice).set()
            await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok " + scope["path"].encode()})


async def ask(stream: trio.SocketStream, target: str) -> bytes:
    """Send one request and read one whole response (the app's bodies have a length)."""
    await stream.send_all(GET.format(target).encode())
    data = b""
    with trio.fail_after(SAFETY):
        while True:
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                if length and len(body) >= int(length.group(1)):
                    return data
            chunk = await stream.receive_some()
            assert chunk, f"closed before a whole response: {data!r}"
            data += chunk


async def read_to_eof(stream: trio.SocketStream) -> bytes:
    data = b""
    with trio.fail_after(SAFETY):
        while chunk := await stream.receive_some():
            data += chunk
    return data


@parametrize_engine_loops
async def test_limit_concurrency_answers_503_then_recovers(engine: str, loop: str) -> None:
    """Limit 3: one connection with a blocked request is a load of 2; a second connection's
    request would make 4, so it gets 503 and Connection: close. Once the blocked request is
    answered and the refused connection is gone, a new connection is served again."""
    app = BlockingApp()
    async with serving(loop, app, engine=engine, limit_concurrency=3) as server:
        first = await trio.open_tcp_stream("127.0.0.1", server.port)
        await first.send_all(GET.format("/block").encode())
        await app.entered.wait()

        for _ in range(3):  # refused, again and again: the server stays responsive
            refused = await trio.open_tcp_stream("127.0.0.1", server.port)
            await refused.send_all(GET.format("/x").encode())
            answer = await read_to_eof(refused)  # the server closes it after the 503
            assert answer.startswith(b"HTTP/1.1 503 ")
            assert re.search(rb"(?i)\r\nconnection: close\r\n", answer)
            assert answer.count(b"HTTP/1.1") == 1
            await refused.aclose()

        app.release.set()
        with trio.fail_after(SAFETY):
            data = b""
            while b"ok /block" not in data:
                data += await first.receive_some()
        assert data.startswith(b"HTTP/1.1 200 ")
        await server.settled(1)  # the refused connections are closed

        second = await trio.open_tcp_stream("127.0.0.1", server.port)
        answer = await ask(second, "/y")  # load: 2 connections + this request = 3
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"ok /y")
        assert (await ask(first, "/z")).endswith(b"ok /z")  # keep-alive still works
        await first.aclose()
        await second.aclose()


@parametrize_loops
async def test_limit_concurrency_counts_the_requests_one_connection_pipelines(loop: str) -> None:
    """Limit 3, one connection pipelining four blocking GETs: two run (1 connection + 2 in
    flight = 3), the third is answered 503 after them, in order, and the fourth is never
    processed (the 503 closes the connection)."""
    app = BlockingApp()
    async with serving(loop, app, limit_concurrency=3) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(b"".join(GET.format(f"/block?{i}").encode() for i in range(4)))
        await app.entered_twice.wait()
        await server.settled(1)  # (trio: every task has settled)
        app.release.set()
        answer = await read_to_eof(stream)
        statuses = re.findall(rb"HTTP/1.1 (\d+) ", answer)
        assert statuses == [b"200", b"200", b"503"]
        assert answer.count(b"ok /block") == 2
        await stream.aclose()


def test_admission_counts_connections_and_requests_in_flight() -> None:
    stops: list[str] = []
    admission = Admission(3, None, lambda: stops.append("stop"))
    admission.connection_opened()
    assert admission.admit()  # 1 connection + this request
    admission.blocked()
    assert admission.admit()  # 1 + 1 in flight + this one
    admission.connection_opened()
    assert not admission.admit() and admission.refused == 1
    admission.unblocked()
    assert admission.admit()
    admission.connection_closed()
    admission.connection_closed()
    assert admission.requests == 3 and stops == []


def test_admission_asks_for_a_shutdown_once_at_the_request_limit() -> None:
    stops: list[str] = []
    admission = Admission(None, 2, lambda: stops.append("stop"))
    assert admission.admit() and stops == []
    assert admission.admit() and stops == ["stop"]
    assert admission.admit() and stops == ["stop"]  # (requests already read are served)


@parametrize_engine_loops
async def test_limit_max_requests_shuts_a_single_process_down_gracefully(
    engine: str, loop: str
) -> None:
    app = BlockingApp()
    with trio.fail_after(SAFETY):
        async with serving(loop, app, engine=engine, limit_max_requests=3) as server:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            assert (await ask(stream, "/1")).endswith(b"ok /1")
            assert (await ask(stream, "/2")).endswith(b"ok /2")
            assert not server.closing
            last = await ask(stream, "/3")  # the third: answered, and the server stops
            assert last.startswith(b"HTTP/1.1 200 ") and last.endswith(b"ok /3")
            assert await read_to_eof(stream) == b""  # then the idle connection is closed
            await stream.aclose()
            await server.stopped()  # (asyncio: its thread ends without a shutdown from here)
        # trio: serve() returned by itself, the nursery is done without anyone cancelling it
    assert server.closing


@pytest.mark.parametrize("loop", ["trio", LOOPS[-1]])
def test_limit_max_requests_replaces_workers(tmp_path: Path, loop: str) -> None:
    log: list[str] = []
    command = serve_command("--workers=2", "--limit-max-requests=2", f"--loop={loop}")
    with started(command, cwd=tmp_path) as proc:
        port = int(listening(proc).group(2))
        pids = {int(wait_for(proc.stderr, WORKER_STARTED, log).group(1)) for _ in range(2)}
        assert pids == {1, 2}
        for _ in range(5):  # 5 requests > 2 workers x 2: at least one worker is replaced
            assert http_get(port) == (200, b"Hello, World!")
        wait_for(proc.stderr, re.compile(r"worker \d exited \(exit code 0\): restarting"), log)
        wait_for(proc.stderr, WORKER_STARTED, log)
        assert http_get(port) == (200, b"Hello, World!")
        proc.terminate()
        assert proc.wait(SAFETY) == 0, log


def _listen_backlog(sock: socket.socket) -> int:
    """The backlog of a listening socket (Linux: TCP_INFO's tcpi_sacked holds it)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return int(struct.unpack_from("8B6I", info)[13])


@pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="needs Linux TCP_INFO")
def test_backlog_sets_the_listen_queue() -> None:
    with listen.bind_socket("127.0.0.1", 0, backlog=37) as sock:
        assert _listen_backlog(sock) == 37
    with listen.bind_socket("127.0.0.1", 0) as sock:
        assert _listen_backlog(sock) == 2048 == ServerConfig().backlog


async def test_serve_listens_with_the_configured_backlog(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    bind = listen.bind_socket

    def recording_bind(host: str, port: int, **kwargs: Any) -> socket.socket:
        seen.append(kwargs["backlog"])
        return bind(host, port, **kwargs)

    monkeypatch.setattr(sockets, "bind_socket", recording_bind)
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(
            partial(pipeparse.serve, "plaintext", port=0, backlog=64)
        )
        server.shutdown()
    assert seen == [64]
