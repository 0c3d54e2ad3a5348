"""Unix domain sockets (``--uds``) and inherited listening sockets (``--fd``), over real sockets,
in process and from the command line with workers."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from pipeparse.servers import sockets
from pipeparse.servers.config import ServerConfig
from tests.loop_servers import LOOPS, parametrize_engine_loops, parametrize_loops, serving
from tests.server_harness import parse_responses, receive_all
from tests.test_cli_serve import SAFETY, read_line, started

ENGINES = ("pipeparse", "h11")
PIPELINED = (
    b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n"
    b"GET /b HTTP/1.1\r\nHost: t\r\n\r\n"
    b"GET /c HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
)


async def _scope_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = json.dumps({"client": scope["client"], "server": scope["server"]}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def sock_path(tmp_path: Path) -> str:
    return str(tmp_path / "pp.sock")


@parametrize_engine_loops
async def test_serves_pipelined_requests_on_a_unix_socket(
    engine: str, loop: str, sock_path: str
) -> None:
    async with serving(loop, _scope_app, uds=sock_path, engine=engine) as server:
        assert server.url == f"unix:{sock_path}" and server.uds == sock_path
        assert os.path.exists(sock_path)
        stream = await trio.open_unix_socket(sock_path)
        async with stream:
            await stream.send_all(PIPELINED)
            responses = parse_responses(await receive_all(stream))
    assert [r.status for r in responses] == [200, 200, 200]
    assert json.loads(responses[0].body) == {"client": None, "server": None}  # as uvicorn
    assert not os.path.exists(sock_path)  # removed on shutdown


@parametrize_loops
async def test_a_stale_socket_file_is_replaced(sock_path: str, loop: str) -> None:
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(sock_path)  # a file nobody listens on: what a crashed server leaves
    dead.close()
    async with serving(loop, "plaintext", uds=sock_path):
        stream = await trio.open_unix_socket(sock_path)
        async with stream:
            await stream.send_all(
                b"GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            )
            assert (await receive_all(stream)).endswith(b"Hello, World!")


@parametrize_loops
async def test_a_live_socket_or_another_file_is_not_taken(sock_path: str, loop: str) -> None:
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(sock_path)
        live.listen()
        with pytest.raises(OSError, match="another server listens there"):
            async with serving(loop, "plaintext", uds=sock_path):
                pass
    os.unlink(sock_path)
    Path(sock_path).write_text("precious")
    with pytest.raises(OSError, match="not a socket"):
        async with serving(loop, "plaintext", uds=sock_path):
            pass
    assert Path(sock_path).read_text() == "precious"


@parametrize_loops
async def test_the_socket_file_is_left_alone_when_replaced_meanwhile(
    sock_path: str, loop: str
) -> None:
    async with serving(loop, "plaintext", uds=sock_path):
        os.unlink(sock_path)
        Path(sock_path).write_text("a successor's")
    assert Path(sock_path).read_text() == "a successor's"


@parametrize_engine_loops
async def test_serves_on_an_inherited_listening_socket(engine: str, loop: str) -> None:
    listening = socket.create_server(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    fd = listening.detach()
    async with serving(loop, _scope_app, fd=fd, engine=engine) as server:
        assert server.port == port
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(PIPELINED)
            responses = parse_responses(await receive_all(stream))
    assert [r.status for r in responses] == [200, 200, 200]
    assert json.loads(responses[2].body)["server"] == ["127.0.0.1", port]


def test_an_fd_that_is_not_a_listening_socket_is_refused(tmp_path: Path) -> None:
    with socket.socket() as unbound:
        with pytest.raises(
            OSError, match=f"cannot serve on fd {unbound.fileno()}: not a listening"
        ):
            sockets.inherited_socket(unbound.fileno())
        assert unbound.fileno() >= 0  # left open for its owner
    with open(tmp_path / "f", "wb") as file, pytest.raises(OSError, match="cannot serve on fd"):
        sockets.inherited_socket(file.fileno())


def test_uds_and_fd_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="either uds or fd"):
        ServerConfig(uds="/tmp/x", fd=3)
    with pytest.raises(ValueError, match="fd must be 0 or more"):
        ServerConfig(fd=-1)
    assert ServerConfig().uds is None and ServerConfig().fd is None


# --- from the command line, with workers ----------------------------------------------------

LISTENING_UNIX = re.compile(
    r"pipeparse: listening on unix:(\S+) \(engine \w+, interface \w+, workers 2\)\n"
)


def _get_unix(path: str) -> bytes:
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(SAFETY)
        client.connect(path)
        client.sendall(b"GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        response = b""
        while data := client.recv(65536):
            response += data
    return response


@pytest.mark.parametrize("loop", LOOPS)
def test_cli_uds_with_workers(sock_path: str, loop: str) -> None:
    argv = [sys.executable, "-m", "pipeparse.cli", "serve", f"--uds={sock_path}", "--workers=2"]
    argv.append(f"--loop={loop}")
    with started(argv) as proc:
        line = read_line(proc.stdout, [])
        match = LISTENING_UNIX.fullmatch(line)
        assert match and match.group(1) == sock_path, line
        for _ in range(4):
            assert _get_unix(sock_path).endswith(b"\r\n\r\nHello, World!")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(SAFETY) == 0
    assert not os.path.exists(sock_path)


@pytest.mark.parametrize("loop", LOOPS)
def test_cli_fd_with_workers(loop: str) -> None:
    listening = socket.create_server(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    fd = listening.fileno()
    argv = [sys.executable, "-m", "pipeparse.cli", "serve", f"--fd={fd}", "--workers=2"]
    argv.append(f"--loop={loop}")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(fd,))
    try:
        listening.close()  # the server holds its own copy now
        line = read_line(proc.stdout, [])
        assert line.startswith(f"pipeparse: listening on http://127.0.0.1:{port} "), line
        for _ in range(4):
            with socket.create_connection(("127.0.0.1", port), timeout=SAFETY) as client:
                client.sendall(b"GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                response = b""
                while data := client.recv(65536):
                    response += data
            assert response.endswith(b"\r\n\r\nHello, World!")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(SAFETY) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(SAFETY)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()
