"""The two errors pipeparse raises.

A `ProtocolError` carries the HTTP status a server should answer with (`status_hint`), so the
server layer never has to guess: 400 for bad syntax or framing, 413/414/431 for limits, 501 for
an unknown transfer coding, 505 for an unsupported HTTP version.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BufferFull", "ProtocolError"]


class ProtocolError(Exception):
    """The peer broke HTTP/1.1: nothing after this point of the stream can be trusted.

    Attributes:
        status_hint: the status a server should answer with before closing.
        requests_before: for `parse_requests`, the requests framed before the bad one.
    """

    def __init__(self, message: str, status_hint: int = 400) -> None:
        super().__init__(message)
        self.status_hint = status_hint
        self.requests_before: list[Any] = []

    @property
    def message(self) -> str:
        return str(self.args[0])


class BufferFull(Exception):
    """More bytes were written to a `SeekableBuffer` than it has writable space for."""
