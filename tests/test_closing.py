"""`pipeparse.servers.closing.linger`: the staged close's write-side shut and bounded drain."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from pipeparse import MiB
from pipeparse.servers.closing import LINGER_MAX_BYTES, LINGER_TIMEOUT, linger


class _NoHalfClose(trio.abc.Stream):
    """A stream without ``send_eof`` (as TLS is), over `inner`."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_the_defaults() -> None:
    assert LINGER_TIMEOUT == 2.0
    assert LINGER_MAX_BYTES == 1024 * 1024


async def test_it_shuts_the_write_side_and_drains_until_the_client_closes() -> None:
    server, client = trio.testing.memory_stream_pair()
    await client.send_all(b"late request bytes")
    await client.send_eof()
    assert await linger(server) == len(b"late request bytes")
    assert await client.receive_some() == b""  # the client saw our EOF


async def test_it_drains_at_most_the_byte_cap() -> None:
    server, client = trio.testing.memory_stream_pair()
    await client.send_all(b"x" * 5000)  # and never closes
    assert await linger(server, max_bytes=1000, receive_size=100) == 1000
    await client.send_all(b"x" * (2 * MiB))
    assert await linger(server) == LINGER_MAX_BYTES  # the default cap (64 KiB reads)


async def test_it_gives_up_at_the_deadline(autojump_clock: trio.testing.MockClock) -> None:
    server, client = trio.testing.memory_stream_pair()
    await client.send_all(b"abc")  # then silence: the client neither sends nor closes
    start = trio.current_time()
    assert await linger(server) == 3
    assert trio.current_time() - start == pytest.approx(LINGER_TIMEOUT)
    start = trio.current_time()
    assert await linger(server, timeout=0.5) == 0
    assert trio.current_time() - start == pytest.approx(0.5)


async def test_a_stream_without_half_close_is_drained_all_the_same() -> None:
    server, client = trio.testing.memory_stream_pair()
    await client.send_all(b"abc")
    await client.send_eof()
    assert await linger(_NoHalfClose(server)) == 3


async def test_a_broken_or_closed_stream_ends_it_quietly() -> None:
    server, client = trio.testing.lockstep_stream_pair()
    await client.aclose()
    assert await linger(server) == 0
    closed, _ = trio.testing.memory_stream_pair()
    await closed.aclose()
    assert await linger(closed) == 0
