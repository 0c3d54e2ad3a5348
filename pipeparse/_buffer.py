"""SeekableBuffer: the receive side of a seekable socket, in user space.

Strategy
--------
Bytes land once, in a fixed-capacity `bytearray` block, written by `recv_into` (or `feed`).
Every byte has an *absolute* offset: its position in the whole stream since the buffer was
made. The *head* is the first byte not yet taken; the paper's offsets (`seek_recv`, `peek`,
`recv`) are relative to it, hole bytes included, so an offset names the same byte until it is
taken, whatever is taken around it.

Taking bytes from the middle (`seek_recv`, `take`) leaves a *hole*: an interval in the sorted
`_holes` list. Holes coalesce with their neighbours; when the head reaches a hole it jumps over
it, and the hole is dropped. A hole's bytes count as free space at once, wherever the hole is
(the paper's accounting): `writable()` is capacity minus the bytes still held.

Block size
----------
The block holds at most `capacity` bytes but starts empty and grows only as the bytes in flight
need it: a write that does not fit after the tail repacks the held runs into a block of the
smallest power of two (at least `min_block`, at most `capacity`) that holds them and the write,
so a deep pipeline's buffer grows toward `capacity` and a quiet connection's stays a few KiB.
`trim()` drops the block of an empty buffer (the server calls it before an idle wait), so an
idle connection holds no receive memory at all. (A pool of dropped blocks shared by all
buffers was tried and measured slower than allocating: a fresh 16 KiB `bytearray` costs less
than the pool's bookkeeping in Python.) With ``min_block >= capacity`` the block has
the whole capacity from the start and never changes size (the fixed buffer of old).

Physical space is recovered by compaction, which happens only on a write that would not fit
after the tail. Compaction squeezes out the head's leading space and every hole, packing the held
runs to the start of a block, and records where each run went in a small *segment map*
(`_seg_abs[i]` is the first absolute offset of run i, `_seg_pos[i]` its block position). The last
segment always holds everything from the last hole to the tail, so the newest data (all that a
framer ever scans) maps with one subtraction: `pos = abs - _delta`.

Views and compaction
--------------------
`seek_recv`, `take`, `view` and `peek` return `memoryview`s into the block, never copies. A
`bytearray` cannot be resized while a view of it lives, and moving bytes under a live view would
silently change what it shows. So compaction never touches a block that has a view alive: it
probes for exports (a one-byte resize raises `BufferError` while any view lives; only when a view
went out since the block was new or last probed clean, `_lent`); with none it
moves the held runs down in place, otherwise it copies them into a fresh block and drops its own
reference to the old one, which lives on, unchanged, until its last view is released. Growing,
shrinking and `trim` are that same move into a fresh block (of another size, or none), so they
never touch bytes a view shows either. A view is
therefore valid and immutable for as long as it is held. The cost: memory is bounded by
capacity times the number of blocks views still pin, so consumers should release views (or copy
with `bytes(view)`) once done with them; the server pins at most one block per in-flight request.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Protocol

from mypy_extensions import mypyc_attr

from ._errors import BufferFull

__all__ = ["MIN_BLOCK", "SeekableBuffer"]

MIN_BLOCK = 4 * 1024  # bytes: the smallest block a growing buffer allocates
_EMPTY = bytearray()  # the block of a buffer that holds nothing (never written or resized)
_EMPTY_VIEW = memoryview(_EMPTY)


class _RecvIntoSocket(Protocol):
    def recv_into(self, buffer: memoryview, nbytes: int = 0, /) -> int: ...


@mypyc_attr(allow_interpreted_subclasses=True)  # (compiled build: users may subclass it)
class SeekableBuffer:
    """A bounded receive buffer that can be taken from at any offset.

    Args:
        capacity: the most bytes it holds at once (holes do not count).
        min_block: the smallest block it allocates; at or above `capacity` the buffer gets a
            block of `capacity` bytes now and keeps it (see the module comment).
    """

    __slots__ = (
        "_block",
        "_capacity",
        "_delta",
        "_head",
        "_held_in_holes",
        "_holes",
        "_lent",
        "_min_block",
        "_mv",
        "_seg_abs",
        "_seg_pos",
        "_tail",
        "compactions",
    )

    def __init__(self, capacity: int = 1 << 20, *, min_block: int = MIN_BLOCK) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        if min_block <= 0:
            raise ValueError(f"min_block must be positive, got {min_block}")
        self._capacity = capacity
        self._min_block = min(min_block, capacity)
        if self._min_block == capacity:  # fixed: the whole capacity, now and always
            self._block = bytearray(capacity)
            self._mv = memoryview(self._block)
        else:
            self._block = _EMPTY
            self._mv = _EMPTY_VIEW
        self._head = 0  # absolute offset of the first byte not taken
        self._tail = 0  # absolute offset one past the last byte received
        self._holes: list[list[int]] = []  # sorted, disjoint, non-adjacent [start, end), >= head
        self._held_in_holes = 0  # bytes inside holes (between head and tail, already taken)
        self._seg_abs: list[int] = [0]  # segment map: first absolute offset of each run
        self._seg_pos: list[int] = [0]  # ... and its position in the block
        self._delta = 0  # for the last segment: block position = absolute offset - _delta
        # A view of the block went out since the block was new or a probe found none alive
        # (`_block_has_views`): without one, no probe is needed (at depth 1, per request).
        self._lent = False
        self.compactions = 0

    # -- sizes ---------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def block_size(self) -> int:
        """Bytes of the block it holds now (0 when it holds none)."""
        return len(self._block)

    @property
    def fixed(self) -> bool:
        """It holds its whole capacity, always (`trim` gives nothing back)."""
        return self._min_block == self._capacity

    @property
    def head(self) -> int:
        """Absolute offset of the head: the first byte a plain receive would return."""
        return self._head

    @property
    def tail(self) -> int:
        """Absolute offset one past the last byte received."""
        return self._tail

    def __len__(self) -> int:
        """Bytes held: received and not yet taken."""
        return self._tail - self._head - self._held_in_holes

    def writable(self) -> int:
        """Bytes that may be written now; 0 is the reader's signal to pause."""
        return self._capacity - len(self)

    @property
    def holes(self) -> list[tuple[int, int]]:
        """The holes, as head-relative ``(offset, length)`` pairs, in order."""
        return [(s - self._head, e - s) for s, e in self._holes]

    # -- writing -------------------------------------------------------------------------

    def recv_into(self, sock: _RecvIntoSocket, nbytes: int | None = None) -> int:
        """Receive once from `sock` straight into the buffer; returns the byte count (0: EOF).

        Raises `BufferFull` when there is no writable space.
        """
        room = self._room_for(nbytes)
        pos = self._tail - self._delta
        n = sock.recv_into(self._mv[pos : pos + room], room)
        self._tail += n
        return n

    def write_view(self, nbytes: int | None = None) -> memoryview:
        """A view of writable space for an async receive; follow it with `commit(n)`.

        The view must be released (or dropped) before the next write (it is not counted as
        a view that pins the block: see the module comment).
        """
        room = self._room_for(nbytes)
        pos = self._tail - self._delta
        return self._mv[pos : pos + room]

    def commit(self, n: int) -> None:
        """Count `n` bytes written into the view `write_view` returned."""
        if n < 0 or n > len(self._block) - (self._tail - self._delta):
            raise ValueError(f"cannot commit {n} bytes")
        self._tail += n

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append `data` (copied once, into the block); raises `BufferFull` if it doesn't fit."""
        n = len(data)
        if n == 0:
            return
        if n > self.writable():
            raise BufferFull(
                f"cannot write {n} bytes: {self.writable()} of {self._capacity} writable"
            )
        self._room_for(n)
        pos = self._tail - self._delta
        self._block[pos : pos + n] = data
        self._tail += n

    def write_unchecked(self, data: bytes | bytearray | memoryview) -> None:
        """`feed` for a caller that has checked `writable()` already (1 to that many bytes)."""
        n = len(data)
        pos = self._tail - self._delta
        if pos + n > len(self._block):
            self._room_for(n)
            pos = self._tail - self._delta
        self._block[pos : pos + n] = data
        self._tail += n

    def _room_for(self, nbytes: int | None) -> int:
        """Make `nbytes` (default: all writable) contiguous after the tail; returns the room."""
        free = self.writable()
        if free <= 0:
            raise BufferFull(f"buffer full: {self._capacity} bytes held")
        want = free if nbytes is None else min(nbytes, free)
        if want <= 0:
            raise ValueError(f"nbytes must be positive, got {nbytes}")
        size = len(self._block)
        if not size:  # nothing held (trimmed, or new): a fresh block, nothing to move
            size = self._block_size_for(want, 0)
            self._block = bytearray(size)
            self._mv = memoryview(self._block)
            self._lent = False
            self._seg_abs = [self._tail]
            self._seg_pos = [0]
            self._delta = self._tail
            return min(size, want) if nbytes is not None else size
        room = size - (self._tail - self._delta)
        if room < want:
            size = self._block_size_for(len(self) + want, size)
            self._compact(size)
            room = size - (self._tail - self._delta)
        return min(room, want) if nbytes is not None else room

    def _block_size_for(self, need: int, size: int) -> int:
        """The size of the block to repack into so that `need` bytes fit: the current one if
        they fit and it is not more than four times what they need, else the smallest power
        of two from `min_block` up that holds them (at most `capacity`)."""
        fit = max(1 << (need - 1).bit_length(), self._min_block)
        if need <= size <= 4 * fit:
            return size
        return min(fit, self._capacity)

    def trim(self) -> int:
        """Give the block back if nothing is held (a view still alive keeps its old block
        alive, unchanged); the next write allocates a small one. The bytes dropped (0: none)."""
        size = len(self._block)
        if self._head != self._tail or not size or self._min_block == self._capacity:
            return 0
        self._block = _EMPTY
        self._mv = _EMPTY_VIEW
        self._lent = False
        self._holes.clear()
        self._held_in_holes = 0
        self._seg_abs = [self._head]
        self._seg_pos = [0]
        self._delta = self._head
        return size

    def _compact(self, size: int) -> None:
        """Pack the held runs to the start of a block of `size` bytes: the same block when it
        has that size and no view is alive, else a fresh one (see the module comment)."""
        runs: list[tuple[int, int]] = []  # absolute [start, end) of held bytes
        start = self._head
        for hs, he in self._holes:
            if hs > start:
                runs.append((start, hs))
            start = he
        runs.append((start, self._tail))  # always: the last segment maps the tail, even empty
        src = self._block
        in_place = size == len(src) and not self._block_has_views()
        dst = src if in_place else bytearray(size)
        seg_abs: list[int] = []
        seg_pos: list[int] = []
        out = 0
        for s, e in runs:
            p = self._block_pos(s)
            n = e - s
            dst[out : out + n] = src[p : p + n]  # memmove when dst is src; forward-safe
            seg_abs.append(s)
            seg_pos.append(out)
            out += n
        self._block = dst
        self._mv = memoryview(dst)
        self._lent = False  # (a fresh block, or this one with no view alive)
        self._seg_abs = seg_abs
        self._seg_pos = seg_pos
        self._delta = seg_abs[-1] - seg_pos[-1]
        self.compactions += 1

    # -- addressing ----------------------------------------------------------------------

    def _block_pos(self, a: int) -> int:
        if a >= self._seg_abs[-1]:
            return a - self._delta
        i = bisect_right(self._seg_abs, a) - 1
        return self._seg_pos[i] + (a - self._seg_abs[i])

    def _check_held(self, start: int, end: int) -> None:
        if start < self._head or end > self._tail or start > end:
            raise ValueError(
                f"range [{start}, {end}) is outside the held bytes [{self._head}, {self._tail})"
            )
        for hs, he in self._holes:
            if hs >= end:
                break
            if he > start and end > start:
                raise ValueError(f"range [{start}, {end}) overlaps taken bytes [{hs}, {he})")

    def view(self, start: int, end: int) -> memoryview:
        """A view of the held bytes at absolute offsets [start, end), without taking them."""
        holes = self._holes
        if (
            self._seg_abs[-1] <= start <= end <= self._tail
            and start >= self._head
            and (not holes or holes[-1][1] <= start)
        ):  # the common case: after every hole, in the newest segment
            self._lent = True
            d = self._delta
            return self._mv[start - d : end - d]
        self._check_held(start, end)
        p = self._block_pos(start)
        self._lent = True
        return self._mv[p : p + (end - start)]

    def find(self, sub: bytes, start: int, end: int | None = None) -> int:
        """Absolute offset of `sub` in the newest segment at or after `start`, or -1.

        Only for bytes after the last hole (what a framer scans); C-speed `bytearray.find`.
        """
        d = self._delta
        if start < self._seg_abs[-1]:
            raise ValueError("find() scans only the bytes after the last hole")
        stop = (self._tail if end is None else min(end, self._tail)) - d
        i = self._block.find(sub, start - d, stop)
        return -1 if i < 0 else i + d

    def scan_bytes(self, start: int, end: int) -> bytes:
        """A copy of [start, end) in the newest segment, unchecked: for framers, which read
        only bytes after the last hole (see `find`)."""
        d = self._delta
        return self._mv[start - d : end - d].tobytes()

    # -- taking --------------------------------------------------------------------------

    def take(self, start: int, end: int) -> memoryview:
        """Take the bytes at absolute offsets [start, end): a view, and a hole left behind."""
        v = self.view(start, end)
        self._release(start, end)
        return v

    def release(self, start: int, end: int) -> None:
        """Take the bytes at absolute offsets [start, end) without looking at them."""
        if start == self._head and start <= end <= self._tail and not self._holes:
            self._head = end  # the common case: a consumer done with the next request
            if end == self._tail:
                self._after_head_moved()
            return
        self._check_held(start, end)
        self._release(start, end)

    def seek_recv(self, offset: int, n: int) -> memoryview:
        """The paper's seek_recv: take `n` bytes at `offset` from the head (a view)."""
        if offset < 0 or n < 0:
            raise ValueError("offset and n must not be negative")
        start = self._head + offset
        end = start + n
        if offset and n and end <= self._tail:
            # The common case (a receiver taking a message ahead of the ones it skips): past
            # every hole, in the newest segment. The new hole goes last, or extends the last.
            # With no hole at all the head is in the newest segment (a segment boundary is a
            # hole's end at the last repack; the head only passes a hole by reaching its end).
            holes = self._holes
            if not holes:
                self._held_in_holes += n
                holes.append([start, end])
                self._lent = True
                d = self._delta
                return self._mv[start - d : end - d]
            last = holes[-1]
            if last[1] <= start and start >= self._seg_abs[-1]:
                self._held_in_holes += n
                if last[1] == start:
                    last[1] = end
                else:
                    holes.append([start, end])
                self._lent = True
                d = self._delta
                return self._mv[start - d : end - d]
        return self.take(start, end)

    def peek(self, offset: int, n: int) -> memoryview:
        """Read `n` bytes at `offset` from the head without taking them."""
        if offset < 0 or n < 0:
            raise ValueError("offset and n must not be negative")
        return self.view(self._head + offset, self._head + offset + n)

    def recv(self, n: int) -> memoryview:
        """Take up to `n` bytes from the head, skipping holes (a copy only if they span one)."""
        if n < 0:
            raise ValueError("n must not be negative")
        a = self._head
        e = a + n
        tail = self._tail
        if e > tail:
            e = tail
        holes = self._holes
        if not holes or (holes[0][0] >= e and a >= self._seg_abs[-1]):
            # The common case: no hole in the way, all in the newest segment (with no hole at
            # all, the head always is: see seek_recv). The head moves to `e`, and over the
            # hole that starts there, if any (holes coalesce: one at most).
            d = self._delta
            self._lent = True  # (before `_after_head_moved`: this view is alive)
            view = self._mv[a - d : e - d]
            if holes and holes[0][0] == e:
                hs, e = holes.pop(0)
                self._held_in_holes -= e - hs
            self._head = e
            if e == tail:
                self._after_head_moved()
            return view
        parts: list[memoryview] = []
        got = 0
        a = self._head
        holes = self._holes
        while got < n and a < self._tail:
            stop = holes[0][0] if holes else self._tail
            e = min(stop, a + (n - got))
            parts.append(self.view(a, e))
            got += e - a
            self._release(a, e)
            a = self._head
        if len(parts) == 1:
            return parts[0]
        return memoryview(b"".join(parts))

    def _release(self, start: int, end: int) -> None:
        if start == end:
            return
        holes = self._holes
        if start == self._head:
            # The common case: taking at the head moves it, then over any hole it reaches.
            self._head = end
            while holes and holes[0][0] <= self._head:
                hs, he = holes.pop(0)
                self._held_in_holes -= he - hs
                self._head = he
            self._after_head_moved()
            return
        self._held_in_holes += end - start
        i = bisect_right(holes, [start, end])
        # Coalesce with the hole before and the hole after, when they touch.
        if i > 0 and holes[i - 1][1] == start:
            holes[i - 1][1] = end
            if i < len(holes) and holes[i][0] == end:
                holes[i - 1][1] = holes[i][1]
                del holes[i]
        elif i < len(holes) and holes[i][0] == end:
            holes[i][0] = start
        else:
            holes.insert(i, [start, end])

    def _after_head_moved(self) -> None:
        # Empty: restart at the block's start (no bytes to move), unless a view still shows
        # the bytes there; then the next compaction moves to a fresh block. (Every time: a
        # driver that reads straight into the buffer asks for a whole receive's room.)
        if (
            self._head == self._tail
            and not self._holes
            and self._head - self._delta > 0
            and not self._block_has_views()
        ):
            self._seg_abs = [self._head]
            self._seg_pos = [0]
            self._delta = self._head

    def _block_has_views(self) -> bool:
        """True while a view handed out still shows the block (a resize would fail). The
        probe shrinks by one byte and grows back: never past the allocation, so no realloc.
        Skipped when no view went out since the last clean probe (a body-less request's bytes
        are only copied out: its head is parsed from `scan_bytes`)."""
        block = self._block
        if not block or not self._lent:
            return False  # the shared empty block, or no view of this one went out
        self._mv.release()
        try:
            last = block.pop()
        except BufferError:
            return True
        else:
            block.append(last)
            self._lent = False
            return False
        finally:
            self._mv = memoryview(block)
