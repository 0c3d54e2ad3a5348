"""SeekableBuffer: seeking, holes, capacity, compaction and the views it hands out.

Strategy: fixed scenarios first (the Seekable Sockets paper's skip-and-seek, holes coalescing in
every order, recv across holes, capacity), then a model-based hypothesis test that runs random
feeds, takes, receives and peeks against a plain model of the stream (every byte fed, and which
are taken) while holding some views across compactions.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeparse import BufferFull, SeekableBuffer


class FakeSocket:
    """Just enough of a socket for `recv_into`: hands out `data` in order, then EOF."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.calls: list[int] = []

    def recv_into(self, buffer: memoryview, nbytes: int = 0, /) -> int:
        self.calls.append(nbytes)
        n = min(len(buffer), nbytes or len(buffer), len(self.data))
        buffer[:n] = self.data[:n]
        self.data = self.data[n:]
        return n


def _messages(n: int) -> list[bytes]:
    return [bytes([65 + i % 26]) * (3 + i) for i in range(n)]


# -- the paper's scenario ---------------------------------------------------------------------


@pytest.mark.parametrize("skipped", range(2, 17))
def test_skip_n_messages_seek_the_next_then_take_the_skipped(skipped: int) -> None:
    msgs = _messages(skipped + 1)
    buf = SeekableBuffer(1024)
    buf.feed(b"".join(msgs))
    offset = sum(len(m) for m in msgs[:skipped])
    wanted = msgs[skipped]

    assert bytes(buf.seek_recv(offset, len(wanted))) == wanted
    assert buf.holes == [(offset, len(wanted))]
    assert len(buf) == offset
    assert buf.writable() == 1024 - offset
    for m in msgs[:skipped]:
        assert bytes(buf.recv(len(m))) == m
    assert len(buf) == 0
    assert buf.holes == []
    assert buf.head == buf.tail == offset + len(wanted)


# -- holes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("pieces", [4, 5])
@pytest.mark.parametrize("prefix", [0, 2])
def test_holes_coalesce_in_every_order(pieces: int, prefix: int) -> None:
    """Take adjacent pieces in every order; after each take the holes are exactly the maximal
    taken runs past the head (see `Model`), and a hole's bytes count as free at once."""
    size = 3  # bytes per piece
    data = bytes(range(prefix + pieces * size + 1))  # one byte held after the pieces
    for order in itertools.permutations(range(pieces)):
        buf = SeekableBuffer(64)
        buf.feed(data)
        model = Model(64)
        model.data += data
        model.taken = [False] * len(data)
        for p in order:
            start = prefix + p * size
            assert bytes(buf.take(start, start + size)) == data[start : start + size]
            model.taken[start : start + size] = [True] * size
            assert buf.head == model.head, order
            assert buf.holes == model.holes(), order
            assert len(buf) == model.held()
            assert buf.writable() == 64 - model.held()
        # All pieces taken: one hole (or none, when the head moved over them).
        assert buf.holes == ([(prefix, pieces * size)] if prefix else [])
        if prefix:
            assert bytes(buf.recv(prefix)) == data[:prefix]  # the head jumps the whole hole
        assert buf.holes == []
        assert buf.head == len(data) - 1
        assert bytes(buf.recv(10)) == data[-1:]


def test_recv_skips_holes() -> None:
    buf = SeekableBuffer(64)
    buf.feed(b"abcdefghij")
    assert bytes(buf.take(2, 4)) == b"cd"
    assert bytes(buf.take(6, 7)) == b"g"
    assert buf.holes == [(2, 2), (6, 1)]
    assert bytes(buf.recv(3)) == b"abe"  # spans the first hole
    assert buf.holes == [(1, 1)]  # "f" is the new head: offsets are relative to it
    assert bytes(buf.recv(100)) == b"fhij"
    assert len(buf) == 0
    assert buf.holes == []
    assert bytes(buf.recv(5)) == b""


