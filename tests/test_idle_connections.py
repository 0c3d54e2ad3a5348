"""Thousands of idle keep-alive connections over real sockets: the server's RSS per connection.

Strategy: `pipeparse serve plaintext` (on trio, then on asyncio) runs in a subprocess (its RSS
is its own), with a keep-alive timeout longer than the test. `pipeparse.clients.bench.idle`
raises this process's RLIMIT_NOFILE to its hard limit (the server inherits it), opens 2,000
connections that each send one request, read the answer and idle, and reads the server's
``VmRSS`` before and after. The budget is the issue's target, 16 KiB per idle connection (it
was 277 KiB with the whole 256 KiB buffer up front); 2,000 connections keep the test quick.
Then every one of those connections pipelines 16 requests, and all are answered: idle
connections come back to life.
"""

from __future__ import annotations

import resource
import socket
import sys

import pytest

from pipeparse.clients.bench.idle import REQUEST, IdleConnections, raise_nofile_limit, rss_bytes
from tests.test_cli_serve import SAFETY, listening, serve_command, started

CONNECTIONS = 2000
BUDGET_KIB = 16.0
PIPELINE = 16


def _answers(sock: socket.socket, count: int) -> int:
    """Read until `count` plaintext answers arrived; how many did."""
    data = b""
    while data.count(b"Hello, World!") < count:
        more = sock.recv(65536)
        if not more:
            break
        data += more
    return data.count(b"HTTP/1.1 200 ")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status")
@pytest.mark.parametrize("loop", ["trio", "asyncio"])
def test_thousands_of_idle_connections_stay_under_budget_then_pipeline(loop: str) -> None:
    limit = raise_nofile_limit()
    if limit < CONNECTIONS + 200:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is too low for {CONNECTIONS} connections")
    command = serve_command("plaintext", "--keep-alive-timeout=600", f"--loop={loop}")
    with started(command) as proc:
        port = int(listening(proc).group(2))
        before = rss_bytes(proc.pid)
        with IdleConnections("127.0.0.1", port) as conns:
            conns.open_up_to(CONNECTIONS)
            per_kib = (rss_bytes(proc.pid) - before) / CONNECTIONS / 1024
            assert conns.closed_by_server() == 0  # all still open: the figure counts them all
            assert per_kib < BUDGET_KIB, f"{per_kib:.1f} KiB of RSS per idle connection"

            for sock in conns.socks:  # every idle connection pipelines again
                sock.settimeout(SAFETY)
                sock.sendall(REQUEST * PIPELINE)
            answered = sum(_answers(sock, PIPELINE) for sock in conns.socks)
            assert answered == CONNECTIONS * PIPELINE
        proc.terminate()
        assert proc.wait(SAFETY) == 0
