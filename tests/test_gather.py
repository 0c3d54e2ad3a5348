"""`gather` and `unsent` (`pipeparse/_gather.py`): which pieces of a send are joined and which
leave as they are, and what is left after a partial send (as views, never copies)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeparse._gather import LARGE_PIECE, gather, unsent
from pipeparse._ordered import Chunk

BIG = b"B" * LARGE_PIECE


def test_small_pieces_are_joined_into_one_buffer() -> None:
    parts: list[Chunk] = [b"head", bytearray(b"body"), memoryview(b"x" * (LARGE_PIECE - 1))]
    assert gather(parts) == [b"headbody" + b"x" * (LARGE_PIECE - 1)]


def test_a_large_immutable_piece_leaves_as_it_is_between_joined_runs() -> None:
    view = memoryview(b"v" * (LARGE_PIECE + 1))
    buffers = gather([b"h1", b"h2", BIG, b"t", view, b"h3"])
    assert buffers == [b"h1h2", BIG, b"t", view, b"h3"]
    assert buffers[1] is BIG and buffers[3] is view  # not copied


def test_a_large_mutable_piece_is_copied_as_before() -> None:
    """A bytearray (or a view of one: the receive buffer) may change while the send waits."""
    mutable = bytearray(BIG)
    buffers = gather([b"h", mutable, memoryview(mutable), b"t"])
    assert buffers == [b"h" + BIG + BIG + b"t"]
    assert type(buffers[0]) is bytes


def test_a_single_small_piece_in_a_run_is_copied_unless_it_is_bytes() -> None:
    small = bytearray(b"head")
    buffers = gather([small, BIG])
    assert buffers == [b"head", BIG] and type(buffers[0]) is bytes


def test_unsent_cuts_the_first_buffer_by_a_view() -> None:
    buffers: list[Chunk] = [b"abc", BIG, b"xyz"]
    assert unsent(buffers, 0) == buffers
    rest = unsent(buffers, 5)
    assert [bytes(b) for b in rest] == [BIG[2:], b"xyz"]
    assert isinstance(rest[0], memoryview) and rest[0].obj is BIG  # a view, no copy
    assert rest[1] is buffers[2]
    assert unsent(buffers, 3) == [BIG, b"xyz"]  # on a boundary: no view
    assert unsent(buffers, 3 + len(BIG) + 3) == []


@given(st.lists(st.binary(max_size=40), min_size=1, max_size=8), st.data())
def test_a_send_resumed_from_unsent_after_any_partial_sends_sends_every_byte_once(
    pieces: list[bytes], data: st.DataObject
) -> None:
    whole = b"".join(pieces)
    out = b""
    rest: list[Chunk] = list(pieces)
    while rest:  # each send takes some of what is left
        left = b"".join(rest)
        step = data.draw(st.integers(min(1, len(left)), len(left)))
        out += left[:step]
        rest = unsent(rest, step)
        assert b"".join(rest) == whole[len(out) :]
    assert out == whole