def test_peek_view_and_take_refuse_taken_bytes() -> None:
    buf = SeekableBuffer(64)
    buf.feed(b"0123456789")
    buf.take(4, 6)
    assert bytes(buf.peek(0, 4)) == b"0123"
    assert bytes(buf.peek(6, 4)) == b"6789"
    for offset, n in [(3, 2), (4, 1), (5, 3), (0, 10)]:
        with pytest.raises(ValueError, match="taken"):
            buf.peek(offset, n)
    with pytest.raises(ValueError, match="taken"):
        buf.view(5, 7)
    with pytest.raises(ValueError, match="taken"):
        buf.take(4, 6)
    with pytest.raises(ValueError, match="taken"):
        buf.release(0, 5)
    buf.recv(2)
    with pytest.raises(ValueError, match="outside"):
        buf.view(0, 3)  # before the head
    with pytest.raises(ValueError, match="outside"):
        buf.view(8, 11)  # past the tail
    with pytest.raises(ValueError, match="outside"):
        buf.peek(0, 20)
    with pytest.raises(ValueError, match="negative"):
        buf.peek(-1, 1)
    with pytest.raises(ValueError, match="negative"):
        buf.seek_recv(0, -1)
    with pytest.raises(ValueError, match="negative"):
        buf.recv(-1)
    assert len(buf) == 6


# -- capacity -------------------------------------------------------------------------------


def test_capacity_and_buffer_full_on_feed() -> None:
    with pytest.raises(ValueError):
        SeekableBuffer(0)
    buf = SeekableBuffer(16)
    assert buf.capacity == 16
    buf.feed(b"x" * 10)
    with pytest.raises(BufferFull):
        buf.feed(b"y" * 7)
    assert (len(buf), buf.tail) == (10, 10)  # nothing of the refused write landed
    buf.feed(b"y" * 6)
    assert buf.writable() == 0
    with pytest.raises(BufferFull):
        buf.feed(b"z")
    buf.feed(b"")  # an empty write always fits
    assert bytes(buf.recv(16)) == b"x" * 10 + b"y" * 6


def test_recv_into_from_a_socket() -> None:
    sock = FakeSocket(b"a" * 40)
    buf = SeekableBuffer(16)
    assert buf.recv_into(sock, 5) == 5
    assert sock.calls == [5]
    assert buf.recv_into(sock) == 11  # all writable space
    assert buf.writable() == 0
    with pytest.raises(BufferFull):
        buf.recv_into(sock)
    assert sock.calls == [5, 16 - 5]  # the full buffer never called the socket
    buf.take(2, 12)  # a hole: free at once, usable after compaction
    assert buf.writable() == 10
    assert buf.recv_into(sock, 100) == 10
    assert buf.compactions == 1
    assert bytes(buf.recv(2)) == b"aa"
    assert bytes(buf.recv(20)) == b"a" * 14
    rest = FakeSocket(b"")
    assert buf.recv_into(rest) == 0  # EOF


def test_hole_space_is_free_at_once_and_usable_after_compaction() -> None:
    buf = SeekableBuffer(100)
    data = bytes(range(100))
    buf.feed(data)
    assert buf.writable() == 0
    buf.take(10, 60)
    assert buf.writable() == 50
    buf.feed(b"\xff" * 50)
    assert buf.compactions == 1
    assert buf.writable() == 0
    assert bytes(buf.view(0, 10)) == data[:10]
    assert bytes(buf.view(60, 100)) == data[60:]
    assert bytes(buf.view(100, 150)) == b"\xff" * 50
    assert buf.holes == [(10, 50)]
    assert bytes(buf.recv(100)) == data[:10] + data[60:] + b"\xff" * 50


def test_hole_reaching_the_tail_takes_no_room_after_compaction() -> None:
    buf = SeekableBuffer(100)
    buf.feed(b"a" * 60)
    buf.take(10, 60)  # a hole up to the tail
    assert buf.writable() == 90
    buf.feed(b"b" * 90)  # needs the hole's space
    assert len(buf) == 100
    assert bytes(buf.view(150, 150)) == b""
    assert bytes(buf.recv(100)) == b"a" * 10 + b"b" * 90
    buf.feed(b"c" * 100)
    assert bytes(buf.recv(100)) == b"c" * 100


