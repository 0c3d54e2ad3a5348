"""The asyncio driver over real sockets, on asyncio and on uvloop (when installed).

These are plain sync tests that run their own loop (`asyncio.Runner`), so the suite's trio mode
does not touch them.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest

import pipeparse
from pipeparse import HttpRequest, Response
from pipeparse.servers.asyncio_server import AsyncioServer, new_event_loop
from pipeparse.servers.config import ServerConfig
from tests.server_harness import parse_responses, request
from tests.test_smuggling import AFTER, BAD, GOOD

LOOPS = ["asyncio"]
try:
    import uvloop  # noqa: F401

    LOOPS.append("uvloop")
except ImportError:
    pass

T = TypeVar("T")
parametrize_loops = pytest.mark.parametrize("loop", LOOPS)


def run(loop: str, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    with asyncio.Runner(loop_factory=lambda: new_event_loop(loop)) as runner:
        return runner.run(asyncio.wait_for(main(), 20))


async def talk(port: int, data: bytes, half_close: bool = False) -> bytes:
    """Send `data`, then read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    if half_close:
        writer.write_eof()
    out = await reader.read()
    writer.close()
    return out


async def serving(
    app: object,
    body: Callable[[AsyncioServer], Awaitable[T]],
    **options: Any,
) -> T:
    server = await pipeparse.start_asyncio_server(app, host="127.0.0.1", port=0, **options)
    try:
        return await body(server)
    finally:
        server.shutdown()
        await server.wait_closed()


@pipeparse.native
async def sleepy(req: HttpRequest) -> Response:
    """Sleeps ``?ms`` on asyncio, answers its target (and its body's length)."""
    target = req.target.decode()
    if "ms=" in target:
        await asyncio.sleep(int(target.split("ms=")[1]) / 1000)
    body = await req.read()
    return Response(f"{target} {len(body)}".encode())


@parametrize_loops
def test_pipelined_answers_leave_in_request_order(loop: str) -> None:
    targets = ["/a?ms=30", "/b", "/c?ms=10", "/d", "/e?ms=1"]
    data = b"".join(request("GET", t) for t in targets)
    data += request("GET", "/last", headers=[("Connection", "close")])

    async def main() -> bytes:
        return await serving(sleepy, lambda s: talk(s.port, data))

    responses = parse_responses(run(loop, main))
    assert [r.body for r in responses] == [f"{t} 0".encode() for t in [*targets, "/last"]]
    assert responses[-1].header("connection") == b"close"


@parametrize_loops
def test_a_protocol_error_is_answered_after_the_valid_requests_then_closed(loop: str) -> None:
    data = request("GET", "/1") + request("GET", "/2?ms=5") + b"GET / HTTP/1.1\r\n\r\n"
    data += request("GET", "/never")

    async def main() -> bytes:
        return await serving(sleepy, lambda s: talk(s.port, data))

    out = run(loop, main)
    responses = parse_responses(out)
    assert [r.status for r in responses] == [200, 200, 400]
    assert b"/never" not in out


@parametrize_loops
def test_connection_close_ends_the_connection_and_nothing_after_it_runs(loop: str) -> None:
    data = request("GET", "/1", headers=[("Connection", "close")]) + request("GET", "/never")

    async def main() -> bytes:
        return await serving(sleepy, lambda s: talk(s.port, data))

    out = run(loop, main)
    assert [r.body for r in parse_responses(out)] == [b"/1 0"]


@parametrize_loops
def test_http10_without_keep_alive_closes(loop: str) -> None:
    async def main() -> bytes:
        return await serving(sleepy, lambda s: talk(s.port, request("GET", "/x", version="1.0")))

    (response,) = parse_responses(run(loop, main))
    assert response.status == 200 and response.header("connection") == b"close"


