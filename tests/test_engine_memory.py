"""The pipeparse engine's receive memory follows the bytes in flight.

Strategy: the engine runs over memory streams (`server_harness.open_connection`) with its
`ServerConnection`'s `SeekableBuffer` replaced by a subclass that records the largest block it
ever held. After each exchange the test lets the connection idle a little (virtual time: past
`TRIM_AFTER`) and looks at the buffer: an idle connection holds no block, whether its
handlers answered at once or blocked first (the leader then already waits for input when the
last answer goes out), and a deep pipeline made the block grow, then gave it back too. A
connection that is busy again at once keeps its block (no allocation per batch).
`--fixed-buffer` keeps the old behaviour: the whole buffer, always.
"""

from __future__ import annotations

import functools
from typing import ClassVar

import pytest
import trio
import trio.testing

from pipeparse import MIN_BLOCK, HttpRequest, Response, SeekableBuffer, ServerConnection, native
from pipeparse._reading import TRIM_AFTER
from pipeparse.servers import engine_pipeparse
from pipeparse.servers.config import ServerConfig
from pipeparse.servers.handlers import native_handler
from tests.server_harness import ServeConnection, open_connection, parse_responses

IDLE = 2 * TRIM_AFTER
WATCHDOGS = ("_watch",)  # the driver's request-timeout watchdog (`RequestTimers`)


class RecordingBuffer(SeekableBuffer):
    made: ClassVar[list[RecordingBuffer]] = []

    def __init__(self, capacity: int, *, min_block: int) -> None:
        super().__init__(capacity, min_block=min_block)
        self.largest = 0
        RecordingBuffer.made.append(self)

    def write_view(self, nbytes: int | None = None) -> memoryview:
        view = super().write_view(nbytes)
        self.largest = max(self.largest, self.block_size)
        return view

    def feed(self, data: bytes | bytearray | memoryview) -> None:  # (memory streams)
        super().feed(data)
        self.largest = max(self.largest, self.block_size)

    def write_unchecked(self, data: bytes | bytearray | memoryview) -> None:
        super().write_unchecked(data)
        self.largest = max(self.largest, self.block_size)


@pytest.fixture
def serve() -> ServeConnection:
    # the engine's buffer is its `ServerConnection`'s (a compiled build binds its globals: the
    # buffer's class and the connection's are arguments)
    connection = functools.partial(ServerConnection, buffer_type=RecordingBuffer)
    return functools.partial(engine_pipeparse.serve_connection, connection=connection)


@pytest.fixture
def buffers() -> list[RecordingBuffer]:
    RecordingBuffer.made = []
    return RecordingBuffer.made


@native
async def app(request: HttpRequest) -> Response:
    if request.target.startswith(b"/sleep"):
        await trio.sleep(1)  # blocks: the leader waits for input while it runs
    elif request.target.startswith(b"/slow"):
        await trio.sleep(100)  # over the request timeout
    return Response(request.target)


def get(target: str) -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode()


async def answers(client: trio.abc.ReceiveStream, count: int) -> list[bytes]:
    received = b""
    while received.count(b"HTTP/1.1 ") < count or not received.endswith(b"/%d" % (count - 1)):
        received += await client.receive_some()
    return [r.body for r in parse_responses(received)]


@pytest.mark.parametrize("target", ["/now", "/sleep"])
async def test_an_idle_connection_holds_no_receive_block(
    buffers: list[RecordingBuffer],
    autojump_clock: trio.testing.MockClock,
    serve: ServeConnection,
    target: str,
) -> None:
    config = ServerConfig(keep_alive_timeout=100)  # (idling must not close it)
    async with open_connection(serve, native_handler(app), config) as client:
        for round_ in range(3):  # idle, then busy again, then idle
            await client.send_all(b"".join(get(f"{target}/{i}") for i in range(4)))
            bodies = await answers(client, 4)
            assert bodies == [f"{target}/{i}".encode() for i in range(4)], round_
            await trio.testing.wait_all_tasks_blocked()
            (buf,) = buffers
            assert buf.block_size > 0  # not yet: a client may send its next batch at once
            await trio.sleep(IDLE)
            assert buf.block_size == 0 and len(buf) == 0
            assert 0 < buf.largest <= 64 * 1024


