"""The built-in apps' contracts (both interfaces) and `load_app`."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from pipeparse.servers.apps import BUILTIN_APPS, AppLoadError, EchoError, echo, load_app, plaintext
from pipeparse.servers.handlers import resolve_app
from tests.server_harness import RecordingSink, ScriptedSource, make_request

INTERFACES = ["native", "asgi"]


async def run(app: object, interface: str, **request: Any) -> tuple[int, dict[bytes, bytes], bytes]:
    """Serve one request through the adapter: ``(status, headers, body)``."""
    sink = RecordingSink()
    await resolve_app(app, interface).handler(make_request(**request), sink)
    (_, status, headers), *sends = sink.calls
    assert sends[-1][2] is False  # the response was completed
    return status, dict(headers), b"".join(s[1] for s in sends)


# --- plaintext ------------------------------------------------------------------------------


@pytest.mark.parametrize("interface", INTERFACES)
@pytest.mark.parametrize(
    ("method", "target", "status", "body"),
    [
        (b"GET", b"/plaintext", 200, b"Hello, World!"),
        (b"HEAD", b"/plaintext", 200, b"Hello, World!"),  # the engine drops a HEAD body
        (b"GET", b"/plaintext?x=1", 200, b"Hello, World!"),
        (b"GET", b"/", 404, b"Not Found"),
        (b"GET", b"/plaintext/x", 404, b"Not Found"),
        (b"POST", b"/plaintext", 405, b"Method Not Allowed"),
    ],
)
async def test_plaintext(
    interface: str, method: bytes, target: bytes, status: int, body: bytes
) -> None:
    got_status, headers, got_body = await run(plaintext, interface, method=method, target=target)
    assert (got_status, got_body) == (status, body)
    assert headers[b"content-type"] == b"text/plain"
    if status == 405:
        assert headers[b"allow"] == b"GET, HEAD"


async def test_plaintext_builds_each_response() -> None:
    handler = plaintext.native
    first = await handler(make_request(target=b"/plaintext"))
    second = await handler(make_request(target=b"/plaintext"))
    assert first is not second
    assert first.headers is not second.headers


# --- echo -----------------------------------------------------------------------------------


@pytest.mark.parametrize("interface", INTERFACES)
async def test_echo_document(interface: str) -> None:
    body = b"\x00\xff payload"
    status, headers, raw = await run(
        echo,
        interface,
        method=b"PUT",
        target=b"/p?q=%C3%A9",
        body=body,
        headers=((b"host", b"h"), (b"x-latin", b"caf\xe9")),
        seq=4,
    )
    assert status == 200
    assert headers[b"content-type"] == b"application/json"
    assert json.loads(raw) == {
        "seq": 4,
        "method": "PUT",
        "target": "/p?q=%C3%A9",
        "http_version": "1.1",
        "headers": [["host", "h"], ["x-latin", "caf\u00e9"]],
        "body_len": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
    }


@pytest.mark.parametrize("interface", INTERFACES)
async def test_echo_repeated_request_described_afresh(interface: str) -> None:
    """Repeats of one head share a description; any change to the head shows in the next."""
    headers = ((b"host", b"h"), (b"x-n", b"1"))
    docs = [
        json.loads((await run(echo, interface, headers=h, seq=seq))[2])
        for seq, h in enumerate([headers, headers, ((b"host", b"h"), (b"x-n", b"2"))])
    ]
    assert [d["seq"] for d in docs] == [0, 1, 2]
    assert docs[0]["headers"] == docs[1]["headers"] == [["host", "h"], ["x-n", "1"]]
    assert docs[2]["headers"] == [["host", "h"], ["x-n", "2"]]


async def test_echo_asgi_headers_as_lists() -> None:
    """Another server's scope may hold its header pairs as lists (unhashable)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http",
        "method": "GET",
        "http_version": "1.1",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "headers": [[b"host", b"h"]],
    }
    await echo(scope, receive, send)
    doc = json.loads(sent[1]["body"])
    assert doc["seq"] is None
    assert doc["target"] == "/"
    assert doc["headers"] == [["host", "h"]]


@pytest.mark.parametrize("interface", INTERFACES)
async def test_echo_streamed_body(interface: str) -> None:
    source = ScriptedSource([b"abc", b"def"])
    _, _, raw = await run(echo, interface, method=b"POST", body=None, source=source)
    doc = json.loads(raw)
    assert doc["body_len"] == 6
    assert doc["body_sha256"] == hashlib.sha256(b"abcdef").hexdigest()


@pytest.mark.parametrize("interface", INTERFACES)
@pytest.mark.parametrize("status", [201, 204, 418, 599])
async def test_echo_status(interface: str, status: int) -> None:
    got, _, _ = await run(echo, interface, target=b"/?status=%d" % status)
    assert got == status


@pytest.mark.parametrize("interface", INTERFACES)
async def test_echo_raise(interface: str) -> None:
    with pytest.raises(EchoError):
        await run(echo, interface, target=b"/?raise=1")
    status, _, _ = await run(echo, interface, target=b"/?raise=0")
    assert status == 200


