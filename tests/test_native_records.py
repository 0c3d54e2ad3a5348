"""The native interface's records: `HttpRequest`'s body (`body`, `read`, `stream`) and
`Response`, as a handler uses them (also run against the compiled build)."""

from __future__ import annotations

import pytest

from pipeparse import BodyStream, HttpRequest, Response


class Pieces:
    """A `BodySource` that hands out `pieces`, then the end."""

    def __init__(self, *pieces: bytes) -> None:
        self.pieces = list(pieces)
        self.asked = 0

    async def next_chunk(self) -> bytes | None:
        self.asked += 1
        return self.pieces.pop(0) if self.pieces else None

    async def wait_disconnect(self) -> None:
        raise AssertionError("not asked here")


def request(body: bytes | None, source: Pieces | None = None) -> HttpRequest:
    return HttpRequest(b"POST", b"/", b"1.1", [], 0, body, source or Pieces())


async def test_a_whole_body_is_one_piece_and_an_empty_one_none() -> None:
    assert [piece async for piece in request(b"abc").stream()] == [b"abc"]
    assert [piece async for piece in request(b"").stream()] == []
    whole = request(b"abc")
    assert whole.body_complete and whole.body == b"abc" and await whole.read() == b"abc"


async def test_a_streamed_body_comes_piece_by_piece_until_the_source_ends() -> None:
    source = Pieces(b"ab", b"cd")
    streamed = request(None, source)
    assert not streamed.body_complete
    with pytest.raises(RuntimeError, match="still arriving"):
        _ = streamed.body
    stream = streamed.stream()
    assert isinstance(stream, BodyStream)
    assert [piece async for piece in stream] == [b"ab", b"cd"]
    assert source.asked == 3
    with pytest.raises(StopAsyncIteration):  # (ended: the source is not asked again)
        await stream.__anext__()
    assert source.asked == 3


async def test_read_joins_the_pieces_and_keeps_the_body() -> None:
    streamed = request(None, Pieces(b"ab", b"cd"))
    assert await streamed.read() == b"abcd"
    assert streamed.body_complete and streamed.body == b"abcd"


async def test_aclose_ends_a_stream_early() -> None:
    source = Pieces(b"ab", b"cd")
    stream = request(None, source).stream()
    assert await stream.__anext__() == b"ab"
    await stream.aclose()
    assert [piece async for piece in stream] == []
    assert source.asked == 1


def test_records_can_be_subclassed() -> None:
    class Tagged(Response):
        pass

    class Named(HttpRequest):
        def name(self) -> str:
            return self.target.decode()

    assert Tagged(b"x", 201).status == 201
    named = Named(b"GET", b"/n", b"1.1", [], 3, b"", Pieces())
    assert named.name() == "/n" and named.seq == 3
