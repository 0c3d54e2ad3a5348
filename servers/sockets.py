"""Listening sockets other than TCP: a Unix domain socket (``--uds``) and an inherited one
(``--fd``, socket activation).

Strategy: each returns a listening stdlib socket, the same thing `listen.bind_socket` returns,
so serving and workers do not care where it came from. `listening_socket` picks by the config.
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
    "accept_queued",
    "bind_unix_socket",
    "inherited_socket",
    "listening_socket",
    "unix_socket_owner",
]


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
    from .listen import bind_socket

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