@pytest.mark.parametrize("interface", INTERFACES)
async def test_echo_sleeps_first(interface: str, autojump_clock: trio.testing.MockClock) -> None:
    start = trio.current_time()
    status, _, _ = await run(echo, interface, target=b"/?sleep_ms=1500")
    assert status == 200
    assert trio.current_time() - start == pytest.approx(1.5)


@pytest.mark.parametrize("interface", INTERFACES)
@pytest.mark.parametrize(
    ("query", "error"),
    [
        (b"sleep_ms=-1", "sleep_ms"),
        (b"sleep_ms=1.5", "sleep_ms"),
        (b"status=99", "status"),
        (b"status=600", "status"),
        (b"status=abc", "status"),
        (b"raise=yes", "raise"),
    ],
)
async def test_echo_bad_parameters_are_a_400(interface: str, query: bytes, error: str) -> None:
    status, headers, raw = await run(echo, interface, target=b"/?" + query)
    assert status == 400
    assert headers[b"content-type"] == b"application/json"
    assert error in json.loads(raw)["error"]


def test_echo_asgi_runs_under_asyncio_without_the_extension() -> None:
    # A peer server (uvicorn, on asyncio) has no pipeparse extension: seq is null and the
    # target is rebuilt from raw_path and query_string.
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "path": "/a b",
        "raw_path": b"/a%20b",
        "query_string": b"sleep_ms=1",
        "headers": [(b"host", b"x")],
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    asyncio.run(echo(scope, receive, send))
    doc = json.loads(sent[1]["body"])
    assert doc["seq"] is None
    assert doc["target"] == "/a%20b?sleep_ms=1"


@pytest.mark.parametrize("app", list(BUILTIN_APPS.values()))
async def test_builtin_apps_support_lifespan(app: object) -> None:
    served = resolve_app(app, "asgi")
    async with served.lifespan():
        pass
    assert served.interface == "asgi"
    assert resolve_app(app).interface == "native"  # auto prefers native


async def test_plaintext_refuses_websockets() -> None:
    async def receive() -> dict[str, Any]:
        raise AssertionError("not reached")  # pragma: no cover

    async def send(message: Any) -> None:
        raise AssertionError("not reached")  # pragma: no cover

    with pytest.raises(RuntimeError, match="HTTP only"):
        await plaintext({"type": "websocket"}, receive, send)


async def test_echo_echoes_websocket_messages() -> None:
    incoming: list[dict[str, Any]] = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "hi"},
        {"type": "websocket.receive", "bytes": b"\x00"},
        {"type": "websocket.disconnect", "code": 1000},
    ]
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    await echo({"type": "websocket"}, receive, send)
    assert sent == [
        {"type": "websocket.accept"},
        {"type": "websocket.send", "text": "hi"},
        {"type": "websocket.send", "bytes": b"\x00"},
    ]


# --- load_app -------------------------------------------------------------------------------


def test_load_builtin_apps() -> None:
    assert load_app("plaintext") is plaintext
    assert load_app(" echo ") is echo
    assert set(BUILTIN_APPS) == {"plaintext", "echo"}


def test_load_module_attribute() -> None:
    assert load_app("pipeparse.servers.apps:echo") is echo
    assert load_app("pipeparse.servers.apps:BUILTIN_APPS.get") == BUILTIN_APPS.get


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "pp_user_app.py").write_text("async def app(scope, receive, send):\n    pass\n")
    (tmp_path / "pp_broken_app.py").write_text("raise RuntimeError('broken at import')\n")
    (tmp_path / "pp_missing_dep.py").write_text("import pp_no_such_dependency\n")
    for name in ("pp_user_app", "pp_broken_app", "pp_missing_dep"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return tmp_path


def test_load_from_app_dir(app_dir: Path) -> None:
    app = load_app("pp_user_app:app", str(app_dir))
    assert callable(app)
    assert sys.path[0] == str(app_dir)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("", "neither a built-in app"),
        ("nothing", r"neither a built-in app \(plaintext, echo\) nor 'module:attribute'"),
        ("module:", "neither a built-in app"),
        (":attr", "neither a built-in app"),
        ("pp_no_such_module:app", "no module named 'pp_no_such_module'"),
        ("pp_no_such_pkg.sub:app", "no module named 'pp_no_such_pkg'"),
        ("pp_user_app:missing", "has no attribute 'missing'"),
        ("pp_user_app:app.deeper", "has no attribute 'deeper'"),
        ("pp_broken_app:app", "raised RuntimeError\\('broken at import'\\)"),
        ("pp_missing_dep:app", "importing 'pp_missing_dep' failed"),
    ],
)
def test_load_app_errors(app_dir: Path, spec: str, match: str) -> None:
    with pytest.raises(AppLoadError, match=match):
        load_app(spec, str(app_dir))
