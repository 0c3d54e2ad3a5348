"""`pipeparse serve` and `pipeparse.run`: flags in process, real servers in subprocesses.

The subprocess tests start the real command with ``--port 0``, read the address from its first
stdout line, talk HTTP/1.1 over a plain socket and stop it with a signal. Nothing waits on a
clock: every wait is for an event (a line of output, a response, an exit), with a generous
safety timeout that only turns a hang into a failure. Which worker serves a request is made
deterministic by stopping (SIGSTOP) the other worker while the request runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pipeparse import KiB, Limits, MiB
from pipeparse.servers import cli
from pipeparse.servers.config import ServerConfig

SAFETY = 30.0  # seconds: only a hang ever gets near this
ENGINE = "pipeparse"  # the subprocess tests' engine (the pipeparse engine's own tests cover it)
LISTENING = re.compile(
    r"pipeparse: listening on (http://127\.0\.0\.1:(\d+)) "
    r"\(engine (\w+), interface (\w+), workers (\d+)\)\n"
)
WORKER_STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pipeparse serve")
    cli.add_arguments(parser)
    return parser.parse_args(argv)


# --- flags ----------------------------------------------------------------------------------


def test_every_setting_has_a_flag_defaulting_to_the_config_default() -> None:
    config_fields = {f.name for f in dataclasses.fields(ServerConfig)} - {"limits"}
    limit_fields = {f.name for f in dataclasses.fields(Limits)}
    assert set(cli._FLAGS) == config_fields | limit_fields
    args = parse()
    assert args.app == "plaintext"
    assert cli.config_from_args(args) == ServerConfig()


def test_flags_reach_the_config() -> None:
    args = parse(
        "echo",
        "--port=0",
        "--engine=h11",
        "--interface=asgi",
        "--pipeline-policy=all",
        "--max-in-flight=4",
        "--workers=3",
        "--log-level=debug",
        "--access-log",
        "--buffer-size=1M",
        "--max-head-size=8KiB",
        "--max-headers=50",
        "--max-target-size=2048",
        "--max-body-size=3m",
        "--max-chunk-line=1k",
        "--header-timeout=1.5",
        "--keep-alive-timeout=2",
        "--body-timeout=3",
        "--request-timeout=4",
        "--shutdown-timeout=0",
        "--recv-size=0",
        "--flush=each",
        "--server-name=test server",
        "--gc-threshold=0",
        "--limit-concurrency=100",
        "--limit-max-requests=5000",
        "--backlog=128",
        "--fixed-buffer",
    )
    config = cli.config_from_args(args)
    assert args.app == "echo"
    assert config == ServerConfig(
        port=0,
        engine="h11",
        interface="asgi",
        pipeline_policy="all",
        max_in_flight=4,
        workers=3,
        log_level="debug",
        access_log=True,
        buffer_size=1 * MiB,
        limits=Limits(
            max_head_size=8 * KiB,
            max_headers=50,
            max_target_size=2048,
            max_body_size=3 * MiB,
            max_chunk_line=1 * KiB,
        ),
        header_timeout=1.5,
        keep_alive_timeout=2.0,
        body_timeout=3.0,
        request_timeout=4.0,
        shutdown_timeout=0.0,
        recv_size=0,
        flush="each",
        server_name=b"test server",
        gc_threshold=0,
        limit_concurrency=100,
        limit_max_requests=5000,
        backlog=128,
        fixed_buffer=True,
    )


@pytest.mark.parametrize(
    ("text", "size"),
    [("1", 1), ("16384", 16384), ("16K", 16 * KiB), ("16kib", 16 * KiB), ("2M", 2 * MiB)],
)
def test_sizes_take_k_and_m_suffixes(text: str, size: int) -> None:
    assert cli.parse_size(text) == size


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-body-size=lots"], "is not a size"),
        (["--max-body-size=1.5M"], "is not a size"),
        (["--max-body-size=16KB"], "is not a size"),
        (["--max-head-size=0"], "more than 0 bytes"),
        (["--max-headers=-3"], "at least 1"),
        (["--max-in-flight=x"], "not a whole number"),
        (["--port=70000"], "0 (any free port) to 65535"),
        (["--header-timeout=0"], "more than 0"),
        (["--shutdown-timeout=-1"], "0 or more"),
        (["--body-timeout=nan"], "finite"),
        (["--engine=nginx"], "invalid choice"),
        (["--server-name=a\tb"], "printable ASCII"),
        (["--gc-threshold=-1"], "at least 0"),
        (["--gc-threshold=lots"], "not a whole number"),
        (["--limit-concurrency=0"], "at least 1"),
        (["--limit-max-requests=-5"], "at least 1"),
        (["--backlog=0"], "at least 1"),
    ],
)
def test_bad_values_are_clear_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        parse(*argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert argv[0].split("=")[0] in err and message in err


def test_limits_default_to_none_and_backlog_to_2048() -> None:
    config = cli.config_from_args(parse())
    assert config.limit_concurrency is None and config.limit_max_requests is None
    assert config.backlog == 2048 and not config.fixed_buffer
    with pytest.raises(ValueError, match="limit_concurrency must be at least 1"):
        ServerConfig(limit_concurrency=0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--buffer-size=16K"], "must exceed max_head_size"),
        (["no_such_module_xyz:app"], "cannot serve 'no_such_module_xyz:app'"),
        (["nonsense"], "neither a built-in app"),
    ],
)
def test_inconsistent_settings_and_unknown_apps_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        cli.run(parse(*argv))
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_the_listening_line_has_the_documented_form() -> None:
    line = cli.listening_line("http://127.0.0.1:8123", "h11", "native", 2)
    assert LISTENING.fullmatch(line + "\n")
    assert line == (
        "pipeparse: listening on http://127.0.0.1:8123 (engine h11, interface native, workers 2)"
    )


# --- subprocesses ---------------------------------------------------------------------------


@contextmanager
def started(argv: list[str], cwd: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run `argv`; on the way out make sure it is gone (killed if a test failed early)."""
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, bufsize=0
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(SAFETY)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeparse.cli", "serve", "--port=0", f"--engine={ENGINE}", *args]


