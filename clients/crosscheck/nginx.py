"""A throwaway nginx on loopback: the third-party server the load client is tested and measured
against.

Strategy: nginx comes from the OS packages; when it is missing and we are root, `ensure_nginx`
installs it with apt-get (services not started). The listening socket is made here, in Python,
and handed to nginx the way nginx hands sockets to its own new binary on an upgrade (the
``NGINX`` environment variable lists inherited descriptors). So the port is known before nginx
starts and connections queue in the backlog until nginx accepts them: nothing ever waits for
nginx to come up. Everything nginx writes (config, pid, logs, temp files) stays in one
temporary directory, removed on exit.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["NginxServer", "ensure_nginx", "nginx_server"]

_APT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "RUNLEVEL": "1"}  # RUNLEVEL 1: no autostart


def ensure_nginx(package: str = "nginx") -> str | None:
    """The path of `nginx`, installing the OS package when missing and root; else None.

    Returns None (never raises) when it is missing and cannot be installed: callers say why.
    """
    found = shutil.which("nginx") or _sbin("nginx")
    if found or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return found
    env = os.environ | _APT_ENV
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    if subprocess.run(cmd, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        subprocess.run(cmd, env=env, capture_output=True, check=False)
    return shutil.which("nginx") or _sbin("nginx")


def _sbin(name: str) -> str | None:
    path = Path("/usr/sbin") / name
    return str(path) if path.exists() else None


class NginxServer:
    """A running nginx: its base URL, document root and logs.

    Attributes:
        url: ``http://127.0.0.1:PORT``. root: the document root.
        access_log, error_log: where nginx logs.
    """

    def __init__(
        self, url: str, root: Path, access_log: Path, error_log: Path, proc: subprocess.Popen[bytes]
    ) -> None:
        self.url = url
        self.root = root
        self.access_log = access_log
        self.error_log = error_log
        self._proc = proc

    def stop(self) -> None:
        """Stop nginx gracefully (it finishes what it is doing and flushes its logs)."""
        proc = self._proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def answered(self) -> int:
        """Requests nginx logged as answered, one access log line each (`stop` first, so that
        every line is written)."""
        if not self.access_log.exists():
            return 0
        with self.access_log.open("rb") as f:
            return sum(1 for _ in f)


@contextmanager
def nginx_server(
    files: dict[str, bytes] | None = None,
    workers: int = 1,
    access_log: bool = False,
    http_extra: str = "",
    server_extra: str = "",
    keepalive_requests: int = 100_000_000,
    nginx: str | None = None,
) -> Iterator[NginxServer]:
    """Run nginx on 127.0.0.1 (a free port) serving `files` from a temporary root.

    Args:
        files: name -> content, served from the document root.
        workers: nginx worker processes.
        access_log: log every request (see `NginxServer.answered`).
        keepalive_requests: nginx closes a connection after answering this many requests
            (nginx's default is 1000; the default here is high enough never to matter).
        http_extra, server_extra: more directives for the http and server blocks.
        nginx: the binary (default: found on PATH or in /usr/sbin).
    """
    binary = nginx or shutil.which("nginx") or _sbin("nginx")
    if binary is None:
        raise FileNotFoundError("nginx is not installed (see ensure_nginx)")
    with tempfile.TemporaryDirectory(prefix="pipeparse-nginx-") as tmp:
        base = Path(tmp)
        root = base / "html"
        root.mkdir()
        for name, content in (files or {}).items():
            (root / name).write_bytes(content)
        os.chmod(base, 0o755)  # workers may run as another user
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(4096)
        port = listener.getsockname()[1]
        log = base / "access.log"
        err = base / "error.log"
        user = "user root;" if os.geteuid() == 0 else ""
        conf = base / "nginx.conf"
        conf.write_text(
            f"""
daemon off;
master_process on;
worker_processes {workers};
{user}
pid {base}/nginx.pid;
error_log {err} warn;
events {{ worker_connections 4096; }}
http {{
    access_log {f"{log}" if access_log else "off"};
    client_body_temp_path {base}/client_body;
    proxy_temp_path {base}/proxy;
    fastcgi_temp_path {base}/fastcgi;
    uwsgi_temp_path {base}/uwsgi;
    scgi_temp_path {base}/scgi;
    default_type text/plain;
    keepalive_requests {keepalive_requests};
    keepalive_timeout 75s;
    {http_extra}
    server {{
        listen 127.0.0.1:{port};
        root {root};
        {server_extra}
    }}
}}
"""
        )
        fd = listener.fileno()
        os.set_inheritable(fd, True)
        env = os.environ | {"NGINX": f"{fd};"}
        proc = subprocess.Popen(
            [binary, "-p", str(base), "-c", str(conf), "-e", str(err)],
            env=env,
            pass_fds=(fd,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        listener.close()  # nginx holds its own copy
        server = NginxServer(f"http://127.0.0.1:{port}", root, log, err, proc)
        try:
            yield server
        finally:
            server.stop()