@parametrize_loops
def test_post_bodies_pipelined_and_a_large_body_streamed(loop: str) -> None:
    big = bytes(range(256)) * 4096  # 1 MiB: more than the buffer, it streams
    data = request("POST", "/small", body=b"hello") + request("POST", "/big", body=big)
    data += request("POST", "/chunked", body=b"x" * 1000, chunked=True)
    data += request("GET", "/end", headers=[("Connection", "close")])

    async def main() -> bytes:
        return await serving(sleepy, lambda s: talk(s.port, data), buffer_size=64 * 1024)

    bodies = [r.body for r in parse_responses(run(loop, main))]
    assert bodies == [b"/small 5", b"/big 1048576", b"/chunked 1000", b"/end 0"]


@parametrize_loops
def test_expect_100_continue(loop: str) -> None:
    async def main(server: Any) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            request("POST", "/up", headers=[("Expect", "100-continue"), ("Content-Length", "5")])
        )
        interim = await reader.readuntil(b"\r\n\r\n")
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hello" + request("GET", "/x", headers=[("Connection", "close")]))
        out = await reader.read()
        writer.close()
        return out

    async def go() -> bytes:
        return await serving(sleepy, main)

    assert [r.body for r in parse_responses(run(loop, go))] == [b"/up 5", b"/x 0"]


@parametrize_loops
def test_request_timeout_gives_503_and_the_connection_goes_on(loop: str) -> None:
    @pipeparse.native
    async def stuck(req: HttpRequest) -> Response:
        if req.target == b"/stuck":
            await asyncio.Event().wait()
        return Response(b"ok")

    data = request("GET", "/stuck") + request("GET", "/fine", headers=[("Connection", "close")])

    async def main() -> bytes:
        return await serving(stuck, lambda s: talk(s.port, data), request_timeout=0.05)

    assert [r.status for r in parse_responses(run(loop, main))] == [503, 200]


@parametrize_loops
def test_handler_errors_are_500_and_the_connection_goes_on(loop: str) -> None:
    @pipeparse.native
    async def failing(req: HttpRequest) -> Response:
        if req.target == b"/boom":
            raise ValueError("boom")
        if req.target == b"/boom-later":
            await asyncio.sleep(0)
            raise ValueError("boom")
        return Response(b"ok")

    data = request("GET", "/boom") + request("GET", "/boom-later")
    data += request("GET", "/x", headers=[("Connection", "close")])

    async def main() -> bytes:
        return await serving(failing, lambda s: talk(s.port, data))

    assert [r.status for r in parse_responses(run(loop, main))] == [500, 500, 200]


@parametrize_loops
def test_graceful_shutdown_answers_in_flight_requests_with_connection_close(loop: str) -> None:
    started = asyncio.Event()

    @pipeparse.native
    async def slow(req: HttpRequest) -> Response:
        started.set()
        await asyncio.sleep(0.05)
        return Response(b"done")

    async def main() -> bytes:
        server = await pipeparse.start_asyncio_server(slow, port=0)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(request("GET", "/1"))
        await started.wait()
        server.shutdown()
        out = await reader.read()
        writer.close()
        await server.wait_closed()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", server.port)
        return out

    (response,) = parse_responses(run(loop, main))
    assert response.body == b"done" and response.header("connection") == b"close"


@parametrize_loops
def test_keep_alive_timeout_closes_an_idle_connection(loop: str) -> None:
    async def main() -> bytes:
        return await serving(sleepy, lambda s: talk(s.port, b""), keep_alive_timeout=0.05)

    assert run(loop, main) == b""


@parametrize_loops
def test_header_timeout_is_408(loop: str) -> None:
    async def main() -> bytes:
        return await serving(
            sleepy, lambda s: talk(s.port, b"GET / HTTP/1.1\r\nHo"), header_timeout=0.05
        )

    assert [r.status for r in parse_responses(run(loop, main))] == [408]


# -- ASGI apps that need asyncio --------------------------------------------------------------


