"""The load client's socket helpers: a connection's failure, the slow path of a send, and an
error's reason in words."""

from __future__ import annotations

import contextlib
import socket

import trio

__all__ = ["ConnectionFailed", "reason", "send_rest", "wait_writable"]


class ConnectionFailed(Exception):
    """A connection failed; `kind` is its error kind (or None: closed without an error)."""

    def __init__(self, kind: str | None) -> None:
        super().__init__(kind)
        self.kind = kind


wait_writable = trio.lowlevel.wait_writable


async def send_rest(sock: socket.socket, data: memoryview, timeout: float) -> None:
    """The slow path of a send (the socket buffer was full): wait for room, `timeout` at most.

    Shielded: the connection's own timeout scope never interrupts a send halfway.
    """
    with trio.CancelScope(shield=True, deadline=trio.current_time() + timeout) as scope:
        while data:
            await wait_writable(sock)
            with contextlib.suppress(BlockingIOError):
                data = data[sock.send(data) :]
    if scope.cancelled_caught:
        raise ConnectionFailed("timeout")


def reason(e: OSError) -> str:
    """``connection refused`` from ``[Errno 111] Connection refused``."""
    text = e.strerror or str(e) or type(e).__name__
    return text[:1].lower() + text[1:]
