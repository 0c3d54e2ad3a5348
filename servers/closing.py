"""The staged close of a connection (RFC 9112 §9.6), shared by the trio engines.

Strategy: closing a socket while the client's bytes are still unread makes the kernel answer
with a reset, which can destroy responses the client has not read yet. So a server that ends a
connection does it in stages: it writes its last response (for a protocol error, the one
`pipeparse._serialize.render_error` renders, as the core's `ServerConnection` does), then
`linger` shuts the write side (the client sees EOF after the response) and drains what the
client still sends, for at most `LINGER_TIMEOUT` seconds and `LINGER_MAX_BYTES` bytes; then the
caller closes the stream (`pipeparse.servers.tls.close_stream`). The two bounds keep a client
that never stops sending from holding the connection open.
"""

from __future__ import annotations

import trio

from pipeparse import KiB, MiB

__all__ = ["LINGER_MAX_BYTES", "LINGER_RECEIVE_SIZE", "LINGER_TIMEOUT", "linger"]

LINGER_TIMEOUT = 2.0  # seconds: after the last response, drain the client's bytes this long ...
LINGER_MAX_BYTES = 1 * MiB  # ... or this many bytes, whichever comes first
LINGER_RECEIVE_SIZE = 64 * KiB  # bytes asked for per read while draining

_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError, OSError)


async def linger(
    stream: trio.abc.Stream,
    *,
    receive_size: int = LINGER_RECEIVE_SIZE,
    timeout: float = LINGER_TIMEOUT,
    max_bytes: int = LINGER_MAX_BYTES,
) -> int:
    """Shut `stream`'s write side, then read and drop the client's bytes until it closes, for
    at most `timeout` seconds and about `max_bytes` bytes; returns how many were drained.

    A stream without a half-close (TLS) is drained all the same. A stream that is broken,
    closed, or read by another task ends the drain quietly: the caller closes it next.
    """
    drained = 0
    with trio.move_on_after(timeout):
        try:
            if isinstance(stream, trio.abc.HalfCloseableStream):
                await stream.send_eof()
            while drained < max_bytes:
                data = await stream.receive_some(receive_size)
                if not data:
                    break
                drained += len(data)
        except _GONE:
            pass
    return drained
