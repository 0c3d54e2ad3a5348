"""The app adapters (native and ASGI), `resolve_app`, and the ASGI lifespan, without an engine."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import trio
import trio.testing

from pipeparse import HttpRequest, ProtocolError, Response
from pipeparse.servers.handlers import (
    LifespanError,
    ServedApp,
    asgi_handler,
    is_native,
    native,
    native_handler,
    resolve_app,
    split_target,
)
from tests.server_harness import RecordingSink, ScriptedSource, make_request

# --- native ---------------------------------------------------------------------------------


def test_native_decorator_marks_functions_and_methods() -> None:
    @native
    async def handler(request: HttpRequest) -> Response:
        return Response()

    class App:
        @native
        async def native(self, request: HttpRequest) -> Response:
            return Response()

    assert is_native(handler)
    assert is_native(App().native)
    assert not is_native(lambda r: r)
    with pytest.raises(TypeError):
        native(42)  # type: ignore[type-var]


async def test_native_bytes_body_is_two_sink_calls() -> None:
    async def handler(request: HttpRequest) -> Response:
        return Response(b"hi", 201, [(b"x-a", b"1")])

    sink = RecordingSink()
    await native_handler(handler)(make_request(), sink)
    assert sink.calls == [("start", 201, [(b"x-a", b"1")]), ("send", b"hi", False)]


async def test_native_memoryview_body_is_sent_as_is() -> None:
    async def handler(request: HttpRequest) -> Response:
        return Response(memoryview(b"view"))

    sink = RecordingSink()
    await native_handler(handler)(make_request(), sink)
    assert sink.calls[1] == ("send", b"view", False)


async def test_native_async_iterable_body_streams() -> None:
    closed = []

    async def pieces() -> Any:
        try:
            yield b"a"
            yield b"b"
        finally:
            closed.append(True)

    async def handler(request: HttpRequest) -> Response:
        return Response(pieces())

    sink = RecordingSink()
    await native_handler(handler)(make_request(), sink)
    assert sink.calls[1:] == [("send", b"a", True), ("send", b"b", True), ("send", b"", False)]
    assert closed == [True]


async def test_native_stream_is_closed_when_sending_fails() -> None:
    closed = []

    async def pieces() -> Any:
        try:
            while True:
                yield b"x"
        finally:
            closed.append(True)

    class FailingSink(RecordingSink):
        async def send(self, data: bytes | bytearray | memoryview, more: bool = False) -> None:
            raise trio.BrokenResourceError("client gone")

    async def handler(request: HttpRequest) -> Response:
        return Response(pieces())

    with pytest.raises(trio.BrokenResourceError):
        await native_handler(handler)(make_request(), FailingSink())
    assert closed == [True]


async def test_native_bad_body_type_raises() -> None:
    async def handler(request: HttpRequest) -> Response:
        return Response("text")  # type: ignore[arg-type]

    with pytest.raises(TypeError, match="bytes or an async iterable"):
        await native_handler(handler)(make_request(), RecordingSink())


# --- ASGI: scope ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (b"/", ("/", b"/", b"")),
        (b"/a%20b/c?x=1&y", ("/a b/c", b"/a%20b/c", b"x=1&y")),
        (b"/caf%C3%A9", ("/caf\u00e9", b"/caf%C3%A9", b"")),
        (b"http://example.test:8080/p?q", ("/p", b"/p", b"q")),
        (b"http://example.test", ("/", b"/", b"")),
        (b"*", ("*", b"*", b"")),
    ],
)
def test_split_target(target: bytes, expected: tuple[str, bytes, bytes]) -> None:
    assert split_target(target) == expected


async def test_asgi_scope() -> None:
    scopes: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scopes.append(scope)
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body"})

    handler = asgi_handler(app, server=("127.0.0.1", 8000))
    request = make_request(
        b"PROPFIND", b"/a%2Fb?c=d", headers=((b"host", b"h"), (b"x-y", b"z")), seq=7
    )
    await handler(request, RecordingSink())
    (scope,) = scopes
    assert scope == {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "PROPFIND",
        "scheme": "http",
        "path": "/a/b",
        "raw_path": b"/a%2Fb",
        "query_string": b"c=d",
        "root_path": "",
        "headers": [(b"host", b"h"), (b"x-y", b"z")],
        "client": ("10.0.0.1", 5),
        "server": ("127.0.0.1", 8000),
        "extensions": {"pipeparse": {"seq": 7, "target": b"/a%2Fb?c=d"}},
    }
    assert "state" not in scope


# --- ASGI: receive --------------------------------------------------------------------------


def recording_app(log: list[Any], reads: int) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        for _ in range(reads):
            log.append(await receive())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


async def test_asgi_receive_complete_body_is_one_message() -> None:
    log: list[Any] = []
    await asgi_handler(recording_app(log, 1))(
        make_request(body=memoryview(b"abc")), RecordingSink()
    )
    assert log == [{"type": "http.request", "body": b"abc", "more_body": False}]
    assert type(log[0]["body"]) is bytes


async def test_asgi_receive_streams_the_body() -> None:
    log: list[Any] = []
    source = ScriptedSource([b"ab", memoryview(b"cd")])  # type: ignore[list-item]
    await asgi_handler(recording_app(log, 3))(
        make_request(body=None, source=source), RecordingSink()
    )
    assert log == [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"cd", "more_body": True},
        {"type": "http.request", "body": b"", "more_body": False},
    ]


async def test_asgi_receive_turns_a_broken_body_into_a_disconnect() -> None:
    log: list[Any] = []
    source = ScriptedSource([b"ab", ProtocolError("bad chunk")])
    await asgi_handler(recording_app(log, 3))(
        make_request(body=None, source=source), RecordingSink()
    )
    assert [m["type"] for m in log] == ["http.request", "http.disconnect", "http.disconnect"]


async def test_asgi_receive_after_the_body_waits_for_the_disconnect() -> None:
    source = ScriptedSource()
    messages: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        messages.append((await receive())["type"])
        messages.append((await receive())["type"])
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"late"})
        messages.append((await receive())["type"])  # the response is complete: no wait

    async with trio.open_nursery() as nursery:
        nursery.start_soon(asgi_handler(app), make_request(source=source), RecordingSink())
        await trio.testing.wait_all_tasks_blocked()
        assert messages == ["http.request"]
        source.gone.set()
    assert messages == ["http.request", "http.disconnect", "http.disconnect"]


async def test_asgi_streaming_body_generator_is_closed_when_the_app_stops_early() -> None:
    source = ScriptedSource([b"a", b"b", b"c"])

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body"})

    await asgi_handler(app)(make_request(body=None, source=source), RecordingSink())
    assert source.pieces == [b"b", b"c"]  # left unread, and no un-finalized generator warning


# --- ASGI: send -----------------------------------------------------------------------------


async def test_asgi_single_body_message() -> None:
    sink = RecordingSink()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 404, "headers": [(b"a", b"b")]})
        assert sink.calls == []  # the sink starts with the first body message
        await send({"type": "http.response.body", "body": b"gone"})

    await asgi_handler(app)(make_request(), sink)
    assert sink.calls == [("start", 404, [(b"a", b"b")]), ("send", b"gone", False)]


async def test_asgi_streamed_body_messages() -> None:
    sink = RecordingSink()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"1", "more_body": True})
        await send({"type": "http.response.body", "body": b"2", "more_body": True})
        await send({"type": "http.response.body", "more_body": False})

    await asgi_handler(app)(make_request(), sink)
    assert sink.calls == [
        ("start", 200, []),
        ("send", b"1", True),
        ("send", b"2", True),
        ("send", b"", False),
    ]


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([{"type": "http.response.body", "body": b"x"}], "before 'http.response.start'"),
        (
            [{"type": "http.response.start", "status": 200}] * 2,
            "sent twice",
        ),
        (
            [
                {"type": "http.response.start", "status": 200},
                {"type": "http.response.body"},
                {"type": "http.response.body"},
            ],
            "after the response was complete",
        ),
        (
            [
                {"type": "http.response.start", "status": 200},
                {"type": "http.response.body"},
                {"type": "http.response.start", "status": 200},
            ],
            "after the response was complete",
        ),
        ([{"type": "websocket.accept"}], "unexpected ASGI message type"),
    ],
    ids=["body-first", "start-twice", "body-after-end", "start-after-end", "wrong-type"],
)
async def test_asgi_send_order_errors(messages: list[Any], error: str) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        for message in messages:
            await send(message)

    with pytest.raises(RuntimeError, match=error):
        await asgi_handler(app)(make_request(), RecordingSink())


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([], "without sending a response"),
        ([{"type": "http.response.start", "status": 200}], "without sending a response"),
        (
            [
                {"type": "http.response.start", "status": 200},
                {"type": "http.response.body", "more_body": True},
            ],
            "before completing its response",
        ),
    ],
)
async def test_asgi_incomplete_response_raises(messages: list[Any], error: str) -> None:
    sink = RecordingSink()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        for message in messages:
            await send(message)

    with pytest.raises(RuntimeError, match=error):
        await asgi_handler(app)(make_request(), sink)
    # before a body message, the sink is untouched: the engine can still answer 500
    assert sink.started == (len(messages) == 2 and messages[-1]["type"] == "http.response.body")


async def test_asgi_app_exception_propagates_before_the_sink_starts() -> None:
    sink = RecordingSink()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200})
        raise ValueError("app bug")

    with pytest.raises(ValueError, match="app bug"):
        await asgi_handler(app)(make_request(), sink)
    assert not sink.started


# --- resolve_app ----------------------------------------------------------------------------


@native
async def native_fn(request: HttpRequest) -> Response:
    return Response(b"native")


async def asgi_fn(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.body", "body": b"asgi"})


class Both:
    @native
    async def native(self, request: HttpRequest) -> Response:
        return Response(b"native")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await asgi_fn(scope, receive, send)


async def body_of(served: ServedApp) -> bytes:
    sink = RecordingSink()
    await served.handler(make_request(), sink)
    return b"".join(c[1] for c in sink.calls if c[0] == "send")


@pytest.mark.parametrize(
    ("app", "interface", "expected"),
    [
        (native_fn, "auto", ("native", b"native")),
        (native_fn, "native", ("native", b"native")),
        (asgi_fn, "auto", ("asgi", b"asgi")),
        (asgi_fn, "asgi", ("asgi", b"asgi")),
        (Both(), "auto", ("native", b"native")),
        (Both(), "native", ("native", b"native")),
        (Both(), "asgi", ("asgi", b"asgi")),
        (functools.partial(asgi_fn), "asgi", ("asgi", b"asgi")),
    ],
)
async def test_resolve_app(app: object, interface: str, expected: tuple[str, bytes]) -> None:
    served = resolve_app(app, interface)
    assert (served.interface, await body_of(served)) == expected


@pytest.mark.parametrize(
    ("app", "interface", "error", "match"),
    [
        (asgi_fn, "native", TypeError, "not a native handler"),
        (native_fn, "asgi", TypeError, "not an ASGI 3 app"),
        (42, "auto", TypeError, "offers no native handler"),
        (Both, "asgi", TypeError, "is a class"),
        (asgi_fn, "wsgi", ValueError, "interface must be"),
        (native(lambda request: None), "auto", TypeError, "must be an async function"),
    ],
)
def test_resolve_app_errors(app: object, interface: str, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        resolve_app(app, interface)


# --- lifespan -------------------------------------------------------------------------------


def lifespan_app(log: list[str], *, fail: str | None = None) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                log.append(message["type"])
                if message["type"] == "lifespan.startup":
                    if fail == "startup":
                        await send({"type": "lifespan.startup.failed", "message": "no db"})
                        return
                    if fail == "startup-raise":
                        raise OSError("db unreachable")
                    scope["state"]["db"] = "connected"
                    await send({"type": "lifespan.startup.complete"})
                else:
                    if fail == "shutdown":
                        await send({"type": "lifespan.shutdown.failed", "message": "stuck"})
                    else:
                        await send({"type": "lifespan.shutdown.complete"})
                    return
        log.append(f"http state={scope.get('state')}")
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body"})

    return app


async def test_lifespan_startup_state_and_shutdown() -> None:
    log: list[str] = []
    served = resolve_app(lifespan_app(log))
    async with served.lifespan():
        assert log == ["lifespan.startup"]
        await served.handler(make_request(), RecordingSink())
    assert log == ["lifespan.startup", "http state={'db': 'connected'}", "lifespan.shutdown"]


async def test_lifespan_state_is_copied_per_request() -> None:
    states: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            scope["state"]["n"] = 1
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        scope["state"]["n"] += 1
        states.append(scope["state"])
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body"})

    served = resolve_app(app)
    async with served.lifespan():
        for _ in range(2):
            await served.handler(make_request(), RecordingSink())
    assert states == [{"n": 2}, {"n": 2}]


async def test_lifespan_startup_failed_raises() -> None:
    log: list[str] = []
    with pytest.raises(LifespanError, match="startup failed: no db"):
        async with resolve_app(lifespan_app(log, fail="startup")).lifespan():
            pytest.fail("the body must not run")  # pragma: no cover


async def test_lifespan_exception_during_startup_raises() -> None:
    with pytest.raises(LifespanError, match="db unreachable"):
        async with resolve_app(lifespan_app([], fail="startup-raise")).lifespan():
            pytest.fail("the body must not run")  # pragma: no cover


async def test_lifespan_shutdown_failed_raises_after_a_normal_exit() -> None:
    with pytest.raises(LifespanError, match="shutdown failed: stuck"):
        async with resolve_app(lifespan_app([], fail="shutdown")).lifespan():
            pass


async def test_lifespan_shutdown_failure_does_not_hide_the_body_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(KeyError):
        async with resolve_app(lifespan_app([], fail="shutdown")).lifespan():
            raise KeyError("body")
    assert "shutdown failed" in caplog.text


async def test_lifespan_unsupported_app_is_skipped() -> None:
    calls: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http", "only http"
        calls.append("http")
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body"})

    served = resolve_app(app)
    async with served.lifespan():
        await served.handler(make_request(), RecordingSink())
    assert calls == ["http"]


async def test_lifespan_app_returning_at_once_is_skipped() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return

    async with resolve_app(app).lifespan():
        pass


async def test_lifespan_of_a_native_app_is_a_no_op() -> None:
    served = resolve_app(native_fn)
    async with served.lifespan():
        assert await body_of(served) == b"native"


async def test_lifespan_shutdown_runs_when_the_body_is_cancelled() -> None:
    log: list[str] = []
    served = resolve_app(lifespan_app(log))
    with trio.CancelScope() as scope:
        async with served.lifespan():
            scope.cancel()
            await trio.sleep_forever()
    assert log == ["lifespan.startup", "lifespan.shutdown"]


async def test_lifespan_hung_shutdown_is_bounded(autojump_clock: trio.testing.MockClock) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await trio.sleep_forever()  # never completes shutdown

    async with resolve_app(app).lifespan(shutdown_timeout=5):
        pass
    assert 5 <= trio.current_time() < 6


async def test_lifespan_wrong_message_fails_startup() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.shutdown.complete"})

    with pytest.raises(LifespanError, match="unexpected ASGI lifespan message"):
        async with resolve_app(app).lifespan():
            pass
