"""The TLS client settings `pipeparse load` and the Locust user share (no I/O, no trio).

Both verify the server's certificate against the system's CAs plus ``cacert`` (curl's
``--cacert FILE``), checking the host name, unless ``insecure`` (curl's ``-k``), and offer
ALPN ``http/1.1``. The context's class is whatever ``ssl.SSLContext`` is at call time: inside
a Locust process gevent has patched it, so the sockets it wraps are gevent's cooperative ones.
"""

from __future__ import annotations

import ssl

__all__ = ["https_context"]


def https_context(cacert: str | None = None, insecure: bool = False) -> ssl.SSLContext:
    """The system's CAs plus `cacert` (PEM); no checks at all if `insecure`. Raises `OSError`
    when `cacert` cannot be read, `ssl.SSLError` when it holds no certificate."""
    context = ssl.create_default_context(cafile=cacert)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context