def read_line(pipe: object, log: list[str]) -> str:
    """One line from a pipe, within the safety timeout; kept in `log` for failure messages."""
    fd = pipe.fileno()  # type: ignore[attr-defined]
    deadline = time.monotonic() + SAFETY
    line = b""
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        data = os.read(fd, 1) if ready else b""
        if not data:
            raise AssertionError(f"no complete line (got {line!r}); output so far: {log}")
        line += data
    log.append(line.decode())
    return log[-1]


def wait_for(pipe: object, pattern: re.Pattern[str], log: list[str]) -> re.Match[str]:
    while True:
        match = pattern.search(read_line(pipe, log))
        if match:
            return match


def listening(proc: subprocess.Popen[bytes]) -> re.Match[str]:
    line = read_line(proc.stdout, [])
    match = LISTENING.fullmatch(line)
    assert match, f"first stdout line is not the listening line: {line!r}"
    return match


def http_get(port: int, target: str = "/plaintext") -> tuple[int, bytes]:
    """``(status, body)`` of one request on a fresh connection (the server closes it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=SAFETY) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        response = b""
        while data := sock.recv(65536):
            response += data
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_prints_its_address_serves_and_stops_on_a_signal(signum: int) -> None:
    with started(serve_command()) as proc:
        match = listening(proc)
        assert match.group(3, 4, 5) == (ENGINE, "native", "1")
        assert http_get(int(match.group(2))) == (200, b"Hello, World!")
        proc.send_signal(signum)
        assert proc.wait(SAFETY) == 0


def test_serve_reports_a_busy_port_and_exits_1() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        command = [sys.executable, "-m", "pipeparse.cli", "serve", f"--port={port}"]
        with started(command) as proc:
            assert proc.wait(SAFETY) == 1
            assert proc.stderr is not None
            assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr.read().decode()


DRAIN_APP = """
import trio
from pipeparse.servers.listen import current_shutdown

async def app(scope, receive, send):
    if scope["type"] != "http":
        return  # no lifespan support
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"started;", "more_body": True})
    if scope["path"] == "/drain":  # finish once the server is shutting down
        await current_shutdown().wait()
        await send({"type": "http.response.body", "body": b"drained;"})
    else:
        await trio.sleep_forever()