def _hand_out(buf: SeekableBuffer, how: str) -> memoryview:
    """A view of the first 8 bytes held, handed out `how`."""
    if how == "seek_recv":
        return buf.seek_recv(0, 8)
    if how == "recv":
        return buf.recv(8)
    if how == "take":
        return buf.take(buf.head, buf.head + 8)
    if how == "view":
        return buf.view(buf.head, buf.head + 8)
    return buf.peek(0, 8)


def _drain(buf: SeekableBuffer) -> None:
    if buf.head < buf.tail:
        buf.release(buf.head, buf.tail)
    assert buf.head == buf.tail


@pytest.mark.parametrize("how", ["recv", "take", "view", "peek", "seek_recv"])
def test_an_emptied_block_is_reused_only_when_no_view_shows_it(how: str) -> None:
    """Emptied, the block's start is reused (no compaction before it fills); with a view of
    it alive, the next write that needs the room moves to a fresh block instead."""
    buf = SeekableBuffer(1024, min_block=64)
    buf.feed(b"a" * 16)
    kept = _hand_out(buf, how)
    _drain(buf)
    buf.feed(b"c" * 64)  # all of the block: the bytes the view shows may not be reused
    assert buf.compactions == 1 and bytes(kept) == b"a" * 8
    _drain(buf)
    kept.release()

    buf.feed(b"d" * 16)
    _hand_out(buf, how).release()
    _drain(buf)  # no view alive: the block starts over
    buf.feed(b"e" * 64)
    assert buf.compactions == 1 and bytes(buf.recv(64)) == b"e" * 64


def test_views_survive_compaction_unchanged() -> None:
    buf = SeekableBuffer(32)
    buf.feed(b"0123456789abcdefghijklmnopqrstuv")
    held = buf.take(0, 4)  # a view of taken bytes, still held
    peeked = buf.view(20, 24)  # a view of bytes still in the buffer
    buf.take(4, 20)
    buf.feed(b"A" * 20)  # forces a compaction while views are alive
    assert buf.compactions == 1
    assert bytes(held) == b"0123"
    assert bytes(peeked) == b"klmn"
    assert bytes(buf.view(20, 32)) == b"klmnopqrstuv"
    assert bytes(buf.view(32, 52)) == b"A" * 20
    held.release()
    peeked.release()
    buf.take(20, 40)
    buf.feed(b"B" * 20)  # no view alive: compaction in place
    assert buf.compactions == 2
    assert bytes(buf.recv(32)) == b"A" * 12 + b"B" * 20


def test_a_growing_buffer_starts_empty_and_grows_only_as_needed() -> None:
    buf = SeekableBuffer(1024, min_block=64)
    assert buf.block_size == 0 and buf.capacity == 1024 and buf.writable() == 1024
    buf.feed(b"x" * 10)
    assert buf.block_size == 64
    buf.feed(b"y" * 100)  # 110 held: the next power of two
    assert buf.block_size == 128
    buf.feed(b"z" * 914)  # the whole capacity
    assert buf.block_size == 1024 and buf.writable() == 0
    with pytest.raises(BufferFull):
        buf.feed(b"!")


