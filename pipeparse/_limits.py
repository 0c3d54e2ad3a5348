"""Limits: every size and count pipeparse enforces, with its default and its status code."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KiB", "Limits", "MiB"]

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True, slots=True)
class Limits:
    """Framing and parsing limits; exceeding one is a `ProtocolError` with the status given.

    Attributes:
        max_head_size: request line plus fields plus the blank line, bytes (431).
        max_headers: field lines in a head, and in a chunked body's trailers (431).
        max_target_size: request-target, bytes (414).
        max_body_size: decoded body, bytes (413).
        max_chunk_line: a chunk-size line with its extensions, bytes (400).
        max_empty_lines: empty lines (CRLF) ignored where a request line is expected, at the
            start of a connection or between requests (RFC 9112 §2.2); one more is 400.
    """

    max_head_size: int = 16 * KiB
    max_headers: int = 100
    max_target_size: int = 8 * KiB
    max_body_size: int = 16 * MiB
    max_chunk_line: int = 4 * KiB
    max_empty_lines: int = 4

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"limit {name} must be a positive integer, got {value!r}")