async def asyncio_only_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app using asyncio itself: sleep, a Queue, the default executor."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    path = scope["path"]
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if path == "/sleep":
        await asyncio.sleep(0.001)
        result = b"slept"
    elif path == "/queue":
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        asyncio.get_running_loop().call_soon(queue.put_nowait, b"queued")
        result = await queue.get()
    elif path == "/executor":
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(None, lambda: threading.current_thread().name.encode())
        assert result != threading.current_thread().name.encode()
        result = b"executor"
    else:
        result = hashlib.sha256(body).hexdigest().encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": result[:3], "more_body": True})
    await send({"type": "http.response.body", "body": result[3:]})


@parametrize_loops
def test_asyncio_only_asgi_app(loop: str) -> None:
    data = request("GET", "/sleep") + request("GET", "/queue") + request("GET", "/executor")
    data += request("POST", "/sum", body=b"abc", headers=[("Connection", "close")])

    async def main() -> bytes:
        return await serving(asyncio_only_app, lambda s: talk(s.port, data))

    responses = parse_responses(run(loop, main))
    assert [r.body for r in responses] == [
        b"slept",
        b"queued",
        b"executor",
        hashlib.sha256(b"abc").hexdigest().encode(),
    ]
    assert all(r.chunked for r in responses)


@parametrize_loops
def test_starlette_app_on_asyncio(loop: str) -> None:
    pytest.importorskip("starlette")
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def slow(request: Request) -> PlainTextResponse:
        await asyncio.sleep(0.001)  # "RuntimeError: no running event loop" on trio (issue 13)
        return PlainTextResponse(f"slow {request.query_params.get('n')}")

    async def upload(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(len(await request.body())))

    app = Starlette(routes=[Route("/slow", slow), Route("/upload", upload, methods=["POST"])])
    data = b"".join(request("GET", f"/slow?n={i}") for i in range(5))
    data += request("POST", "/upload", body=b"z" * 100_000)
    data += request("GET", "/missing", headers=[("Connection", "close")])

    async def main() -> bytes:
        return await serving(app, lambda s: talk(s.port, data), interface="asgi")

    responses = parse_responses(run(loop, main))
    assert [r.body for r in responses[:6]] == [f"slow {i}".encode() for i in range(5)] + [b"100000"]
    assert responses[6].status == 404


def test_start_asyncio_server_reports_its_address() -> None:
    async def main() -> None:
        server = await pipeparse.start_asyncio_server("plaintext", host="127.0.0.1", port=0)
        assert server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}"
        server.shutdown()
        await server.wait_closed()

    run("asyncio", main)


def test_start_asyncio_server_rejects_the_h11_engine() -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="trio only"):
            await pipeparse.start_asyncio_server("plaintext", port=0, engine="h11")

    run("asyncio", main)


def test_cli_rejects_h11_on_asyncio() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pipeparse", "serve", "--loop", "asyncio", "--engine", "h11"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "runs on trio only" in proc.stderr