def test_growth_and_shrinking_never_move_bytes_under_a_live_view() -> None:
    buf = SeekableBuffer(4096, min_block=64)
    buf.feed(b"a" * 40)
    first = buf.take(buf.head, buf.head + 20)  # a view into the 64-byte block
    buf.feed(b"b" * 200)  # grows: the held bytes move to a fresh 256-byte block
    assert buf.block_size == 256 and bytes(first) == b"a" * 20
    rest = buf.take(buf.head, buf.tail)
    assert bytes(rest) == b"a" * 20 + b"b" * 200
    buf.feed(b"c" * 30)  # fits after the tail: no move at all
    whole = buf.take(buf.head, buf.tail)
    assert buf.trim() == 256  # empty: the block goes (its bytes), the views keep theirs
    assert buf.block_size == 0
    assert bytes(first) == b"a" * 20 and bytes(rest) == b"a" * 20 + b"b" * 200
    assert bytes(whole) == b"c" * 30
    buf.feed(b"d" * 10)  # a small block again, not the grown one
    assert buf.block_size == 64 and bytes(buf.recv(10)) == b"d" * 10
    assert bytes(whole) == b"c" * 30


def test_a_big_block_shrinks_when_a_write_needs_much_less() -> None:
    buf = SeekableBuffer(4096, min_block=64)
    buf.feed(b"x" * 4000)
    assert buf.block_size == 4096
    buf.release(buf.head, buf.tail - 10)  # 10 held, at the block's end
    buf.feed(b"y" * 200)  # no room after the tail: 210 bytes need only 256
    assert buf.block_size == 256
    buf.release(buf.head, buf.tail - 4)
    buf.feed(b"z" * 40)  # fits after the tail
    buf.feed(b"w" * 100)  # 144 fit the 256 block after an in-place compaction
    assert buf.block_size == 256
    assert bytes(buf.recv(4096)) == b"y" * 4 + b"z" * 40 + b"w" * 100


def test_a_connection_that_goes_idle_then_pipelines_again() -> None:
    """Busy (the block grows), idle (trimmed to nothing), busy again (grows again), with a
    handler's view from the first busy spell alive throughout."""
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    buf = SeekableBuffer(64 * 1024, min_block=4096)
    buf.feed(request * 16)
    assert buf.block_size == 4096
    kept = buf.take(buf.head, buf.head + len(request))  # a handler still holds its request
    buf.feed(request * 400)  # a deep pipeline: the block grows
    grown = buf.block_size
    assert grown > 4096
    buf.release(buf.head, buf.tail)
    assert buf.trim() and buf.block_size == 0  # idle: no receive memory
    assert not buf.trim()  # (nothing more to give back)
    buf.feed(request)
    assert buf.block_size == 4096  # a lone request needs a small block
    buf.feed(request * 1000)
    assert buf.block_size >= grown  # pipelining again: grows again
    assert bytes(buf.recv(len(request) * 1001)) == request * 1001
    assert bytes(kept) == request


def test_a_fixed_buffer_never_changes_its_block() -> None:
    buf = SeekableBuffer(256, min_block=256)
    assert buf.block_size == 256
    buf.feed(b"x" * 10)
    buf.release(buf.head, buf.tail)
    assert not buf.trim() and buf.block_size == 256


def test_write_view_and_commit() -> None:
    buf = SeekableBuffer(16)
    view = buf.write_view(5)
    assert len(view) == 5
    view[:3] = b"abc"
    view.release()
    buf.commit(3)
    assert (buf.tail, len(buf)) == (3, 3)
    view = buf.write_view()
    assert len(view) == 13
    view[:13] = b"d" * 13
    view.release()
    buf.commit(13)
    with pytest.raises(BufferFull):
        buf.write_view()
    with pytest.raises(ValueError):
        buf.commit(1)
    with pytest.raises(ValueError):
        buf.commit(-1)
    buf.take(1, 2)
    view = buf.write_view(8)  # compacts to give the hole's byte
    assert len(view) == 1
    view[0] = ord("e")
    view.release()
    buf.commit(1)
    assert bytes(buf.recv(16)) == b"ac" + b"d" * 13 + b"e"
    with pytest.raises(ValueError):
        buf.write_view(0)


# -- model-based ----------------------------------------------------------------------------


