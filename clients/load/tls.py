"""TLS for `pipeparse load`: https:// URLs on the client's plain non-blocking sockets.

Strategy: the load client drives raw non-blocking sockets (one ``send`` per batch, one
``recv_into`` per read, trio only for readiness). Over TLS the socket is an `ssl.SSLSocket` of
the subclass `_NonBlockingTls`, whose ``send``/``recv_into`` raise `BlockingIOError` where
OpenSSL wants to wait, exactly as a plain socket does, so the client's loops do not change.
One TLS record holds at most 16 KiB, and the client reads up to 64 KiB at once, so after a
read nothing decrypted waits inside OpenSSL; `wait_readable` still checks ``pending()``
first, so a smaller read size cannot leave the client waiting on the socket for bytes it
already holds. Certificates are verified (curl's ``--cacert FILE`` adds a CA) unless
``-k/--insecure``: `https_context` (clients/load/tls_context.py), which the Locust user shares.
"""

from __future__ import annotations

import errno
import socket
import ssl
from typing import Any

import trio

from pipeparse.clients.load.tls_context import https_context

__all__ = ["client_context", "handshake", "wait_readable"]


class _NonBlockingTls(ssl.SSLSocket):
    """An SSLSocket whose would-block errors look like a plain socket's."""

    def send(self, data: Any, flags: int = 0) -> int:
        try:
            return super().send(data, flags)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            raise BlockingIOError(errno.EAGAIN, "TLS would block") from None

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        try:
            return super().recv_into(buffer, nbytes or 0, flags)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise BlockingIOError(errno.EAGAIN, "TLS would block") from None


def client_context(cacert: str | None = None, insecure: bool = False) -> ssl.SSLContext:
    """The run's TLS context (`https_context`, shared with the Locust user), its sockets
    `_NonBlockingTls`."""
    context = https_context(cacert, insecure)
    context.sslsocket_class = _NonBlockingTls
    return context


async def handshake(sock: socket.socket, context: ssl.SSLContext, host: str) -> ssl.SSLSocket:
    """`sock` (connected, non-blocking) wrapped in TLS, the handshake done; raises `OSError`
    (`ssl.SSLError`) when it fails. The caller bounds the time."""
    tls = context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
    try:
        while True:
            try:
                tls.do_handshake()
                return tls
            except ssl.SSLWantReadError:
                await trio.lowlevel.wait_readable(tls)
            except ssl.SSLWantWriteError:
                await trio.lowlevel.wait_writable(tls)
    except BaseException:  # (`sock` was detached: this is the one to close)
        trio.lowlevel.notify_closing(tls)
        tls.close()
        raise


async def wait_readable(sock: socket.socket) -> None:
    """Like `trio.lowlevel.wait_readable`, but at once when OpenSSL holds decrypted bytes."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        await trio.lowlevel.checkpoint()
        return
    await trio.lowlevel.wait_readable(sock)
