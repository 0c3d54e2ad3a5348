"""TLS: the server's `ssl.SSLContext` from the config, and the handshake of one connection.

Strategy: `server_context` builds one context per server (certificates are read once, at
start, and a bad file fails then, not per connection). Each accepted connection is wrapped in a
`trio.SSLStream` and `handshake` runs in that connection's own task, under
``ssl_handshake_timeout``, so a slow or silent client delays nobody else. A handshake that
fails (a plain-HTTP client on the TLS port, a bad certificate, a client that goes away) or
times out is logged as one line at DEBUG and the connection is closed; the engines then see an
ordinary `trio.abc.Stream`. The pipeparse engine reads raw descriptors only from a
`trio.SocketStream`, so over TLS it takes its stream path; framing does not care how the bytes
were split into records, and the engine's coalesced writes become few large records.
"""

from __future__ import annotations

import contextlib
import logging
import ssl

import trio

from .config import ServerConfig

__all__ = ["CLOSE_TIMEOUT", "close_stream", "handshake", "server_context", "wrap"]

log = logging.getLogger("pipeparse.server")

CLOSE_TIMEOUT = 1.0  # seconds: closing a TLS connection waits this long to send close_notify


def server_context(config: ServerConfig) -> ssl.SSLContext | None:
    """The server's TLS context, or None when ``ssl_certfile`` is not set (plain HTTP).

    Raises `OSError`/`ssl.SSLError` when a file cannot be read or the key does not match.
    """
    if config.ssl_certfile is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(
        config.ssl_certfile, config.ssl_keyfile, password=config.ssl_keyfile_password
    )
    if config.ssl_ca_certs is not None:
        context.load_verify_locations(config.ssl_ca_certs)
    context.verify_mode = ssl.VerifyMode(config.ssl_cert_reqs)
    if config.ssl_ciphers is not None:
        context.set_ciphers(config.ssl_ciphers)
    context.set_alpn_protocols(["http/1.1"])
    return context


def wrap(stream: trio.abc.Stream, context: ssl.SSLContext) -> trio.SSLStream[trio.abc.Stream]:
    """`stream` as the server side of a TLS connection (the handshake still to come).

    Not ``https_compatible``: with it, trio's ``aclose`` sends no close_notify, and a client
    reading a close-delimited end could not tell it from a truncation. The price is on the
    receive side: a client that closes without close_notify is a broken stream, not an EOF,
    which the engines already treat as the client gone.
    """
    return trio.SSLStream(stream, context, server_side=True)


async def handshake(
    stream: trio.SSLStream[trio.abc.Stream], timeout: float, client: object
) -> bool:
    """Run the TLS handshake within `timeout` seconds; False (logged at DEBUG) if it failed."""
    with trio.move_on_after(timeout):
        try:
            await stream.do_handshake()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            cause = exc.__cause__ or exc
            log.debug("TLS handshake with %s failed: %s", client or "a peer", cause)
            return False
        return True
    log.debug("TLS handshake with %s timed out after %gs", client or "a peer", timeout)
    return False


async def close_stream(stream: trio.abc.AsyncResource) -> None:
    """Close a connection's stream, even when cancelled: a TLS one sends close_notify first
    (within `CLOSE_TIMEOUT`), so a client reading to the end sees a clean end, not a
    truncation; any other is closed forcefully, as before."""
    if isinstance(stream, trio.SSLStream):
        with (
            trio.CancelScope(shield=True),
            trio.move_on_after(CLOSE_TIMEOUT),
            contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
        ):
            await stream.aclose()
    await trio.aclose_forcefully(stream)
