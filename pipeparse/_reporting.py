"""ReportingConnection: a `ServerConnection` that reports each complete response (a driver's
access log).

A subclass, so that the plain connection pays nothing for it: the hooks cost about 4% of the
asyncio driver's time per request when they sat in `ServerConnection` itself (in process, 16
pipelined plaintext requests per receive). Each response is reported once, when it is complete
(`_finish`: answered, failed, or timed out with 503), with the request's head, its status and
the body bytes sent; a protocol error's 4xx is reported with no head, after the responses
before it, so the lines come in the order the responses leave.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._answering import Headers
from ._connection import ServerConnection
from ._errors import ProtocolError
from ._exchange import Exchange
from ._head import RequestHead
from ._serialize import ResponseFraming
from .actions import Action

__all__ = ["ReportingConnection"]

Report = Callable[[RequestHead | None, int, int], None]


class ReportingConnection(ServerConnection):
    """`ServerConnection` calling ``on_answered(head, status, body_bytes)`` per response."""

    instant_path = False  # every response through `_render` and `_finish`

    def __init__(self, *, on_answered: Report, **options: Any) -> None:
        super().__init__(**options)
        self.on_answered = on_answered
        self._statuses: dict[int, int] = {}  # seq -> the status of its rendered response
        self._unreported_error: tuple[int, int] | None = None  # (status, bytes)

    def _render(
        self, ex: Exchange, status: int, headers: Headers, length: int | None
    ) -> tuple[bytes, ResponseFraming]:
        self._statuses[ex.request.seq] = status
        return super()._render(ex, status, headers, length)

    def _finish(self, ex: Exchange, close: bool) -> None:
        super()._finish(ex, close)
        self.on_answered(ex.head, self._statuses.pop(ex.request.seq, 0), ex.sent)

    def _answer_error(self, error: ProtocolError) -> None:
        super()._answer_error(error)
        sent = len((error.message + "\n").encode("utf-8", "replace"))  # (as it renders it)
        self._unreported_error = (error.status_hint, sent)

    def actions(self) -> list[Action]:
        out = super().actions()
        if self._unreported_error is not None and not self.policy.in_flight:
            self.on_answered(None, *self._unreported_error)
            self._unreported_error = None
        return out
