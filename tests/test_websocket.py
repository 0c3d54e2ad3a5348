"""WebSockets: the upgrade in the core (head, index, ServerConnection), the sans-I/O session,
and real servers on every loop driven by the `websockets` client library and raw sockets."""

from __future__ import annotations

import asyncio
import base64
import queue
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

import pipeparse
from pipeparse import Limits, RequestIndex, SeekableBuffer, ServerConnection
from pipeparse._head import parse_request_head
from pipeparse.actions import Start, Upgrade, Write
from pipeparse.servers import cli
from pipeparse.servers.config import ServerConfig
from pipeparse.servers.engine_pipeparse import serve_connection
from pipeparse.servers.handlers import asgi_handler
from pipeparse.servers.websocket import (
    ClientDisconnected,
    WebSocketOptions,
    WebSocketSession,
    handshake_problem,
)
from tests import loop_servers
from tests.loop_servers import parametrize_loops
from tests.server_harness import parse_responses
from tests.test_cli_serve import parse
from tests.test_tls import Certs, certs_fixture  # noqa: F401  (the "certs" fixture)

KEY = base64.b64encode(b"0123456789abcdef").decode()
UPGRADE = (
    "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
    f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
)


def upgrade(extra: str = "") -> bytes:
    return (UPGRADE + extra + "\r\n").encode()


def get(target: str = "/", extra: str = "") -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()


def client_frames(*events: Any) -> bytes:
    """What a WebSocket client sends for `events` (masked frames), after the handshake."""
    client = Connection(ConnectionType.CLIENT)
    return b"".join(client.send(e) for e in events)


def server_events(data: bytes) -> list[Any]:
    """The events a client reads from the server's frames `data`."""
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(data)
    return list(client.events())


# -- the core: which heads are upgrades, and where the HTTP stream ends -----------------------


