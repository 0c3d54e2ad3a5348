"""Ordered dispatch, sans-I/O: which request may start now, and which response bytes may leave.

`DispatchPolicy` applies RFC 9112 §9.3.2 to a pipeline: under ``safe`` (the default) requests
run concurrently only while every one in flight has a safe method (GET, HEAD, OPTIONS, TRACE);
an unsafe request waits until everything before it is answered, and holds back everything
after it until it is answered itself. ``all`` lets every request run concurrently (the app
declares its handlers independent); ``serial`` runs one at a time. All three bound the requests
in flight.

`OrderedResponses` keeps one slot per dispatched request, in request order. A handler writes into
its slot whenever it likes; bytes of the slot at the head of the line go straight to the output,
the others wait in their slots until every earlier response is complete. `take()` hands the
writer everything that may leave now, so contiguous ready responses go out in one send.
"""

from __future__ import annotations

from collections.abc import Iterable

# What a response's bytes may be: the writer sends them as they are (no copy).
Chunk = bytes | bytearray | memoryview

__all__ = ["SAFE_METHODS", "DispatchPolicy", "OrderedResponses", "ResponseSlot"]

SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE"})
_POLICIES = ("safe", "all", "serial")


class DispatchPolicy:
    """Counts requests in flight and says whether the next one may start."""

    __slots__ = ("in_flight", "max_in_flight", "mode", "unsafe_in_flight")

    def __init__(self, mode: str = "safe", max_in_flight: int = 16) -> None:
        if mode not in _POLICIES:
            raise ValueError(f"pipeline policy must be one of {_POLICIES}, got {mode!r}")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self.mode = mode
        self.max_in_flight = 1 if mode == "serial" else max_in_flight
        self.in_flight = 0
        self.unsafe_in_flight = 0

    def can_start(self, method: bytes) -> bool:
        n = self.in_flight
        if n >= self.max_in_flight:
            return False
        if n == 0 or self.mode == "all":
            return True
        return not self.unsafe_in_flight and method in SAFE_METHODS

    def started(self, method: bytes) -> None:
        self.in_flight += 1
        if method not in SAFE_METHODS:
            self.unsafe_in_flight += 1

    def finished(self, method: bytes) -> None:
        self.in_flight -= 1
        if method not in SAFE_METHODS:
            self.unsafe_in_flight -= 1

    def clear(self) -> None:
        """Nothing is in flight any more (the connection closed on them)."""
        self.in_flight = self.unsafe_in_flight = 0


class ResponseSlot:
    """One response's place in the line. `parts` holds bytes written before its turn."""

    __slots__ = ("close", "done", "parts", "seq", "size")

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.parts: list[Chunk] = []
        self.size = 0  # bytes waiting in `parts`
        self.done = False
        self.close = False  # the connection closes after this response


class OrderedResponses:
    """Response slots in request order; see the module comment."""

    __slots__ = ("_out", "_slots", "closing", "out_size")

    def __init__(self) -> None:
        # A list: at most the requests in flight, and an empty deque costs an idle connection
        # 600 bytes more than an empty list.
        self._slots: list[ResponseSlot] = []
        self._out: list[Chunk] = []
        self.out_size = 0  # bytes ready to leave
        self.closing = False  # a response that closes the connection has become ready

    def __len__(self) -> int:
        """Slots not yet complete and handed to the writer."""
        return len(self._slots)

    def reserve(self, seq: int) -> ResponseSlot:
        slot = ResponseSlot(seq)
        self._slots.append(slot)
        return slot

    def add(self, slot: ResponseSlot) -> None:
        """Reserve `slot` (a new one, made by the caller: a subclass may carry more)."""
        self._slots.append(slot)

    def is_head(self, slot: ResponseSlot) -> bool:
        return bool(self._slots) and self._slots[0] is slot

    def is_last(self, slot: ResponseSlot) -> bool:
        return bool(self._slots) and self._slots[-1] is slot

    def write(self, slot: ResponseSlot, data: Chunk) -> None:
        """Bytes of `slot`'s response, in order; they leave as soon as it is its turn."""
        if slot.done:
            raise RuntimeError(f"response {slot.seq} is already complete")
        slots = self._slots
        if self.closing or not slots:
            return  # a closing response went first: nothing after it is sent
        if slots[0] is slot:
            self._out.append(data)
            self.out_size += len(data)
        else:
            slot.parts.append(data)
            slot.size += len(data)

    def emit(
        self,
        seq: int,
        data: Chunk,
        close: bool = False,
        tail: Chunk | None = None,
    ) -> None:
        """The whole response of request `seq` (`data`, then `tail` if given), which comes
        after every reserved slot's.

        The hot path of an instant handler: with nothing pending it goes straight to the
        output and needs no slot; otherwise it waits, complete, in a slot of its own.
        """
        if self.closing:
            return  # a closing response went first: nothing after it is sent
        size = len(data) if tail is None else len(data) + len(tail)
        slots = self._slots
        if slots:
            slot = ResponseSlot(seq)
            slot.parts.append(data)
            if tail is not None:
                slot.parts.append(tail)
            slot.size = size
            slot.done = True
            slot.close = close
            slots.append(slot)
            return
        out = self._out
        out.append(data)
        if tail is not None:
            out.append(tail)
        self.out_size += size
        if close:
            self.closing = True

    def write_many(self, slot: ResponseSlot, parts: Iterable[Chunk]) -> None:
        for p in parts:
            self.write(slot, p)

    def finish(self, slot: ResponseSlot, close: bool = False) -> None:
        """`slot`'s response is complete; with `close`, nothing after it will be sent."""
        slot.done = True
        slot.close = slot.close or close
        slots = self._slots
        if not slots or slots[0] is not slot:
            return
        out = self._out
        ready = 0  # complete slots at the head, handed to the writer and dropped at the end
        while ready < len(slots) and slots[ready].done:
            s = slots[ready]
            ready += 1
            if s.close:
                self.closing = True
                slots.clear()  # nothing after a closing response is ever sent
                return
            if ready < len(slots):
                nxt = slots[ready]
                if nxt.parts:  # the next response's early bytes may leave now
                    out += nxt.parts
                    self.out_size += nxt.size
                    nxt.parts = []
                    nxt.size = 0
        del slots[:ready]

    @property
    def has_output(self) -> bool:
        return bool(self._out)

    def take(self) -> list[Chunk]:
        """Everything that may be sent now, in order (and forget it)."""
        out = self._out
        self._out = []
        self.out_size = 0
        return out