"""


@pytest.mark.parametrize("signals", [1, 2], ids=["graceful", "second-signal-aborts"])
def test_a_signal_drains_open_requests_and_a_second_one_aborts(
    signals: int, tmp_path: Path
) -> None:
    (tmp_path / "drainapp.py").write_text(DRAIN_APP)
    log: list[str] = []
    target = "/drain" if signals == 1 else "/forever"
    # Without the abort, the request (and the drain) would outlast the safety timeout.
    command = serve_command("drainapp:app", f"--shutdown-timeout={10 * SAFETY}")
    with started(command, cwd=tmp_path) as proc:
        port = int(listening(proc).group(2))
        with socket.create_connection(("127.0.0.1", port), timeout=SAFETY) as sock:
            sock.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            response = b""
            while b"started;" not in response:  # the request is being handled
                data = sock.recv(65536)
                assert data, response
                response += data
            proc.send_signal(signal.SIGTERM)
            wait_for(proc.stderr, re.compile("shutting down gracefully"), log)
            if signals == 2:  # (trio merges a signal that repeats before it is handled)
                proc.send_signal(signal.SIGTERM)
            while data := sock.recv(65536):
                response += data
        assert proc.wait(SAFETY) == 0
    if signals == 1:
        assert response.endswith(b"drained;\r\n0\r\n\r\n")  # complete, chunked
    else:
        assert b"drained;" not in response and not response.endswith(b"0\r\n\r\n")


PID_APP = """
import os

async def app(scope, receive, send):
    if scope["type"] != "http":
        return  # no lifespan support
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(os.getpid()).encode()})
"""


@contextmanager
def paused(pid: int) -> Iterator[None]:
    """SIGSTOP `pid` for the block: the other workers must take every new connection."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_workers_share_the_port_restart_when_killed_and_stop_on_sigterm(tmp_path: Path) -> None:
    (tmp_path / "pidapp.py").write_text(PID_APP)
    log: list[str] = []
    with started(serve_command("pidapp:app", "--workers=2"), cwd=tmp_path) as proc:
        match = listening(proc)
        assert match.group(3, 4, 5) == (ENGINE, "asgi", "2")
        port = int(match.group(2))
        pids: dict[int, int] = {}
        while len(pids) < 2:
            found = wait_for(proc.stderr, WORKER_STARTED, log)
            pids[int(found.group(1))] = int(found.group(2))
        assert proc.pid not in pids.values()
        first, second = pids[1], pids[2]
        with paused(second):
            assert http_get(port, "/") == (200, str(first).encode())
        with paused(first):
            assert http_get(port, "/") == (200, str(second).encode())

        os.kill(first, signal.SIGKILL)
        wait_for(proc.stderr, re.compile(r"worker 1 exited \(killed by SIGKILL\)"), log)
        restarted = int(wait_for(proc.stderr, WORKER_STARTED, log).group(2))
        assert restarted not in (first, second)
        with paused(second):
            assert http_get(port, "/") == (200, str(restarted).encode())

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(SAFETY) == 0, log
        assert not pid_exists(restarted) and not pid_exists(second)


SLOW_START_APP = """
import os
import trio

async def app(scope, receive, send):
    if scope["type"] == "lifespan":  # the startup waits for the test's go-ahead
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                while not os.path.exists("go"):
                    await trio.sleep(0.01)
                open(f"started-{os.getpid()}", "w").close()
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"served by %d" % os.getpid()})
"""


def test_workers_announce_the_address_once_they_all_serve(tmp_path: Path) -> None:
    (tmp_path / "slowapp.py").write_text(SLOW_START_APP)
    (tmp_path / "go").touch()
    with started(serve_command("slowapp:app", "--workers=2"), cwd=tmp_path) as proc:
        port = int(listening(proc).group(2))
        # Both workers had finished their startup before the line was printed.
        assert len(list(tmp_path.glob("started-*"))) == 2
        status, body = http_get(port, "/")
        assert status == 200 and body.startswith(b"served by ")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(SAFETY) == 0


