"""Large response bodies over real sockets: pipelined with small ones, around the size at which
they stop being copied (`LARGE_PIECE`, pipeparse/_gather.py), byte-exact and in order.

On the trio engine a large body leaves in one ``os.writev`` with the bytes around it; the tests
wrap ``os.writev`` to see that the app's own body object was handed to it (no copy), and to
force partial sends and would-block errors, so resuming from the rest is exercised whatever
the kernel's buffers do. The trio engine writes through `servers/trio_writing.py`; the
asyncio driver (``transport.writelines``) gets the same requests.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import pytest
import trio

import pipeparse
from pipeparse import MiB
from pipeparse._gather import LARGE_PIECE
from pipeparse.servers.listen import Server
from tests.server_harness import parse_responses, receive_all, request
from tests.test_asyncio_driver import LOOPS, run, serving, talk
from tests.test_tls import Certs, certs_fixture  # noqa: F401  (the `certs` fixture)

# Small and large in turn, at and around the threshold, two 1 MiB bodies, an empty one.
SIZES = [10, LARGE_PIECE - 1, 3, LARGE_PIECE, LARGE_PIECE + 1, 1 * MiB, 0, 1 * MiB, 100]
_BODIES: dict[int, bytes] = {}


def body(size: int) -> bytes:
    """`size` bytes that differ with their size and position (a lost or moved piece shows);
    the same object every time, so the tests can tell it was not copied."""
    if size not in _BODIES:
        _BODIES[size] = (bytes(range(251)) * (size // 251 + 1))[size % 7 : size % 7 + size]
    return _BODIES[size]


@pytest.fixture
def engine() -> str:
    """The trio engine `pipeparse.serve` runs (``--engine pipeparse``)."""
    return "pipeparse"


async def sized(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """ASGI: ``GET /N`` answers N bytes."""
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body(int(scope["path"][1:]))})


def pipeline(sizes: Sequence[int]) -> bytes:
    last = len(sizes) - 1
    return b"".join(
        request("GET", f"/{n}", headers=[("Connection", "close")] if i == last else [])
        for i, n in enumerate(sizes)
    )


def check(data: bytes, sizes: Sequence[int]) -> None:
    responses = parse_responses(data)
    assert [r.status for r in responses] == [200] * len(sizes)
    for r, n in zip(responses, sizes, strict=True):
        assert r.body == body(n), f"the {n}-byte body differs"


def complete(data: bytes | bytearray, count: int) -> bool:
    try:
        return len(parse_responses(bytes(data))) == count
    except AssertionError:  # incomplete so far
        return False


def capped_writev(cap: int, block_every: int, calls: list[Sequence[Any]]) -> Callable[..., int]:
    """An ``os.writev`` that records its buffers, takes at most `cap` bytes a call, and says
    "would block" on every `block_every`-th call (as a full socket buffer does)."""
    real = os.writev

    def writev(fd: int, buffers: Sequence[Any]) -> int:
        calls.append(list(buffers))
        if block_every and len(calls) % block_every == 0:
            raise BlockingIOError
        taken: list[Any] = []
        room = cap
        for b in buffers:
            if room <= 0:
                break
            taken.append(memoryview(b)[:room])
            room -= len(taken[-1])
        return real(fd, taken)

    return writev


async def fetch(sizes: Sequence[int], certs: Certs | None = None) -> bytes:
    tls: dict[str, Any] = (
        {"ssl_certfile": certs.certfile, "ssl_keyfile": certs.keyfile} if certs else {}
    )
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(partial(pipeparse.serve, sized, port=0, **tls))
        try:
            stream: trio.abc.Stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            if certs is not None:
                stream = trio.SSLStream(stream, certs.client, server_hostname="127.0.0.1")
            async with stream:
                await stream.send_all(pipeline(sizes))
                if certs is None:
                    return await receive_all(stream)
                # TLS cannot half-close: the server lingers before its end; stop at the last
                # response instead.
                received = bytearray()
                while chunk := await stream.receive_some():
                    received += chunk
                    if len(received) > sum(sizes) and complete(received, len(sizes)):
                        break
                return bytes(received)
        finally:
            server.abort()


@pytest.mark.parametrize(
    ("cap", "block_every"),
    [(1 << 30, 0), (7000, 0), (100_000, 2)],
    ids=["whole", "partial-sends", "partial-and-would-block"],
)
async def test_large_bodies_leave_uncopied_in_order_and_intact(
    monkeypatch: pytest.MonkeyPatch, engine: str, cap: int, block_every: int
) -> None:
    calls: list[Sequence[Any]] = []
    monkeypatch.setattr(os, "writev", capped_writev(cap, block_every, calls))
    with trio.fail_after(30):
        data = await fetch(SIZES)
    check(data, SIZES)
    sent = [b for buffers in calls for b in buffers]
    # Each large body reached writev as the app's own object (or a view of it), no copy.
    for n in (LARGE_PIECE, LARGE_PIECE + 1, 1 * MiB):
        assert any(b is body(n) or (isinstance(b, memoryview) and b.obj is body(n)) for b in sent)
    # Below the threshold bodies are still joined with their neighbours, as before.
    assert not any(b is body(LARGE_PIECE - 1) for b in sent)


async def test_many_small_responses_still_leave_in_one_send(engine: str) -> None:
    """Without a large body nothing changes: the pipelined answers are joined, no writev."""
    sizes = [5] * 16
    calls: list[Sequence[Any]] = []
    with pytest.MonkeyPatch.context() as m:
        m.setattr(os, "writev", capped_writev(1 << 30, 0, calls))
        with trio.fail_after(30):
            data = await fetch(sizes)
    check(data, sizes)
    assert calls == []


async def test_large_bodies_over_tls(certs: Certs, engine: str) -> None:
    """Over TLS the stream encrypts each buffer (`send_all` each): still in order, intact."""
    with trio.fail_after(30):
        data = await fetch(SIZES, certs)
    check(data, SIZES)


@pytest.mark.parametrize("loop", LOOPS)
def test_large_bodies_on_the_asyncio_driver(loop: str) -> None:
    async def main(server: Any) -> bytes:
        return await talk(server.port, pipeline(SIZES))

    data = run(loop, lambda: serving(sized, main))
    check(data, SIZES)
