"""What a `ServerConnection` asks its driver to do: small records, read in order.

A driver performs each with a few attribute reads and no await: `Start` a handler, `Write`
bytes (already ordered and coalesced), deliver request body pieces (`BodyData`, `BodyEnd`,
`BodyError`), `Cancel` a handler that ran over its time, pause or resume reading, arm or
cancel a `Timer` (a deadline as data, on the clock the connection was given), `ShutWrite`
and `Close`; or hand the connection over to the protocol a request asked for (`Upgrade`).
Treat them as read-only; they are not frozen because a frozen dataclass costs three times as
much to make (about 400 ns against 140), and a few are made per request.

The optional compiled build (setup.py) compiles them. mypyc 2.4 takes a dataclass without
``slots=True`` (its instances have fixed fields anyway), and a field of a bare builtin type such
as `memoryview` only through an alias (`View`): otherwise the module fails to import. The
``__init__`` a dataclass generates stays interpreted (about 390 ns from compiled code), so the
ones made per request (`Start`, `Write`, `Timer`) spell theirs out (about 110 ns compiled).
"""

from __future__ import annotations

from dataclasses import dataclass

from ._errors import ProtocolError
from ._head import RequestHead

__all__ = [
    "Action",
    "BodyData",
    "BodyEnd",
    "BodyError",
    "Cancel",
    "Close",
    "PauseReading",
    "ResumeReading",
    "ShutWrite",
    "Start",
    "Timer",
    "TimerKey",
    "Upgrade",
    "Write",
]

Chunk = bytes | bytearray | memoryview
# A timer's name: "read" (keep-alive, header or body timeout, whichever applies), "linger",
# or a request's seq (its request timeout).
TimerKey = str | int
View = memoryview  # (see the module comment)


@dataclass(init=False)
class Start:
    """Run the handler of request `seq` now. `body` is the whole body (a view into the
    receive buffer, valid until the handler's response is reported), or None when it
    streams: then ask for it with `ServerConnection.read_body`."""

    seq: int
    head: RequestHead
    body: bytes | memoryview | None

    def __init__(self, seq: int, head: RequestHead, body: bytes | memoryview | None) -> None:
        self.seq = seq
        self.head = head
        self.body = body


@dataclass(init=False)
class Write:
    """Send these bytes, in order (every response that may leave now, coalesced)."""

    parts: list[Chunk]

    def __init__(self, parts: list[Chunk]) -> None:
        self.parts = parts


@dataclass
class BodyData:
    """The next piece of request `seq`'s streamed body."""

    seq: int
    data: View


@dataclass
class BodyEnd:
    """Request `seq`'s streamed body is complete."""

    seq: int


@dataclass
class BodyError:
    """Request `seq`'s streamed body cannot complete (bad framing, a limit, EOF, a timeout)."""

    seq: int
    error: ProtocolError


@dataclass
class Cancel:
    """Request `seq` ran over its timeout and has been answered: cancel its handler (what
    it reports from now on is ignored)."""

    seq: int


@dataclass(init=False)
class Timer:
    """Arm timer `key` at `deadline` (None: it is no longer needed). A driver may keep an
    earlier timer instead: `timer_expired` re-arms it if its deadline has not come yet."""

    key: TimerKey
    deadline: float | None

    def __init__(self, key: TimerKey, deadline: float | None) -> None:
        self.key = key
        self.deadline = deadline


@dataclass
class PauseReading:
    """Stop reading (back-pressure); `ResumeReading` follows when there is room again."""


@dataclass
class ResumeReading:
    """Read again."""


@dataclass
class ShutWrite:
    """The last response is out: shut the write side (the client's bytes are then drained
    until EOF, `Limits`' linger bytes, or the "linger" timer, then `Close` comes)."""


@dataclass
class Close:
    """Close the connection."""


@dataclass
class Upgrade:
    """Every response before request `seq` is out (in the `Write`s before this): switch the
    connection to the protocol it asked for (WebSocket). `data` arrived after its head and
    belongs to that protocol. No action follows: the connection is the driver's now."""

    seq: int
    head: RequestHead
    data: bytes


Action = (
    Start
    | Write
    | BodyData
    | BodyEnd
    | BodyError
    | Cancel
    | Timer
    | PauseReading
    | ResumeReading
    | ShutWrite
    | Close
    | Upgrade
)