class Model:
    """The stream as plain data: every byte fed, and which are taken."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.data = bytearray()
        self.taken: list[bool] = []

    @property
    def head(self) -> int:
        i = 0
        while i < len(self.taken) and self.taken[i]:
            i += 1
        return i

    def held_runs(self) -> list[tuple[int, int]]:
        runs: list[tuple[int, int]] = []
        for i, t in enumerate(self.taken):
            if t:
                continue
            if runs and runs[-1][1] == i:
                runs[-1] = (runs[-1][0], i + 1)
            else:
                runs.append((i, i + 1))
        return runs

    def holes(self) -> list[tuple[int, int]]:
        head = self.head
        out: list[tuple[int, int]] = []
        for i in range(head, len(self.taken)):
            if self.taken[i]:
                if out and out[-1][0] + out[-1][1] == i - head:
                    out[-1] = (out[-1][0], out[-1][1] + 1)
                else:
                    out.append((i - head, 1))
        return out

    def held(self) -> int:
        return self.taken.count(False)


def _check(buf: SeekableBuffer, model: Model, views: list[tuple[memoryview, bytes]]) -> None:
    assert buf.head == model.head
    assert buf.tail == len(model.data)
    assert len(buf) == model.held()
    assert buf.writable() == model.capacity - model.held()
    assert buf.holes == model.holes()
    for view, expected in views:
        assert bytes(view) == expected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(8, 64), st.integers(1, 80), st.data())
def test_random_operations_match_a_model(
    capacity: int, min_block: int, data: st.DataObject
) -> None:
    """Growing (min_block < capacity), shrinking, trimming and fixed buffers alike."""
    buf = SeekableBuffer(capacity, min_block=min_block)
    model = Model(capacity)
    views: list[tuple[memoryview, bytes]] = []
    counter = 0
    for _ in range(data.draw(st.integers(1, 40))):
        op = data.draw(
            st.sampled_from(["feed", "feed", "take", "seek", "recv", "peek", "drop", "trim"])
        )
        runs = model.held_runs()
        if op == "feed":
            n = data.draw(st.integers(1, capacity))
            chunk = bytes((counter + i) % 251 for i in range(n))
            counter += n
            if n > model.capacity - model.held():
                with pytest.raises(BufferFull):
                    buf.feed(chunk)
            else:
                buf.feed(chunk)
                model.data += chunk
                model.taken += [False] * n
        elif op in ("take", "seek", "peek") and runs:
            s, e = data.draw(st.sampled_from(runs))
            a = data.draw(st.integers(s, e))
            b = data.draw(st.integers(a, e))
            expected = bytes(model.data[a:b])
            if op == "take":
                view = buf.take(a, b)
                model.taken[a:b] = [True] * (b - a)
            elif op == "seek":  # the paper's call: offset and length from the head
                view = buf.seek_recv(a - model.head, b - a)
                model.taken[a:b] = [True] * (b - a)
            else:
                view = buf.peek(a - model.head, b - a)
            assert bytes(view) == expected
            if data.draw(st.booleans()):
                views.append((view, expected))  # held across later writes and compactions
            else:
                view.release()
        elif op == "recv":
            n = data.draw(st.integers(0, capacity))
            expected = bytes(model.data[i] for i in range(len(model.taken)) if not model.taken[i])[
                :n
            ]
            assert bytes(buf.recv(n)) == expected
            for i in range(len(model.taken)):
                if n == 0:
                    break
                if not model.taken[i]:
                    model.taken[i] = True
                    n -= 1
        elif op == "drop" and views:
            views.pop(data.draw(st.integers(0, len(views) - 1)))[0].release()
        elif op == "trim":
            had_block = buf.block_size > 0
            size = buf.block_size
            trimmed = buf.trim()
            assert bool(trimmed) == (model.held() == 0 and min_block < capacity and had_block)
            assert trimmed in (0, size)
            if model.held() == 0 and min_block < capacity:
                assert buf.block_size == 0
        _check(buf, model, views)
        assert buf.block_size <= capacity
        if min_block >= capacity:
            assert buf.block_size == capacity  # fixed: never grows, shrinks or trims
