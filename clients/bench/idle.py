"""Idle keep-alive connections and what they cost a server: its RSS growth per connection.

Strategy: the client raises its own RLIMIT_NOFILE to the hard limit, opens connections in
batches (connect, send one ``GET /plaintext``, read the whole answer) and keeps them open, idle.
The server's resident set is read from ``/proc/PID/status`` (``VmRSS``) before the first
connection and after the last one has been answered; the difference over the count is the cost
of one idle connection (Linux only). The server must keep idle connections longer than the
measurement takes (``--keep-alive-timeout``, uvicorn's ``--timeout-keep-alive``, hypercorn's
``--keep-alive``): a count at which the server has closed any is reported as an error. The
RSS is the server process's and its children's (hypercorn serves from a child).

Run it by hand against a server that is already listening:
``python -m pipeparse.clients.bench.idle PORT PID 1000 5000 10000``.
"""

from __future__ import annotations

import contextlib
import os
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


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as f:
                children = [int(c) for c in f.read().split()]
        except OSError:
            continue
        for child in children:
            found += [child, *_descendants(child)]
    return found


def _own_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no VmRSS for process {pid}")


def rss_bytes(pid: int) -> int:
    """The resident set size of process `pid` and its descendants, in bytes (Linux
    ``/proc``): a server that serves from child processes (hypercorn) is counted whole."""
    total = _own_rss(pid)
    for child in _descendants(pid):
        with contextlib.suppress(OSError):  # (it may have just exited)
            total += _own_rss(child)
    return total


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

    def closed_by_server(self) -> int:
        """How many of the connections the server has closed (an idle timeout, say): their
        memory would no longer count, so a measurement with any is void."""
        closed = 0
        for sock in self.socks:
            timeout = sock.gettimeout()
            sock.setblocking(False)  # (with a timeout, MSG_DONTWAIT alone reads b"")
            try:
                if sock.recv(1, socket.MSG_PEEK) == b"":
                    closed += 1
            except BlockingIOError:
                pass  # open, nothing to read: idle, as it should be
            except OSError:
                closed += 1
            finally:
                sock.settimeout(timeout)
        return closed

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
            closed = conns.closed_by_server()
            if closed:
                raise OSError(f"the server closed {closed} of {count} idle connections")
            yield count, rss, (rss - before) / count


def main(argv: list[str]) -> int:
    port, pid, *counts = (int(a) for a in argv)
    for count, rss, per in rss_per_connection("127.0.0.1", port, pid, counts or [1000]):
        print(f"{count:>6} connections: RSS {rss / 2**20:8.1f} MiB, {per / 1024:7.1f} KiB each")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
