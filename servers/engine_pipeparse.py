"""The pipeparse engine (``--engine pipeparse``, the default): `serve_connection` is the trio
driver's (`servers/trio_driver.py`), which moves bytes between the socket and a
`pipeparse.ServerConnection` and runs the handlers; the connection's decisions are the core's.
The engines are named by module (``pipeparse.servers.engine_<name>``): this one names the
driver."""

from __future__ import annotations

from .trio_driver import serve_connection

__all__ = ["serve_connection"]
