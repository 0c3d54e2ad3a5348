"""The states of a `ServerConnection`, and the only transitions between them.

Strategy: like h11's ``_state.py``, every state the connection can be in is named here, and
`ConnState.to` refuses a transition the table does not list, so a wrong turn is a loud bug,
not a silent flag combination. Three small machines, each kept in one attribute:

- `ConnState`, the connection: OPEN (requests are dispatched) -> CLOSING (nothing more is
  dispatched; what was started is answered) -> LINGERING (the last response is out, the write
  side is shut, the client's bytes are drained a little) -> CLOSED.
- `ReadState`, the receive side: READING, PAUSED (back-pressure: the buffer is full or
  `max_in_flight` requests are unanswered), DONE (the client sent EOF or nothing more is read).
- `ExchangeState`, one request: RUNNING (its handler runs), STREAMING (its response head went
  out, its body is still being produced), DONE.
"""

from __future__ import annotations

import enum

__all__ = ["ConnState", "ExchangeState", "ReadState"]


class ConnState(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"
    LINGERING = "lingering"
    CLOSED = "closed"
    UPGRADED = "upgraded"  # handed over to another protocol (WebSocket): no HTTP any more

    def to(self, new: ConnState) -> ConnState:
        """`new`, if the table allows the move from this state; else a `RuntimeError`."""
        if new is not self and new not in _CONN_MOVES[self]:
            raise RuntimeError(f"connection cannot go from {self.value} to {new.value}")
        return new


_CONN_MOVES: dict[ConnState, frozenset[ConnState]] = {
    ConnState.OPEN: frozenset(
        {ConnState.CLOSING, ConnState.LINGERING, ConnState.CLOSED, ConnState.UPGRADED}
    ),
    ConnState.CLOSING: frozenset({ConnState.LINGERING, ConnState.CLOSED}),
    ConnState.LINGERING: frozenset({ConnState.CLOSED}),
    ConnState.CLOSED: frozenset(),
    ConnState.UPGRADED: frozenset(),
}


class ReadState(enum.Enum):
    READING = "reading"
    PAUSED = "paused"
    DONE = "done"


class ExchangeState(enum.Enum):
    RUNNING = "running"
    STREAMING = "streaming"
    DONE = "done"