def test_cli_says_clearly_when_uvloop_is_missing() -> None:
    code = (
        "import sys; sys.modules['uvloop'] = None\n"
        "from pipeparse.cli import main\n"
        "sys.exit(main(['serve', '--loop', 'uvloop', '--port', '0']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "pip install 'pipeparse[uvloop]'" in proc.stderr


def test_cli_serves_on_asyncio() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeparse", "serve", "--loop", "asyncio", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("pipeparse: listening on http://127.0.0.1:")
        port = int(line.split("http://127.0.0.1:")[1].split()[0])

        async def main() -> bytes:
            return await talk(port, request("GET", "/plaintext", headers=[("Connection", "close")]))

        (response,) = parse_responses(run("asyncio", main))
        assert response.status == 200
        proc.send_signal(2)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@parametrize_loops
def test_the_h11_engine_on_asyncio_is_a_clear_error(loop: str) -> None:
    """The h11 baseline is trio-only (every other setting works on every loop)."""
    with pytest.raises(ValueError, match=r"runs on trio only: --loop \w+ needs --engine"):
        ServerConfig(loop=loop, engine="h11")  # type: ignore[arg-type]


@pytest.mark.parametrize("case", list(BAD))
def test_smuggling_cases_over_asyncio(case: str) -> None:
    """As tests/test_smuggling.py for trio: the two valid requests are answered, the bad one
    gets its 4xx, nothing after it, and the client reads it all (a staged close, no reset)."""
    bad, status = BAD[case]

    async def exchange(server: AsyncioServer) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(GOOD + GOOD + bad + AFTER + b"X" * 65536)
        out = await reader.read()
        writer.close()
        return out

    async def main() -> bytes:
        return await serving("echo", exchange)

    out = run("asyncio", main)
    assert out.count(b"HTTP/1.1 200 OK") == 2
    assert out.count(b"HTTP/1.1 ") == 3
    assert out[out.rindex(b"HTTP/1.1 ") :].startswith(b"HTTP/1.1 %d " % status)
    assert b"/after" not in out


@parametrize_loops
def test_a_broken_streamed_upload_gets_its_4xx_then_close(loop: str) -> None:
    head = b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    data = head + b"Expect: 100-continue\r\n\r\n3\r\nabc\r\nzz\r\n" + request("GET", "/never")

    async def main() -> bytes:
        return await serving(sleepy, lambda s: talk(s.port, data))

    out = run(loop, main)
    assert [r.status for r in parse_responses(out)] == [400]
    assert b"/never" not in out


@parametrize_loops
def test_a_graceful_stop_serves_the_connections_already_waiting(loop: str) -> None:
    """Clients that connected before the server accepted them wait in the backlog; a graceful
    stop accepts them before closing the listener (which would reset them), and they are
    answered (as tests/test_listen.py checks on trio)."""

    async def main() -> list[bytes]:
        server = await pipeparse.start_asyncio_server("plaintext", host="127.0.0.1", port=0)
        clients = []
        for _ in range(3):  # blocking calls: the loop cannot accept them before the stop
            client = socket.create_connection(("127.0.0.1", server.port))
            client.sendall(b"GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            clients.append(client)
        server.shutdown()
        answers = []
        for client in clients:
            reader, writer = await asyncio.open_connection(sock=client)
            answers.append(await reader.read())
            writer.close()
        await server.wait_closed()
        return answers

    for answer in run(loop, main):
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"Hello, World!"), answer


class RecordingTransport(asyncio.Transport):
    """What `HttpProtocol` writes, one entry per call."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5000) if name == "peername" else default

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.writes.append(b"".join(bytes(d) for d in list_of_data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


@parametrize_loops
def test_handlers_that_finish_together_answer_in_one_write(loop: str) -> None:
    """Four pipelined handlers wait for one event: their answers leave in one write, not
    four; a lone handler that waits still writes as soon as it finishes."""
    from pipeparse.servers.asyncio_driver import HttpProtocol
    from pipeparse.servers.handlers import native_handler

    async def main() -> tuple[list[bytes], list[bytes]]:
        go = asyncio.Event()

        @pipeparse.native
        async def app(req: HttpRequest) -> Response:
            await go.wait()
            return Response(req.target)

        results = []
        for count in (4, 1):
            go.clear()
            transport = RecordingTransport()
            protocol = HttpProtocol(native_handler(app), ServerConfig(), set(), lambda: False)
            protocol.connection_made(transport)
            protocol.data_received(b"".join(request("GET", f"/{i}") for i in range(count)))
            await asyncio.sleep(0)  # (each handler is a task now, waiting)
            assert transport.writes == []
            go.set()
            while sum(w.count(b"HTTP/1.1 200") for w in transport.writes) < count:
                await asyncio.sleep(0)
            protocol.connection_lost(None)
            results.append(transport.writes)
        return results[0], results[1]

    together, alone = run(loop, main)
    assert len(together) == 1
    assert [r.body for r in parse_responses(together[0])] == [b"/0", b"/1", b"/2", b"/3"]
    assert len(alone) == 1