def test_a_signal_while_workers_start_still_serves_the_waiting_clients(tmp_path: Path) -> None:
    """A client that connected before any worker served waits in the backlog; a SIGTERM then
    lets the workers start, serve it, and stop: it is answered, not reset."""
    (tmp_path / "slowapp.py").write_text(SLOW_START_APP)
    with socket.socket() as probe:  # a free port (the line comes only once workers serve)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log: list[str] = []
    command = serve_command("slowapp:app", "--workers=2", f"--port={port}")
    command.remove("--port=0")
    with started(command, cwd=tmp_path) as proc:
        wait_for(proc.stderr, re.compile(r"worker 2 started"), log)
        with socket.create_connection(("127.0.0.1", port), timeout=SAFETY) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            proc.send_signal(signal.SIGTERM)
            wait_for(proc.stderr, re.compile(r"SIGTERM: stopping"), log)
            (tmp_path / "go").touch()  # now the workers may finish starting
            response = b""
            while data := sock.recv(65536):
                response += data
        assert proc.wait(SAFETY) == 0, log
        assert proc.stdout is not None and proc.stdout.read() == b""  # never announced
    assert response.startswith(b"HTTP/1.1 200 ") and b"served by " in response, response


def test_workers_give_up_when_the_app_cannot_start(tmp_path: Path) -> None:
    # The parent can load the app; the workers fail their ASGI lifespan startup.
    (tmp_path / "badapp.py").write_text(
        "async def app(scope, receive, send):\n"
        "    message = await receive()\n"
        "    await send({'type': 'lifespan.startup.failed', 'message': 'no database'})\n"
    )
    log: list[str] = []
    with started(serve_command("badapp:app", "--workers=2"), cwd=tmp_path) as proc:
        assert proc.wait(SAFETY) == 1
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.read() == b""  # never announced: no worker ever served
        log.append(proc.stderr.read().decode())
    assert "no database" in log[-1] and "could not start" in log[-1]


RUN_SCRIPT = f"""
import pipeparse
pipeparse.run("plaintext", port=0, engine={ENGINE!r})
print("run returned", flush=True)
"""


def test_pipeparse_run_prints_the_listening_line_and_blocks_until_sigterm() -> None:
    """With ``port=0`` the caller learns the port from the same line as the command's, with
    no logging set up."""
    log: list[str] = []
    with started([sys.executable, "-c", RUN_SCRIPT]) as proc:
        match = listening(proc)
        assert match.group(3, 4, 5) == (ENGINE, "native", "1")
        assert http_get(int(match.group(2))) == (200, b"Hello, World!")
        proc.send_signal(signal.SIGTERM)
        assert read_line(proc.stdout, log) == "run returned\n"
        assert proc.wait(SAFETY) == 0


def test_serving_flags_of_issue_14_reach_the_config() -> None:
    args = parse(
        "--uds=/tmp/pp.sock",
        "--proxy-headers",
        "--forwarded-allow-ips=10.0.0.0/8,127.0.0.1",
        "--root-path=/api",
        "--ssl-certfile=c.pem",
        "--ssl-keyfile=k.pem",
        "--ssl-keyfile-password=pw",
        "--ssl-ca-certs=ca.pem",
        "--ssl-cert-reqs=2",
        "--ssl-ciphers=ECDHE+AESGCM",
        "--ssl-handshake-timeout=2.5",
    )
    assert cli.config_from_args(args) == ServerConfig(
        uds="/tmp/pp.sock",
        proxy_headers=True,
        forwarded_allow_ips="10.0.0.0/8,127.0.0.1",
        root_path="/api",
        ssl_certfile="c.pem",
        ssl_keyfile="k.pem",
        ssl_keyfile_password="pw",
        ssl_ca_certs="ca.pem",
        ssl_cert_reqs=2,
        ssl_ciphers="ECDHE+AESGCM",
        ssl_handshake_timeout=2.5,
    )
    assert cli.config_from_args(parse("--fd=3")).fd == 3
    for bad in (["--ssl-cert-reqs=3"], ["--fd=-1"], ["--ssl-handshake-timeout=0"]):
        with pytest.raises(SystemExit):
            parse(*bad)
