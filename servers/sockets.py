"""Listening sockets: TCP (`bind_socket`), a Unix domain socket (``--uds``) and an inherited
one (``--fd``, socket activation).

Strategy: each returns a listening stdlib socket, so serving and workers do not care where it
came from. `listening_socket` picks by the config.
A Unix socket's file belongs to whoever bound it: `unix_socket_owner` removes it when that
owner stops, and only if the path still names the socket it made (a successor may have bound
the path again). A file already at the path is taken over only when it is a socket nobody
answers on (a stale one left by a crash); a live socket or any other file is an error.
`accept_queued` takes the connections waiting in a backlog, for a graceful stop (both loops).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from collections.abc import Iterator
from typing import Protocol

from .config import ServerConfig

__all__ = [
    "BACKLOG",
    "accept_queued",
    "bind_socket",
    "bind_unix_socket",
    "host_port",
    "inherited_socket",
    "listening_socket",
    "socket_address",
    "unix_path",
    "unix_socket_owner",
]

BACKLOG = 2048  # listen() backlog by default (`ServerConfig.backlog`; capped by somaxconn)


def bind_socket(
    host: str, port: int, *, reuse_port: bool = False, backlog: int = BACKLOG
) -> socket.socket:
    """A listening TCP socket on the first address `host` resolves to.

    SO_REUSEADDR is always set (a restart does not wait for TIME_WAIT); SO_REUSEPORT when
    `reuse_port` (worker processes; it also lets a new server take over the port while an old
    one drains). Raises `OSError` (for example EADDRINUSE) with the address in its message.
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, type_, proto, _, address = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            if not hasattr(socket, "SO_REUSEPORT"):
                raise OSError(errno.ENOPROTOOPT, "SO_REUSEPORT is not available here")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            where = host_port(host, port)
            raise OSError(exc.errno, f"cannot listen on {where}: {exc.strerror}") from exc
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def socket_address(sock: socket.socket) -> tuple[str, int]:
    """``(host, port)`` a listening socket is bound to; ``(path, 0)`` for a Unix socket (the
    ASGI ``scope["server"]`` of one, as uvicorn gives)."""
    name = sock.getsockname()
    if isinstance(name, tuple):
        return (str(name[0]), int(name[1]))
    return (name.decode("latin-1") if isinstance(name, bytes) else str(name), 0)


def unix_path(sock: socket.socket) -> str | None:
    """The path of a Unix domain socket; None for any other socket."""
    return socket_address(sock)[0] if sock.family == socket.AF_UNIX else None


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_unix_socket(path: str, backlog: int) -> socket.socket:
    """A listening Unix domain socket at `path` (a stale socket file there is replaced).

    Raises `OSError` when another server answers at `path` (EADDRINUSE) or `path` is a file
    that is not a socket (EEXIST), with the path in the message.
    """
    _clear_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.bind(path)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on unix:{path}: {exc.strerror}") from exc
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _clear_stale(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, f"cannot listen on unix:{path}: a file that is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with probe:
        try:
            probe.connect(path)
        except ConnectionRefusedError:  # nobody listens: left behind by a server that died
            os.unlink(path)
            return
        except OSError:
            return  # let bind report it
    raise OSError(errno.EADDRINUSE, f"cannot listen on unix:{path}: another server listens there")


def inherited_socket(fd: int) -> socket.socket:
    """The listening stream socket inherited as descriptor `fd` (socket activation).

    Raises `OSError` when `fd` is not open, not a socket, or not a listening stream socket.
    """
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot serve on fd {fd}: {exc.strerror}") from exc
    try:
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    except OSError as exc:
        sock.detach()
        raise OSError(exc.errno, f"cannot serve on fd {fd}: {exc.strerror}") from exc
    if sock.type != socket.SOCK_STREAM or not listening:
        sock.detach()
        raise OSError(errno.EINVAL, f"cannot serve on fd {fd}: not a listening stream socket")
    return sock


def listening_socket(config: ServerConfig, *, reuse_port: bool = False) -> socket.socket:
    """The socket `config` asks for: ``fd``, ``uds``, else TCP on ``host``/``port``."""
    if config.fd is not None:
        return inherited_socket(config.fd)
    if config.uds is not None:
        return bind_unix_socket(config.uds, config.backlog)
    return bind_socket(config.host, config.port, reuse_port=reuse_port, backlog=config.backlog)


@contextlib.contextmanager
def unix_socket_owner(sock: socket.socket) -> Iterator[None]:
    """Remove the Unix socket file `sock` is bound to when the block ends (nothing for other
    sockets, and nothing if the path was replaced meanwhile)."""
    path = sock.getsockname() if sock.family == socket.AF_UNIX else None
    if not isinstance(path, str) or not path or path.startswith("\0"):
        yield
        return
    inode = os.stat(path).st_ino
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == inode:
                os.unlink(path)


class _Listening(Protocol):
    """A listening socket, or trio's or asyncio's wrapper of one."""

    @property
    def family(self) -> int: ...

    @property
    def type(self) -> int: ...

    def fileno(self) -> int: ...


def accept_queued(listening: _Listening) -> list[socket.socket]:
    """The connections waiting in `listening`'s backlog, accepted without waiting (a graceful
    stop serves them: closing the listener would reset them)."""
    # Non-blocking accepts on a duplicate descriptor, leaving the listener's own mode alone.
    try:
        dup = socket.fromfd(listening.fileno(), listening.family, listening.type)
    except OSError:  # already closed
        return []
    conns = []
    with dup:
        dup.setblocking(False)
        while True:
            try:
                conn, _ = dup.accept()
            except BlockingIOError:  # none left
                break
            except OSError as exc:
                if exc.errno == errno.ECONNABORTED:  # that client gave up: the next one
                    continue
                break  # out of descriptors, say: the rest are reset, as before
            conns.append(conn)
    return conns