@pytest.mark.parametrize(
    ("head", "websocket"),
    [
        (upgrade(), True),
        (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: upgrade\r\n\r\n", True),
        (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c, websocket\r\nConnection: upgrade\r\n\r\n", 1),
        (b"POST / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", False),
        (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n", False),
        (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n", False),
        (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n\r\n", False),
    ],
)
def test_which_heads_ask_for_a_websocket(head: bytes, websocket: bool) -> None:
    assert parse_request_head(head, Limits()).websocket is bool(websocket)


def _index(data: bytes, upgrades: bool) -> RequestIndex:
    buf = SeekableBuffer(64 * 1024)
    index = RequestIndex(buf, upgrades=upgrades)
    buf.feed(data)
    return index


def test_the_index_stops_at_an_upgrade_request() -> None:
    after = b"\x81\x85not HTTP at all\r\n\r\n"
    data = get("/a") + get("/a") + upgrade() + after
    index = _index(data, upgrades=True)
    framed = index.advance()
    assert [r.head.target for r in framed] == [b"/a", b"/a"]
    assert index.upgrade is not None and index.upgrade.seq == 2
    assert index.position == index.upgrade.end == len(data) - len(after)
    assert index.error is None
    index.buffer.feed(get("/later"))
    assert index.advance() == [] and index.error is None  # the WebSocket's bytes, not HTTP


def test_without_upgrades_an_upgrade_request_is_an_ordinary_one() -> None:
    index = _index(upgrade() + upgrade() + b"\x81\x85junk\r\n\r\n", upgrades=False)
    assert [r.head.websocket for r in index.advance()] == [True, True]
    assert index.upgrade is None and index.error is not None  # what follows is parsed


def test_an_upgrade_request_with_a_body_is_rejected() -> None:
    index = _index(get("/a") + upgrade("Content-Length: 2\r\n") + b"hi", upgrades=True)
    assert [r.head.target for r in index.advance()] == [b"/a"]
    assert index.error is not None and index.error.status_hint == 400
    assert index.upgrade is None


def _connection() -> ServerConnection:
    return ServerConnection(date=lambda: b"D", upgrades=True)


def test_the_connection_upgrades_after_every_earlier_response() -> None:
    conn = _connection()
    frame = client_frames(TextMessage(data="hi"))
    conn.receive_data(get("/a") + get("/b") + upgrade() + frame)
    actions = conn.actions()
    assert [a.head.target for a in actions if isinstance(a, Start)] == [b"/a", b"/b"]
    assert not any(isinstance(a, Upgrade) for a in actions)
    conn.respond(1, 200, [], b"b")
    assert not any(isinstance(a, Upgrade) for a in conn.actions())  # /a is not answered yet
    conn.respond(0, 200, [], b"a")
    actions = [a for a in conn.actions() if isinstance(a, Write | Upgrade)]
    assert isinstance(actions[0], Write) and isinstance(actions[-1], Upgrade)
    written = b"".join(bytes(p) for a in actions if isinstance(a, Write) for p in a.parts)
    assert [r.body for r in parse_responses(written)] == [b"a", b"b"]
    up = actions[-1]
    assert up.seq == 2 and up.head.target == b"/ws" and up.data == frame
    assert conn.actions() == []  # the connection is the driver's now
    conn.receive_data(get("/c"))
    assert conn.actions() == []


def test_no_upgrade_after_a_closing_request_or_an_error() -> None:
    conn = _connection()
    conn.receive_data(get("/a", "Connection: close\r\n") + upgrade())
    assert len([a for a in conn.actions() if isinstance(a, Start)]) == 1
    conn.respond(0, 200, [], b"a")
    assert not any(isinstance(a, Upgrade) for a in conn.actions())

    conn = _connection()
    conn.receive_data(get("/a") + b"BAD\r\n\r\n" + upgrade())
    conn.actions()
    conn.respond(0, 200, [], b"a")
    actions = conn.actions()
    assert not any(isinstance(a, Upgrade) for a in actions)
    written = b"".join(bytes(p) for a in actions if isinstance(a, Write) for p in a.parts)
    assert [r.status for r in parse_responses(written)] == [200, 400]


def test_data_arriving_before_the_upgrade_is_kept_for_the_websocket() -> None:
    conn = _connection()
    conn.receive_data(get("/a") + upgrade())
    conn.actions()
    frame = client_frames(BytesMessage(data=b"x" * 100))
    conn.receive_data(frame[:10])
    conn.receive_data(frame[10:])
    conn.respond(0, 200, [], b"a")
    up = [a for a in conn.actions() if isinstance(a, Upgrade)]
    assert up and up[0].data == frame


# -- the session, sans-I/O -------------------------------------------------------------------


def _head(extra: str = "", base: str = UPGRADE) -> Any:
    return parse_request_head((base + extra + "\r\n").encode(), Limits())


def _session(data: bytes = b"", **options: Any) -> WebSocketSession:
    head = _head("Sec-WebSocket-Protocol: chat, json\r\n")
    return WebSocketSession(head, data, WebSocketOptions(**options), b"D")


@pytest.mark.parametrize(
    ("lines", "status"),
    [
        (f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n", None),
        (f"Sec-WebSocket-Key: {KEY}\r\n", 426),
        (f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 8\r\n", 426),
        ("Sec-WebSocket-Version: 13\r\n", 400),
        ("Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n", 400),
        ("Sec-WebSocket-Key: !!!!\r\nSec-WebSocket-Version: 13\r\n", 400),
    ],
)
def test_handshake_problems(lines: str, status: int | None) -> None:
    base = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    problem = handshake_problem(_head(lines, base))
    assert (problem[0] if problem else None) == status


def test_accept_renders_the_101_and_frames_sent_early() -> None:
    early = client_frames(TextMessage(data="early"))
    session = _session(early)
    assert session.next_message() == {"type": "websocket.connect"}
    out = session.app_sent({"type": "websocket.accept", "subprotocol": "json"})
    head, _, rest = out.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 101 Switching Protocols"
    assert b"sec-websocket-accept: BACScCJPNqyz+UBoqMH89VmURoA=" in lines
    assert b"sec-websocket-protocol: json" in lines and b"connection: Upgrade" in lines
    assert rest == b"" and session.status == 101
    assert session.next_message() == {"type": "websocket.receive", "text": "early"}
    with pytest.raises(RuntimeError, match="twice"):
        session.app_sent({"type": "websocket.accept"})


def test_bytes_before_the_accept_are_bounded() -> None:
    session = _session(max_size=100)
    session.feed(b"x" * 100)
    assert not session.closed
    session.feed(b"x")
    assert session.finished and session.next_message() == {"type": "websocket.connect"}
    assert session.next_message() == {"type": "websocket.disconnect", "code": 1006, "reason": ""}


def test_refusals_before_accept() -> None:
    session = _session()
    out = session.app_sent({"type": "websocket.close"})
    assert out.startswith(b"HTTP/1.1 403 ") and session.status == 403 and session.finished
    with pytest.raises(ClientDisconnected):
        session.app_sent({"type": "websocket.send", "text": "x"})
    with pytest.raises(RuntimeError, match="not offered"):
        _session().app_sent({"type": "websocket.accept", "subprotocol": "xml"})
    with pytest.raises(RuntimeError, match=r"before 'websocket\.accept'"):
        _session().app_sent({"type": "websocket.send", "text": "x"})


def _open(**options: Any) -> WebSocketSession:
    session = _session(**options)
    session.next_message()
    session.app_sent({"type": "websocket.accept"})
    return session


def test_messages_in_fragments_pings_and_the_clients_close() -> None:
    session = _open()
    frames = client_frames(
        TextMessage(data="hel", message_finished=False),
        Ping(b"p"),
        TextMessage(data="lo"),
        BytesMessage(data=b"\x00\x01"),
        CloseConnection(code=1001, reason="bye"),
    )
    out = session.feed(frames)
    pong, close = server_events(out)
    assert isinstance(pong, Pong) and pong.payload == b"p"
    assert isinstance(close, CloseConnection) and close.code == 1001
    assert session.next_message() == {"type": "websocket.receive", "text": "hello"}
    assert session.next_message() == {"type": "websocket.receive", "bytes": b"\x00\x01"}
    disconnect = {"type": "websocket.disconnect", "code": 1001, "reason": "bye"}
    assert session.next_message() == disconnect
    assert session.finished
    with pytest.raises(ClientDisconnected):
        session.app_sent({"type": "websocket.send", "bytes": b"late"})


def test_a_message_over_max_size_closes_with_1009() -> None:
    session = _open(max_size=10)
    client = Connection(ConnectionType.CLIENT)
    out = session.feed(client.send(BytesMessage(data=b"x" * 6, message_finished=False)))
    assert out == b"" and not session.closed
    out = session.feed(client.send(BytesMessage(data=b"y" * 5)))
    (close,) = server_events(out)
    assert isinstance(close, CloseConnection) and close.code == 1009
    assert session.next_message() == {
        "type": "websocket.disconnect",
        "code": 1009,
        "reason": "message too big",
    }


def test_a_protocol_error_closes_with_its_code() -> None:
    session = _open()
    out = session.feed(b"\x81\x05hello")  # an unmasked client frame (RFC 6455 §5.1)
    (close,) = server_events(out)
    assert isinstance(close, CloseConnection) and close.code == 1002
    assert session.next_message()["code"] == 1002  # type: ignore[index]


def test_the_app_closes_and_the_server_sends_and_pings() -> None:
    session = _open()
    out = session.app_sent({"type": "websocket.send", "text": "t"})
    out += session.ping()
    assert session.pong_pending
    out += session.app_sent({"type": "websocket.close", "code": 4000, "reason": "done"})
    text, ping, close = server_events(out)
    assert text.data == "t" and isinstance(ping, Ping) and close.code == 4000
    assert not session.finished  # until the client's close frame comes back
    session.feed(client_frames(CloseConnection(code=4000)))
    assert session.finished


# -- real servers: trio (both engines' API) and asyncio ----------------------------------------

@contextmanager
def serving(app: Any, loop: str, **options: Any) -> Iterator[int]:
    """`loop_servers.serving` for these tests, whose clients block (the `websockets` sync
    client, plain sockets): the server runs in a trio thread of its own; yields its port."""
    ports: queue.Queue[int | BaseException] = queue.Queue()
    stop = threading.Event()

    async def main() -> None:
        async with loop_servers.serving(loop, app, **options) as served:
            ports.put(served.port)
            await trio.to_thread.run_sync(stop.wait)

    def run() -> None:
        try:
            trio.run(main)
        except BaseException as exc:  # (a failed start: raised in the test below)
            ports.put(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    port = ports.get(timeout=loop_servers.SAFETY)
    if isinstance(port, BaseException):
        raise port
    try:
        yield port
    finally:
        stop.set()
        thread.join(loop_servers.SAFETY)
        assert not thread.is_alive(), "the server did not stop"


async def echo(scope: Any, receive: Any, send: Any) -> None:
    """HTTP: the path; WebSocket: accept (with the first subprotocol), then echo; at "close",
    close with 4001; at "boom", fail."""
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})
        return
    assert scope["type"] == "websocket"
    assert (await receive())["type"] == "websocket.connect"
    if scope["path"] == "/refuse":
        await send({"type": "websocket.close"})
        return
    protocols = scope["subprotocols"]
    await send({"type": "websocket.accept", "subprotocol": protocols[0] if protocols else None})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") == "close":
            await send({"type": "websocket.close", "code": 4001, "reason": "asked"})
            return
        if message.get("text") == "boom":
            raise RuntimeError("boom")
        if message.get("text") == "scope":
            keys = ("scheme", "path", "query_string", "root_path", "http_version")
            await send({"type": "websocket.send", "text": repr([scope[k] for k in keys])})
            continue
        await send({"type": "websocket.send", **{k: message.get(k) for k in ("text", "bytes")}})


@parametrize_loops
def test_echo_with_the_websockets_client(loop: str) -> None:
    with serving(echo, loop, interface="asgi", root_path="/app") as port:
        url = f"ws://127.0.0.1:{port}/ws?q=1"
        with connect(url, subprotocols=["chat"], open_timeout=10) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "chat"
            ws.send("hello")
            assert ws.recv(timeout=10) == "hello"
            ws.send(b"\x00" * 100_000)
            assert ws.recv(timeout=10) == b"\x00" * 100_000
            ws.send("scope")
            assert ws.recv(timeout=10) == "['ws', '/app/ws', b'q=1', '/app', '1.1']"
            ws.send("close")
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001


@parametrize_loops
def test_refusal_failure_and_limits(loop: str) -> None:
    with serving(echo, loop, interface="asgi", ws_max_size=1000) as port:
        with pytest.raises(InvalidStatus) as refused:
            connect(f"ws://127.0.0.1:{port}/refuse", open_timeout=10)
        assert refused.value.response.status_code == 403
        with connect(f"ws://127.0.0.1:{port}/", open_timeout=10) as ws:
            ws.send(b"x" * 1001)
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        with connect(f"ws://127.0.0.1:{port}/", open_timeout=10) as ws:
            ws.send("boom")
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011


def _raw(port: int, data: bytes, reply_to_close: bool = False) -> bytes:
    """Send `data`, then read until the server closes (answering its WebSocket close frame
    with the client's, with `reply_to_close`, as a client does)."""
    reader = Connection(ConnectionType.CLIENT) if reply_to_close else None
    fed = -1  # how much of `received` the reader has seen (from the end of the 101's head)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
            if reader is None:
                continue
            if fed < 0 and (at := received.find(b" 101 ")) >= 0:
                fed = received.find(b"\r\n\r\n", at) + 4 if b"\r\n\r\n" in received[at:] else -1
            if fed >= 0:
                reader.receive_data(received[fed:])
                fed = len(received)
                if any(isinstance(e, CloseConnection) for e in reader.events()):
                    sock.sendall(reader.send(CloseConnection(code=1000)))
                    reader = None
    return received


@parametrize_loops
def test_pipelined_requests_before_the_upgrade_are_answered_first(loop: str) -> None:
    events: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            events.append("websocket")
            await echo(scope, receive, send)
            return
        if scope["path"] == "/slow":
            await (trio.sleep(0) if loop == "trio" else asyncio.sleep(0))
        await echo(scope, receive, send)
        events.append(scope["path"])

    http_like = get("/never").decode()  # inside a frame: data, never a request
    frames = client_frames(TextMessage(data=http_like), TextMessage(data="close"))
    with serving(app, loop, interface="asgi") as port:
        data = _raw(port, get("/slow") + get("/fast") + upgrade() + frames, reply_to_close=True)
    head_end = data.index(b"\r\n\r\n", data.index(b" 101 ")) + 4
    responses = parse_responses(data[: data.index(b"HTTP/1.1 101")])
    assert [(r.status, r.body) for r in responses] == [(200, b"/slow"), (200, b"/fast")]
    assert sorted(events[:2]) == ["/fast", "/slow"] and events[2:] == ["websocket"]
    text, close = server_events(data[head_end:])
    assert text.data == http_like and close.code == 4001


@parametrize_loops
@pytest.mark.parametrize(
    ("lines", "status"),
    [
        ("Sec-WebSocket-Version: 13\r\n", 400),
        (f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 7\r\n", 426),
    ],
)
def test_a_malformed_handshake_is_answered_and_nothing_after_it(
    loop: str, lines: str, status: int
) -> None:
    bad = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    with serving(echo, loop, interface="asgi") as port:
        data = _raw(port, get("/a") + (bad + lines + "\r\n").encode() + get("/b"))
    assert [r.status for r in parse_responses(data)] == [200, status]


@parametrize_loops
def test_ws_none_serves_upgrade_requests_as_http(loop: str) -> None:
    with serving(echo, loop, interface="asgi", ws="none") as port:
        data = _raw(port, get("/a") + upgrade() + get("/b", "Connection: close\r\n"))
    assert [r.body for r in parse_responses(data)] == [b"/a", b"/ws", b"/b"]


@parametrize_loops
def test_shutdown_closes_with_1012(loop: str) -> None:
    server = serving(echo, loop, interface="asgi")
    port = server.__enter__()
    with connect(f"ws://127.0.0.1:{port}/", open_timeout=10) as ws:
        ws.send("hi")
        assert ws.recv(timeout=10) == "hi"
        server.__exit__(None, None, None)  # the server stops while the WebSocket is open
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012


def test_starlette_websocket_route() -> None:
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    async def shout(websocket: WebSocket) -> None:
        await websocket.accept()
        async for text in websocket.iter_text():
            await websocket.send_text(text.upper())

    app = Starlette(routes=[WebSocketRoute("/shout", shout)])
    for loop in loop_servers.LOOPS:
        with serving(app, loop) as port:
            with connect(f"ws://127.0.0.1:{port}/shout", open_timeout=10) as ws:
                ws.send("quiet")
                assert ws.recv(timeout=10) == "QUIET"
            with pytest.raises(InvalidStatus) as missing:  # no such route: Starlette closes
                connect(f"ws://127.0.0.1:{port}/nope", open_timeout=10)
            assert missing.value.response.status_code == 403


async def test_a_client_that_never_answers_pings_is_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    disconnects: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        disconnects.append(await receive())

    config = ServerConfig(ws_ping_interval=5, ws_ping_timeout=3)
    server_end, client_end = trio.testing.memory_stream_pair()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_connection, server_end, asgi_handler(app), config, None)
            await client_end.send_all(upgrade())
            received = b""
            while chunk := await client_end.receive_some():  # it pings, then drops us
                received += chunk
            start = trio.current_time()
    head_end = received.index(b"\r\n\r\n") + 4
    assert received.startswith(b"HTTP/1.1 101 ")
    assert [type(e) for e in server_events(received[head_end:])] == [Ping]
    assert start >= 8  # (virtual seconds: the interval, then the timeout)
    assert disconnects == [{"type": "websocket.disconnect", "code": 1006, "reason": ""}]


def test_ws_flags_reach_the_config_and_bad_values_are_refused() -> None:
    args = parse("--ws", "none", "--ws-max-size", "1K", "--ws-ping-interval", "0")
    config = cli.config_from_args(args)
    assert (config.ws, config.ws_max_size, config.ws_ping_interval) == ("none", 1024, 0)
    options = ServerConfig(ws_ping_interval=0, ws_ping_timeout=3).websocket_options()
    assert (options.ping_interval, options.ping_timeout) == (None, 3)
    with pytest.raises(ValueError, match="ws must be"):
        ServerConfig(ws="off")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ws_max_size"):
        ServerConfig(ws_max_size=0)
    with pytest.raises(ValueError, match="ws_ping_timeout"):
        ServerConfig(ws_ping_timeout=-1)


async def test_the_h11_engine_serves_upgrade_requests_as_http() -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(pipeparse.serve, echo, port=0, engine="h11"))
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(upgrade() + get("/b", "Connection: close\r\n"))
            data = b""
            while chunk := await stream.receive_some():
                data += chunk
        server.shutdown()
    assert [r.body for r in parse_responses(data)] == [b"/ws", b"/b"]


@parametrize_loops
def test_wss_over_tls(loop: str, certs: Certs) -> None:
    tls = {"ssl_certfile": certs.certfile, "ssl_keyfile": certs.keyfile}
    with (
        serving(echo, loop, interface="asgi", **tls) as port,
        connect(f"wss://localhost:{port}/", ssl=certs.client, open_timeout=10) as ws,
    ):
        ws.send("scope")
        assert str(ws.recv(timeout=10)).startswith("['wss', '/'")
        ws.send(b"\xff" * 70_000)  # over several TLS records
        assert ws.recv(timeout=10) == b"\xff" * 70_000


def test_the_echo_benchmark_client_measures_a_real_server() -> None:
    from pipeparse.clients.crosscheck import ws_echo
    from pipeparse.servers.apps import echo as builtin_echo

    frame = ws_echo.masked_frame(b"abc")
    server = Connection(ConnectionType.SERVER)
    server.receive_data(frame)
    assert [getattr(e, "data", None) for e in server.events()] == [b"abc"]  # a valid frame
    with serving(builtin_echo, "trio", interface="asgi") as port:
        rate = ws_echo.echo_rate("127.0.0.1", port, 2, 64, seconds=0.2, warm_up=0)
    assert rate > 0
