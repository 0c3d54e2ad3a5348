"""The graceful shutdown as the engines see it: a `ShutdownSignal` per server, found through
`current_shutdown()`.

Strategy: the server (`pipeparse.servers.listen.serve_listeners`) makes its signal current with
`using_shutdown`, a context variable its connection tasks inherit, so an engine's
``serve_connection`` signature stays as it is. Once the signal is set, an engine answers the
requests already read with ``Connection: close``, reads no new ones, and closes an idle
keep-alive connection at once (race its receive against ``await signal.wait()``, or register a
callback). Until an engine does this, an idle keep-alive connection holds the shutdown up to
``shutdown_timeout``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextvars import ContextVar

import trio

__all__ = ["ShutdownSignal", "current_shutdown", "using_shutdown"]


class ShutdownSignal:
    """Set once, when its server begins a graceful shutdown.

    Attributes:
        deadline: the `trio.current_time()` at which the remaining connections are cancelled
            (``inf`` until the signal is set).
    """

    __slots__ = ("_callbacks", "_event", "deadline")

    def __init__(self) -> None:
        self._event = trio.Event()
        self._callbacks: dict[Callable[[], None], None] = {}  # (ordered; a connection's)
        self.deadline = math.inf

    def add_callback(self, callback: Callable[[], None]) -> None:
        """Call `callback` when the signal is set (a connection's, instead of a task that
        waits for it); remove it with `discard_callback`."""
        self._callbacks[callback] = None

    def discard_callback(self, callback: Callable[[], None]) -> None:
        self._callbacks.pop(callback, None)

    def is_set(self) -> bool:
        """True once the server stopped accepting and is draining its connections."""
        return self._event.is_set()

    async def wait(self) -> None:
        """Return once the signal is set."""
        await self._event.wait()

    def set(self, deadline: float) -> None:
        if not self._event.is_set():
            self.deadline = deadline
            self._event.set()
            for callback in list(self._callbacks):
                callback()


_current_shutdown: ContextVar[ShutdownSignal | None] = ContextVar(
    "pipeparse_shutdown", default=None
)


def current_shutdown() -> ShutdownSignal:
    """The `ShutdownSignal` of the server running this task (a never-set one outside servers)."""
    signal_ = _current_shutdown.get()
    return signal_ if signal_ is not None else ShutdownSignal()


def using_shutdown(signal_: ShutdownSignal) -> Callable[[], None]:
    """Make `signal_` current for this task and the tasks it starts; returns the undo."""
    token = _current_shutdown.set(signal_)
    return lambda: _current_shutdown.reset(token)
