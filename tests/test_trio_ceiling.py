"""The ceiling loops the README compares the trio driver with
(`clients/crosscheck/trio_ceiling.py`): each answers pipelined requests over a real socket, in
order, and ends when the client closes; the core's loop frames and answers like the server."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from pipeparse.clients.crosscheck.trio_ceiling import LOOPS, main

REQUEST = b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n"


async def exchange(loop: str, data: bytes, answers: int) -> bytes:
    """Send `data` to `loop` over a socket pair; what came back once `answers` bodies did."""
    ours, theirs = trio.socket.socketpair()
    got = b""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(LOOPS[loop], ours)
        await theirs.send(data)
        while got.count(b"HTTP/1.1 ") < answers or not got.endswith((b"!", b"Found")):
            chunk = await theirs.recv(65536)
            assert chunk, "the loop closed early"
            got += chunk
        theirs.close()  # the loop ends at the end of the stream
    ours.close()
    return got


@pytest.mark.parametrize("loop", sorted(LOOPS))
async def test_each_loop_answers_pipelined_requests(loop: str) -> None:
    got = await exchange(loop, REQUEST * 3, 3)
    assert got.count(b"HTTP/1.1 200 OK\r\n") == 3
    assert got.count(b"Hello, World!") == 3


async def test_the_core_loop_frames_like_the_server() -> None:
    got = await exchange("core", b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n" + REQUEST, 2)
    assert got.startswith(b"HTTP/1.1 404 Not Found\r\n")  # in request order
    assert got.endswith(b"Hello, World!")


def test_an_unknown_loop_is_refused() -> None:
    with pytest.raises(SystemExit):
        main(["fastest"])


async def test_the_sleeps_loop_sleeps_each_request_in_a_task_of_its_own(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Three requests of 10 (virtual) seconds each are answered after 10 seconds, not 30:
    their sleeps run at once; a request with no sleep_ms does not sleep."""
    sleepy = b"GET /?sleep_ms=10000 HTTP/1.1\r\nHost: x\r\n\r\n"
    start = trio.current_time()
    got = await exchange("sleeps", sleepy * 3, 3)
    assert got.count(b"Hello, World!") == 3
    assert 10 <= trio.current_time() - start < 20
    start = trio.current_time()
    await exchange("sleeps", REQUEST, 1)
    assert trio.current_time() - start < 1
