"""Idle keep-alive connections and what they cost a server: its RSS growth per connection.

Strategy: the client raises its own RLIMIT_NOFILE to the hard limit, opens connections in
batches (connect, send one ``GET /plaintext``, read the whole answer) and keeps them open, idle.
The server's resident set is read from ``/proc/PID/status`` (``VmRSS``) before the first
connection and after the last one has been answered; the difference over the count is the cost
of one idle connection (Linux only). The server must keep idle connections longer than the
measurement takes (``--keep-alive-timeout``, uvicorn's ``--timeout-keep-alive``).

Run it by hand against a server that is already listening:
``python -m clients.idle_connections PORT PID 1000 5000 10000``.
"""

from __future__ import annotations

import contextlib
import resource
import socket
import sys
from collections.abc import Iterator

__all__ = [
    "IdleConnections",
    "raise_nofile_limit",
    "rss_bytes",
]

REQUEST = b"GET /plaintext HTTP/1.1\r\nHost: localhost\r\n\r\n"
BATCH = 256  # connections opened (and their requests sent) before their answers are read


def raise_nofile_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_bytes(pid: int) -> int:
    """The resident set size of process `pid`, in bytes (Linux ``/proc``)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no VmRSS for process {pid}")


def _read_answer(sock: socket.socket) -> None:
    """Read one whole response with a Content-Length body (the plaintext app's)."""
    data = b""
    while True:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            length = 0
            for line in data[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(data) >= end + 4 + length:
                if not data.startswith(b"HTTP/1.1 200"):
                    raise OSError(f"unexpected answer: {data[:60]!r}")
                return
        more = sock.recv(65536)
        if not more:
            raise OSError(f"the server closed a connection before answering ({len(data)} bytes)")
        data += more


class IdleConnections:
    """Keep-alive connections to ``host:port`` that sent one request each, then idle."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.socks: list[socket.socket] = []

    def __len__(self) -> int:
        return len(self.socks)

    def open_up_to(self, count: int) -> None:
        """Open connections until `count` are open (each answered once)."""
        while len(self.socks) < count:
            batch: list[socket.socket] = []
            try:
                for _ in range(min(BATCH, count - len(self.socks))):
                    sock = socket.create_connection((self.host, self.port), timeout=30)
                    batch.append(sock)
                    sock.sendall(REQUEST)
                for sock in batch:
                    _read_answer(sock)
            except BaseException:
                for sock in batch:
                    sock.close()
                raise
            self.socks += batch

    def close(self) -> None:
        for sock in self.socks:
            sock.close()
        self.socks.clear()

    def __enter__(self) -> IdleConnections:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def rss_per_connection(
    host: str, port: int, pid: int, counts: list[int]
) -> Iterator[tuple[int, int, float]]:
    """For each count (ascending): ``(count, server RSS bytes, bytes per connection)``, the
    growth from before the first connection, over the connections open."""
    raise_nofile_limit()
    before = rss_bytes(pid)
    with IdleConnections(host, port) as conns:
        for count in sorted(counts):
            conns.open_up_to(count)
            rss = rss_bytes(pid)
            yield count, rss, (rss - before) / count


def main(argv: list[str]) -> int:
    port, pid, *counts = (int(a) for a in argv)
    for count, rss, per in rss_per_connection("127.0.0.1", port, pid, counts or [1000]):
        print(f"{count:>6} connections: RSS {rss / 2**20:8.1f} MiB, {per / 1024:7.1f} KiB each")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
