"""`pipeparse.locust.PipelinedUser` in a real Locust run: a master and two workers, headless.

Locust runs only in subprocesses: importing it patches the standard library with gevent, which
must never happen in this (trio) process. The server is `pipeparse serve` with its access log on
(written to a file, so a full pipe never stalls it). Once Locust has quit and the server has
stopped, Locust's aggregated request count (its CSV statistics, which the master builds from the
workers' reports) must equal the number of responses in the server's access log, with no
failure: every pipelined response was counted exactly once. The run is a few seconds
(``--run-time``); every wait is bounded by a safety timeout that only a hang reaches.
"""

from __future__ import annotations

import csv
import json
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import trustme

from tests.test_cli_serve import SAFETY, read_line, serve_command
from tests.test_tls import Certs, certs_fixture  # noqa: F401  (the `certs` fixture)

LOCUSTFILE = """
from pipeparse.locust import PipelinedUser


class Plain(PipelinedUser):
    depth = 16
    paths = ["/plaintext"]


class Mixed(PipelinedUser):
    depth = 8
    connections = 2
    requests = [
        {"target": "/plaintext", "weight": 3},
        {"target": "/missing", "method": "HEAD"},
    ]
"""
LISTENING = re.compile(r"pipeparse: listening on https?://127\.0\.0\.1:(\d+) ")
ACCESS = re.compile(r'"(\w+) (\S+)" (\d+) \d+$', re.MULTILINE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def logged_process(argv: list[str], cwd: Path, name: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run `argv` with its output in the file `cwd/name` (no pipe to fill and stall it); on the
    way out make sure it is gone (killed if a test failed early)."""
    with open(cwd / name, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(SAFETY)


def tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:]


def locust(tmp_path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(tmp_path / "locustfile.py"), *args]


def run_locust(tmp_path: Path, user: str, host: str) -> dict[tuple[str, str], dict[str, str]]:
    """A headless master and two workers for a few seconds; Locust's CSV rows by (type, name)."""
    master_port = free_port()
    master = locust(
        tmp_path,
        "--master",
        "--headless",
        "--master-bind-host=127.0.0.1",
        f"--master-bind-port={master_port}",
        "--expect-workers=2",
        "--expect-workers-max-wait=30",
        "--users=4",
        "--spawn-rate=100",
        "--run-time=2s",
        "--stop-timeout=10",  # users drain what they have in flight before stopping
        f"--host={host}",
        f"--csv={tmp_path / 'run'}",
        "--only-summary",
        "--exit-code-on-error=0",  # failures are asserted from the statistics
        user,
    )
    worker = locust(
        tmp_path, "--worker", "--master-host=127.0.0.1", f"--master-port={master_port}", user
    )
    with (
        logged_process(master, tmp_path, "master") as m,
        logged_process(worker, tmp_path, "worker1") as w1,
        logged_process(worker, tmp_path, "worker2") as w2,
    ):
        for proc, name in ((m, "master"), (w1, "worker1"), (w2, "worker2")):
            code = proc.wait(SAFETY)
            assert code == 0, f"{name} exited {code}: {tail(tmp_path / name)}"
    with open(tmp_path / "run_stats.csv", newline="") as f:
        return {(row["Type"], row["Name"]): row for row in csv.DictReader(f)}


@contextmanager
def logged_server(tmp_path: Path, *args: str) -> Iterator[int]:
    """`pipeparse serve --access-log ARGS` (the log in `tmp_path/access.log`); yields its port,
    and stops it cleanly on the way out, so the log is complete afterwards."""
    with open(tmp_path / "access.log", "wb") as err:
        server = subprocess.Popen(
            serve_command("--access-log", *args), stdout=subprocess.PIPE, stderr=err, bufsize=0
        )
        try:
            line = read_line(server.stdout, [])
            match = LISTENING.match(line)
            assert match, f"first stdout line is not the listening line: {line!r}"
            yield int(match[1])
            server.send_signal(signal.SIGTERM)
            assert server.wait(SAFETY) == 0
        finally:
            if server.poll() is None:
                server.kill()
                server.wait(SAFETY)
            assert server.stdout is not None
            server.stdout.close()


def logged_responses(tmp_path: Path) -> list[tuple[str, str, int]]:
    """The responses the server logged, ``(method, target, status)``."""
    text = (tmp_path / "access.log").read_text()
    return [(m[1], m[2], int(m[3])) for m in ACCESS.finditer(text)]


def serve_and_run(
    tmp_path: Path, user: str
) -> tuple[dict[tuple[str, str], dict[str, str]], list[tuple[str, str, int]]]:
    """Serve plaintext with an access log while Locust runs `user`: Locust's CSV rows and the
    responses the server logged."""
    (tmp_path / "locustfile.py").write_text(LOCUSTFILE)
    with logged_server(tmp_path) as port:
        rows = run_locust(tmp_path, user, f"http://127.0.0.1:{port}")
    return rows, logged_responses(tmp_path)


def test_locust_counts_every_pipelined_response_the_server_logged(tmp_path: Path) -> None:
    rows, responses = serve_and_run(tmp_path, "Plain")
    total = rows[("", "Aggregated")]
    assert int(total["Failure Count"]) == 0
    assert int(total["Request Count"]) == len(responses) > 0
    assert set(responses) == {("GET", "/plaintext", 200)}
    assert int(rows[("GET", "/plaintext")]["Request Count"]) == len(responses)


def test_a_mix_over_two_connections_reports_status_errors_as_failures(tmp_path: Path) -> None:
    rows, responses = serve_and_run(tmp_path, "Mixed")
    logged = {key: responses.count(key) for key in set(responses)}
    assert set(logged) == {("GET", "/plaintext", 200), ("HEAD", "/missing", 404)}
    get, head = rows[("GET", "/plaintext")], rows[("HEAD", "/missing")]
    assert int(get["Request Count"]) == logged[("GET", "/plaintext", 200)] > 0
    assert int(get["Failure Count"]) == 0
    assert int(head["Request Count"]) == int(head["Failure Count"])
    assert int(head["Request Count"]) == logged[("HEAD", "/missing", 404)] > 0
    with open(tmp_path / "run_failures.csv", newline="") as f:
        failures = list(csv.DictReader(f))
    assert [(r["Method"], r["Name"], r["Error"]) for r in failures] == [
        ("HEAD", "/missing", "HttpStatusError('HTTP 404')")
    ]


BROKEN_CONNECTIONS = r'''
import json
import socket

import gevent
import gevent.event
from gevent.server import StreamServer
from locust.env import Environment

import pipeparse.locust as pl

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
served = {"connections": 0, "answered": 0}
enough = gevent.event.Event()


def handle(sock, address):
    """Answer the first 5 requests, then end the connection with the rest unanswered."""
    served["connections"] += 1
    data = b""
    while data.count(b"\r\n\r\n") < 5:
        chunk = sock.recv(65536)
        if not chunk:
            return
        data += chunk
    sock.sendall(ANSWER * 5)
    served["answered"] += 5
    sock.shutdown(socket.SHUT_WR)
    while sock.recv(65536):  # until the client has seen the end and closed
        pass
    if served["connections"] >= 4:
        enough.set()


server = StreamServer(("127.0.0.1", 0), handle)
server.start()
sent = [0]
send = pl._Pipe._send


def counting_send(self, sock, index, k):
    sent[0] += k
    return send(self, sock, index, k)


pl._Pipe._send = counting_send


class Breaking(pl.PipelinedUser):
    host = f"http://127.0.0.1:{server.server_port}"
    depth = 8
    paths = ["/a"]


env = Environment(user_classes=[Breaking], stop_timeout=10)
outcomes = []
env.events.request.add_listener(
    lambda exception=None, **kw: outcomes.append(None if exception is None else repr(exception))
)
runner = env.create_local_runner()
runner.start(1, spawn_rate=10)
enough.wait(60)
runner.stop()
server.stop()
print(json.dumps({"served": served, "sent": sent[0], "outcomes": outcomes}))
'''


def test_a_broken_connection_reports_its_requests_in_flight_and_reconnects(
    tmp_path: Path,
) -> None:
    script = tmp_path / "broken.py"
    script.write_text(BROKEN_CONNECTIONS)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=SAFETY, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    outcomes = report["outcomes"]
    ok = outcomes.count(None)
    failed = [o for o in outcomes if o is not None]
    assert report["served"]["connections"] >= 4  # it reconnected after each break
    assert ok == report["served"]["answered"]
    assert report["sent"] == ok + len(failed)  # none dropped silently
    assert failed and set(failed) == {"ConnectionLost('closed by the server')"}


SETTINGS = r"""
import json

import pipeparse.locust as pl

errors = {}
cases = {
    "insecure": ("https://127.0.0.1:8443", {"insecure": 1}),
    "cacert": ("https://127.0.0.1:8443", {"cacert": ""}),
    "no_cacert": ("https://127.0.0.1:8443", {"cacert": "no-such-ca.pem"}),
    "path": ("http://127.0.0.1:8000/api", {}),
    "depth": ("http://127.0.0.1:8000", {"depth": 0}),
    "connections": ("http://127.0.0.1:8000", {"connections": True}),
    "timeout": ("http://127.0.0.1:8000", {"timeout": 0}),
    "paths": ("http://127.0.0.1:8000", {"paths": "/a"}),
    "requests": ("http://127.0.0.1:8000", {"requests": [{"target": "/a"}, {"path": "/b"}]}),
}
for name, (host, attrs) in cases.items():
    cls = type(name, (pl.PipelinedUser,), dict(attrs))
    try:
        pl._Plan(cls, host)
    except ValueError as e:
        errors[name] = str(e)
good = type("Good", (pl.PipelinedUser,), {
    "depth": 2,
    "headers": [("X-All", "1")],
    "requests": [{"target": "/a", "weight": 2}, {"target": "/b", "method": "POST", "body": "x"}],
})
plan = pl._Plan(good, "http://127.0.0.1:8000")
print(json.dumps({"errors": errors, "data": plan.mix.data.decode(), "names": plan.names}))
"""


def test_user_settings_are_checked_with_clear_errors(tmp_path: Path) -> None:
    script = tmp_path / "settings.py"
    script.write_text(SETTINGS)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=SAFETY, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["errors"] == {
        "insecure": "insecure.insecure must be True or False, got 1",
        "cacert": "cacert.cacert must be a CA bundle's file name (PEM) or None, got ''",
        "no_cacert": "no_cacert.cacert: cannot load 'no-such-ca.pem': no such file or directory",
        "path": "host 'http://127.0.0.1:8000/api' has a path: give whole targets in `paths` or "
        "`requests`",
        "depth": "depth.depth must be a positive integer, got 0",
        "connections": "connections.connections must be a positive integer, got True",
        "timeout": "timeout.timeout must be positive seconds, got 0",
        "paths": "paths.paths must be a non-empty list of paths",
        "requests": "requests[1]: unknown key 'path' (keys: body, body_file, headers, method, "
        "target, weight)",
    }
    a = "GET /a HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nX-All: 1\r\n\r\n"
    b = "POST /b HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nX-All: 1\r\nContent-Length: 1\r\n\r\nx"
    assert report["data"] == a + b + a + a + b  # the cycle a b a, then `depth` more
    assert report["names"] == ["/a", "/b"]


HTTPS = r"""
import json
import sys

import gevent.event
from locust.env import Environment

import pipeparse.locust as pl

port, ca, wrong_ca = sys.argv[1:]


class Trusted(pl.PipelinedUser):
    host = f"https://localhost:{port}"  # by name: the certificate's name is checked (SNI)
    depth = 16
    paths = ["/plaintext"]
    cacert = ca


class Untrusted(pl.PipelinedUser):
    host = f"https://127.0.0.1:{port}"
    depth = 4
    paths = ["/plaintext"]
    cacert = wrong_ca


class Insecure(Untrusted):
    cacert = None
    insecure = True


def run(cls, enough):
    # one user of `cls` until `enough` requests are reported: every outcome
    env = Environment(user_classes=[cls], stop_timeout=10)
    outcomes = []
    done = gevent.event.Event()

    def record(exception=None, **kw):
        outcomes.append(None if exception is None else repr(exception))
        if len(outcomes) >= enough:
            done.set()

    env.events.request.add_listener(record)
    runner = env.create_local_runner()
    runner.start(1, spawn_rate=10)
    done.wait(20)  # (only a failing run waits this long: less than the test's safety timeout)
    runner.stop()  # gracefully: what is in flight is drained and reported
    return outcomes


enough = {Trusted: 200, Untrusted: 4, Insecure: 200}  # (an untrusted one backs off)
print(json.dumps({c.__name__: run(c, n) for c, n in enough.items()}))
"""


def test_https_verifies_with_cacert_and_fails_an_untrusted_certificate_unless_insecure(
    tmp_path: Path, certs: Certs
) -> None:
    wrong_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(wrong_ca))
    script = tmp_path / "https.py"
    script.write_text(HTTPS)
    tls = (f"--ssl-certfile={certs.certfile}", f"--ssl-keyfile={certs.keyfile}")
    with logged_server(tmp_path, *tls) as port:
        done = subprocess.run(
            [sys.executable, str(script), str(port), certs.ca_file, str(wrong_ca)],
            capture_output=True,
            text=True,
            timeout=SAFETY,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    trusted, untrusted, insecure = report["Trusted"], report["Untrusted"], report["Insecure"]
    assert len(trusted) >= 200 and set(trusted) == {None}
    assert len(insecure) >= 200 and set(insecure) == {None}
    # An untrusted certificate: a failure at every attempt (no hang, no crash), no request.
    assert len(untrusted) >= 4
    assert all(
        o.startswith("ConnectionLost('cannot connect: [SSL: CERTIFICATE_VERIFY_FAILED]")
        for o in untrusted
    ), untrusted[:3]
    served = logged_responses(tmp_path)
    assert served == [("GET", "/plaintext", 200)] * (len(trusted) + len(insecure))
