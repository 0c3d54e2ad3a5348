"""Admission: the process-wide limits on load, ``--limit-concurrency`` and ``--limit-max-requests``.

Strategy
--------
One `Admission` per server (`serve_listeners` makes it and sets it for the connection tasks, as
it does the `ShutdownSignal`; engines find it with `current_admission()`, None when neither
limit is set, so an unlimited server pays one ``is None`` test per request).

- load = open connections + requests in flight. The listener counts connections
  (`connection_opened`/`connection_closed`); engines count a request as in flight while its
  handler is blocked (`blocked`/`unblocked`): one that completes without suspending is over
  before another can start. Before a request starts, an engine asks `admit()`: False when the
  load with this request would exceed ``limit_concurrency``. The engine then answers it 503
  with ``Connection: close`` and the closing connection lowers the load (uvicorn's policy: the
  server stays responsive, and recovers by itself once the load drops).
- ``limit_max_requests``: `admit()` counts every request it lets through; the one that reaches
  the limit is served, and the server is asked to shut down gracefully (`on_limit`), so the
  requests already read are answered, with ``Connection: close``. With workers the supervisor
  replaces the process; a single process exits (as uvicorn).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar

__all__ = ["Admission", "current_admission", "using_admission"]

log = logging.getLogger("pipeparse.server")


class Admission:
    """Counts a server's load and requests against its limits (see the module comment).

    Args:
        limit_concurrency: the most connections plus in-flight requests (None: no limit).
        limit_max_requests: requests after which `on_limit` is called once (None: never).
        on_limit: starts the graceful shutdown.
    """

    __slots__ = (
        "connections",
        "in_flight",
        "limit_concurrency",
        "limit_max_requests",
        "on_limit",
        "refused",
        "requests",
    )

    def __init__(
        self,
        limit_concurrency: int | None,
        limit_max_requests: int | None,
        on_limit: Callable[[], None],
    ) -> None:
        self.limit_concurrency = limit_concurrency
        self.limit_max_requests = limit_max_requests
        self.on_limit = on_limit
        self.connections = 0
        self.in_flight = 0
        self.requests = 0  # admitted so far
        self.refused = 0  # answered 503 so far

    def connection_opened(self) -> None:
        self.connections += 1

    def connection_closed(self) -> None:
        self.connections -= 1

    def admit(self) -> bool:
        """May a request start now? Counts it if so (see the module comment)."""
        limit = self.limit_concurrency
        if limit is not None and self.connections + self.in_flight + 1 > limit:
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                log.warning(
                    "over --limit-concurrency %d (%d connections, %d requests in flight): "
                    "answered 503 (%d so far)",
                    limit,
                    self.connections,
                    self.in_flight,
                    self.refused,
                )
            return False
        self.requests += 1
        if self.requests == self.limit_max_requests:
            log.info("served --limit-max-requests %d requests: shutting down", self.requests)
            self.on_limit()
        return True

    def blocked(self) -> None:
        """A request's handler suspended: it is in flight until `unblocked`."""
        self.in_flight += 1

    def unblocked(self) -> None:
        self.in_flight -= 1


_current: ContextVar[Admission | None] = ContextVar("pipeparse_admission", default=None)


def current_admission() -> Admission | None:
    """The `Admission` of the server running this task; None when it sets no limit."""
    return _current.get()


def using_admission(admission: Admission | None) -> Callable[[], None]:
    """Make `admission` current for this task and the tasks it starts; returns the undo."""
    token = _current.set(admission)
    return lambda: _current.reset(token)