async def test_a_deep_pipeline_grows_the_block_then_gives_it_back(
    buffers: list[RecordingBuffer],
    autojump_clock: trio.testing.MockClock,
    serve: ServeConnection,
) -> None:
    n = 3000  # ~100 KiB of requests, sent at once
    async with open_connection(serve, native_handler(app), ServerConfig()) as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, b"".join(get(f"/d/{i}") for i in range(n)))
            bodies = await answers(client, n)
        assert bodies == [b"/d/%d" % i for i in range(n)]
        await trio.sleep(IDLE)
        (buf,) = buffers
        assert buf.largest > 4 * MIN_BLOCK  # it grew while the pipeline needed it
        assert buf.block_size == 0  # and gave it back once idle


async def test_fixed_buffer_keeps_the_whole_buffer(
    buffers: list[RecordingBuffer],
    autojump_clock: trio.testing.MockClock,
    serve: ServeConnection,
) -> None:
    config = ServerConfig(fixed_buffer=True)
    async with open_connection(serve, native_handler(app), config) as client:
        await client.send_all(get("/now/0"))
        assert await answers(client, 1) == [b"/now/0"]
        await trio.sleep(IDLE)
        assert buffers[0].block_size == config.buffer_size


def _tasks_named(*names: str) -> list[str]:
    """The names of the running tasks' functions that are among `names` (the whole run; by
    the task's name, which a compiled build's coroutines give as well)."""
    found: list[str] = []
    root = trio.lowlevel.current_root_task()
    assert root is not None
    todo = [root]
    while todo:
        task = todo.pop()
        name = task.name.rpartition(".")[2]
        if name in names:
            found.append(name)
        for nursery in task.child_nurseries:
            todo += nursery.child_tasks
    return found


async def test_an_idle_connection_is_one_waiting_task_again(
    buffers: list[RecordingBuffer],
    autojump_clock: trio.testing.MockClock,
    serve: ServeConnection,
) -> None:
    """Blocking handlers start helper tasks (followers, the timeout watchdog); once the
    connection idles they end, and a new wave of blocking requests starts them again."""
    config = ServerConfig(keep_alive_timeout=100)
    async with open_connection(serve, native_handler(app), config) as client:
        for _ in range(2):
            await client.send_all(b"".join(get(f"/sleep/{i}") for i in range(8)))
            assert await answers(client, 8) == [b"/sleep/%d" % i for i in range(8)]
            await trio.testing.wait_all_tasks_blocked()
            helpers = _tasks_named("work", *WATCHDOGS)
            assert helpers.count("work") > 1 and any(w in helpers for w in WATCHDOGS)
            await trio.sleep(IDLE)
            assert _tasks_named("work", *WATCHDOGS) == ["work"]  # the leader, waiting


async def test_request_timeouts_still_fire_after_the_watchdog_ended(
    buffers: list[RecordingBuffer],
    autojump_clock: trio.testing.MockClock,
    serve: ServeConnection,
) -> None:
    config = ServerConfig(keep_alive_timeout=1000, request_timeout=10)
    async with open_connection(serve, native_handler(app), config) as client:
        await client.send_all(get("/sleep/0"))
        assert await answers(client, 1) == [b"/sleep/0"]
        await trio.sleep(IDLE)
        assert _tasks_named(*WATCHDOGS) == []
        await client.send_all(get("/slow/0"))
        received = b""
        while b"\r\n\r\n" not in received:
            received += await client.receive_some()
        assert received.startswith(b"HTTP/1.1 503 ")
