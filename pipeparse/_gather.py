"""Gathered writes, sans-I/O: the buffers of one vectored send, and what a partial send left.

Strategy: the writer takes everything that may leave now (`OrderedResponses.take`) and used to
join it into one `bytes` for one send. That is right for many small responses (one copy of a
few KiB, one system call), but a large body was copied once more than it needed: answering
1 MiB cost a 1 MiB memcpy before the send. `gather` keeps the join for runs of small pieces,
exactly as before, and hands each large piece (`LARGE_PIECE` bytes or more) over as it is, so
heads and bodies leave in one ``writev``/``sendmsg`` without a copy. `unsent` is what is left
after a send took `n` bytes: the first buffer cut by a view, never copied.

Only immutable pieces (`bytes`, or views of `bytes`) are sent uncopied: a `bytearray` or a view
of the receive buffer could change while the send waits for room, so those are joined at once,
as before.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._limits import KiB
from ._ordered import Chunk

__all__ = ["LARGE_PIECE", "MAX_BUFFERS", "gather", "unsent"]

# At this size a copy costs more than the extra iovec entry: a large body goes out by itself
# (well above the heads and small bodies that are coalesced, well below a 1 MiB body).
LARGE_PIECE = 64 * KiB
# Buffers per ``writev`` call: far below IOV_MAX (1024 on Linux); the rest goes in the next.
MAX_BUFFERS = 64


def _immutable(piece: Chunk) -> bool:
    return type(piece) is bytes or (type(piece) is memoryview and type(piece.obj) is bytes)


def gather(parts: Sequence[Chunk]) -> list[Chunk]:
    """The buffers to send for `parts`, in order: each run of small (or mutable) pieces joined
    into one `bytes`, each large immutable piece as it is."""
    if max(map(len, parts)) < LARGE_PIECE:  # the usual case: one join, as always
        return [b"".join(parts)]
    buffers: list[Chunk] = []
    run: list[Chunk] = []
    for piece in parts:
        if len(piece) >= LARGE_PIECE and _immutable(piece):
            if run:
                buffers.append(b"".join(run))
                run = []
            buffers.append(piece)
        else:
            run.append(piece)
    if run:
        buffers.append(b"".join(run))
    return buffers


def unsent(buffers: Sequence[Chunk], sent: int) -> list[Chunk]:
    """What is left of `buffers` once a send took their first `sent` bytes."""
    for i, buffer in enumerate(buffers):
        size = len(buffer)
        if sent < size:
            rest = list(buffers[i:])
            if sent:
                rest[0] = memoryview(buffer)[sent:]
            return rest
        sent -= size
    return []
