"""`ConnectionSink`: a handler's `ResponseSink` calls as the protocol's response events; and
the ASGI adapter's whole response, which reaches it in one call (`respond`, no await)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from pipeparse import ServerConnection
from pipeparse.servers.asgi import asgi_handler
from pipeparse.servers.protocol import Receive, Scope, Send
from pipeparse.servers.sink import ConnectionSink
from tests.server_harness import RecordingSink, make_request


class Events(ServerConnection):
    """A `ServerConnection` that records the response events it gets instead of rendering
    them (a subclass: the compiled sink accepts nothing else)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, ...]] = []

    def respond(self, seq: int, status: int, headers: Sequence[Any], body: Any) -> None:
        self.calls.append(("respond", seq, status, list(headers), bytes(body)))

    def start_response(self, seq: int, status: int, headers: Sequence[Any]) -> None:
        self.calls.append(("start_response", seq, status, list(headers)))

    def send_body(self, seq: int, data: Any, more: bool = True) -> None:
        self.calls.append(("send_body", seq, bytes(data), more))


class Driver:
    def __init__(self) -> None:
        self.events = Events()
        self.conn: ServerConnection = self.events
        self.streamed = 0

    async def stream_out(self) -> None:
        self.streamed += 1


HEADERS = [(b"content-type", b"text/plain")]


async def test_a_whole_response_is_one_respond_event() -> None:
    driver = Driver()
    sink = ConnectionSink(driver, 3)
    await sink.start(200, HEADERS)
    await sink.send(b"hello")
    assert driver.events.calls == [("respond", 3, 200, HEADERS, b"hello")]
    assert (sink.status, sink.sent, sink.finished) == (200, 5, True)
    with pytest.raises(RuntimeError, match="complete"):
        await sink.send(b"more")


async def test_respond_is_start_and_a_last_send_in_one_call() -> None:
    driver = Driver()
    sink = ConnectionSink(driver, 1)
    sink.respond(404, HEADERS, b"no")
    assert driver.events.calls == [("respond", 1, 404, HEADERS, b"no")]
    assert (sink.started, sink.finished, sink.status, sink.sent) == (True, True, 404, 2)
    with pytest.raises(RuntimeError, match="already started"):
        sink.respond(200, HEADERS, b"again")
    with pytest.raises(RuntimeError, match="already started"):
        await sink.start(200, HEADERS)


async def test_a_streamed_response_goes_out_piece_by_piece() -> None:
    driver = Driver()
    sink = ConnectionSink(driver, 0)
    with pytest.raises(RuntimeError, match="before start"):
        await sink.send(b"x")
    await sink.start(200, HEADERS)
    await sink.send(b"ab", more=True)
    await sink.send(b"cd")
    assert driver.events.calls == [
        ("start_response", 0, 200, HEADERS),
        ("send_body", 0, b"ab", True),
        ("send_body", 0, b"cd", False),
    ]
    assert driver.streamed == 1 and sink.sent == 4


async def _whole(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 201, "headers": HEADERS})
    await send({"type": "http.response.body", "body": b"made"})


async def _streamed(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": b"a", "more_body": True})
    await send({"type": "http.response.body", "body": b"b"})


async def test_an_asgi_whole_response_reaches_the_connection_as_one_event() -> None:
    driver = Driver()
    sink = ConnectionSink(driver, 7)
    await asgi_handler(_whole)(make_request(seq=7), sink)
    assert driver.events.calls == [("respond", 7, 201, HEADERS, b"made")]
    assert sink.finished and sink.sent == 4


async def test_an_asgi_streamed_response_takes_the_sink_calls() -> None:
    driver = Driver()
    await asgi_handler(_streamed)(make_request(), ConnectionSink(driver, 0))
    assert [c[0] for c in driver.events.calls] == ["start_response", "send_body", "send_body"]


async def test_any_other_sink_gets_start_and_send() -> None:
    sink = RecordingSink()
    await asgi_handler(_whole)(make_request(), sink)
    assert sink.calls == [("start", 201, HEADERS), ("send", b"made", False)]
