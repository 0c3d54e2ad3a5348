"""The built-in apps, and loading an app from a ``--app`` spec.

Strategy: each built-in app is one object that offers both interfaces: ``app.native`` is a
native handler (``@native async def (request) -> Response``) and ``app(scope, receive, send)`` is
the same app in ASGI 3, so ``--interface asgi|native`` compares the two paths on identical
behaviour. Tests and benchmarks rely on these contracts:

- ``plaintext``: ``GET /plaintext`` (or HEAD) answers 200 ``Hello, World!`` with
  ``Content-Type: text/plain``; the response is built per request (TechEmpower's rule: no
  pre-rendered response), the server adds Date and Server. Other methods on /plaintext get 405,
  other paths 404.
- ``echo``: every request answers 200 with ``Content-Type: application/json`` and a JSON object:
  ``seq`` (the request's index on its connection, from 0; ``null`` under a server without
  pipeparse's ASGI extension), ``method``, ``target`` (as sent), ``http_version``, ``headers``
  (``[name, value]`` strings, names lowercased), ``body_len`` and ``body_sha256`` (hex).
  Query parameters: ``sleep_ms=N`` sleeps N ms first, ``status=NNN`` answers with that status
  (200..599), ``raise=1`` raises (the server answers 500). A bad parameter value is a 400 with
  ``{"error": ...}``. Under ASGI, seq and target come from ``scope["extensions"]["pipeparse"]``.
  As an ASGI app (``--interface asgi``) it also accepts every WebSocket and sends each message
  back as it came (text or bytes) until the client closes (the WebSocket echo benchmark).

Strings in echo's JSON are the request's bytes decoded as latin-1 (lossless).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import sys
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

import trio

from pipeparse import HttpRequest, Response

from .handlers import native
from .protocol import Message, Receive, Scope, Send

__all__ = [
    "BUILTIN_APPS",
    "AppLoadError",
    "EchoApp",
    "PlaintextApp",
    "echo",
    "load_app",
    "plaintext",
]

_HELLO = b"Hello, World!"


async def _lifespan(receive: Receive, send: Send) -> None:
    """The built-in apps' ASGI lifespan: nothing to set up, acknowledge both phases."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _check_scope(scope: Scope) -> None:
    if scope["type"] != "http":
        raise RuntimeError(f"this app serves HTTP only, not {scope['type']!r}")


class PlaintextApp:
    """TechEmpower's plaintext test: ``GET /plaintext`` → ``Hello, World!``."""

    @native
    async def native(self, request: HttpRequest) -> Response:
        target = request.target
        if target != b"/plaintext" and target.partition(b"?")[0] != b"/plaintext":
            return Response(b"Not Found", 404, [(b"content-type", b"text/plain")])
        if request.method not in (b"GET", b"HEAD"):
            return Response(
                b"Method Not Allowed",
                405,
                [(b"content-type", b"text/plain"), (b"allow", b"GET, HEAD")],
            )
        return Response(_HELLO, 200, [(b"content-type", b"text/plain")])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await _lifespan(receive, send)
        _check_scope(scope)
        if scope["path"] != "/plaintext":
            status, body = 404, b"Not Found"
            headers = [(b"content-type", b"text/plain")]
        elif scope["method"] not in ("GET", "HEAD"):
            status, body = 405, b"Method Not Allowed"
            headers = [(b"content-type", b"text/plain"), (b"allow", b"GET, HEAD")]
        else:
            status, body = 200, _HELLO
            headers = [(b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def __repr__(self) -> str:
        return "<pipeparse built-in app 'plaintext'>"


class EchoError(Exception):
    """Raised on purpose by the echo app for ``raise=1``."""


class _BadParameter(Exception):
    pass


@functools.lru_cache(maxsize=256)  # clients repeat their query strings; bad ones raise again
def _echo_params(query: bytes) -> tuple[float, int, bool]:
    """``(sleep seconds, status, raise)`` from echo's query string."""
    sleep_s, status, fail = 0.0, 200, False
    if not query:
        return sleep_s, status, fail
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if name == "sleep_ms":
            if not value.isdigit() or not value.isascii():
                raise _BadParameter(f"sleep_ms must be a whole number of ms, got {value!r}")
            sleep_s = int(value) / 1000
        elif name == "status":
            if not (value.isdigit() and value.isascii() and 200 <= int(value) <= 599):
                raise _BadParameter(f"status must be a number from 200 to 599, got {value!r}")
            status = int(value)
        elif name == "raise":
            if value not in ("0", "1"):
                raise _BadParameter(f"raise must be 0 or 1, got {value!r}")
            fail = value == "1"
    return sleep_s, status, fail


def _echo_document(
    seq: int | None,
    method: bytes | str,
    target: bytes,
    http_version: bytes | str,
    headers: Any,
    body_len: int,
    digest: str,
) -> bytes:
    try:  # the part that describes the request is the same for every repeat of that request
        pairs = headers if type(headers) is tuple else tuple(headers)
        described = _described(method, target, http_version, pairs)
    except TypeError:  # unhashable pairs (lists, from some servers): describe it afresh
        described = _describe(method, target, http_version, headers)
    return b'{"seq":%b,%b,"body_len":%d,"body_sha256":"%b"}' % (
        b"null" if seq is None else b"%d" % seq,
        described,
        body_len,
        digest.encode(),
    )


def _describe(method: bytes | str, target: bytes, http_version: bytes | str, headers: Any) -> bytes:
    """``"method":...,"target":...,"http_version":...,"headers":[...]`` (compact JSON)."""
    doc = {
        "method": method if isinstance(method, str) else method.decode("latin-1"),
        "target": target.decode("latin-1"),
        "http_version": http_version if isinstance(http_version, str) else http_version.decode(),
        "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in headers],
    }
    return _COMPACT_JSON.encode(doc).encode()[1:-1]  # without the braces: a run of members


_described = functools.lru_cache(maxsize=256)(_describe)  # pipelined requests repeat heads
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))  # made once: `dumps` with options isn't
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _json_error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


async def _sleep(seconds: float) -> None:
    """Sleep under asyncio (the asyncio driver, or a peer server such as uvicorn), or else
    under trio. (Asked of asyncio only if something imported it, with `_get_running_loop`,
    its one C call for that, which it exports: trio's `current_task` raised an exception per
    request outside trio, and importing asyncio here cost a trio server 1.8 MiB.)"""
    asyncio = sys.modules.get("asyncio")
    if asyncio is not None and asyncio._get_running_loop() is not None:
        await asyncio.sleep(seconds)
    else:
        await trio.sleep(seconds)


class EchoApp:
    """Answers every request with a JSON description of it (see the module docstring)."""

    @native
    async def native(self, request: HttpRequest) -> Response:
        json_type = [(b"content-type", b"application/json")]
        try:
            sleep_s, status, fail = _echo_params(request.target.partition(b"?")[2])
        except _BadParameter as exc:
            return Response(_json_error(str(exc)), 400, json_type)
        if sleep_s:
            await _sleep(sleep_s)
        if fail:
            raise EchoError("raise=1: the echo app raises on purpose")
        body = request.body if request.body_complete else await request.read()
        doc = _echo_document(
            request.seq,
            request.method,
            request.target,
            request.http_version,
            request.headers,
            len(body),
            hashlib.sha256(body).hexdigest() if body else _EMPTY_SHA256,
        )
        return Response(doc, status, json_type)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await _lifespan(receive, send)
        if scope["type"] == "websocket":
            return await _websocket_echo(receive, send)
        _check_scope(scope)
        json_type = [(b"content-type", b"application/json")]
        try:
            sleep_s, status, fail = _echo_params(scope["query_string"])
        except _BadParameter as exc:
            await _send_whole(send, 400, json_type, _json_error(str(exc)))
            return
        if sleep_s:
            await _sleep(sleep_s)
        if fail:
            raise EchoError("raise=1: the echo app raises on purpose")
        hasher = hashlib.sha256()
        body_len = 0
        while True:
            message: Message = await receive()
            if message["type"] != "http.request":
                raise RuntimeError("the client went away before the request body was complete")
            chunk = message.get("body", b"")
            hasher.update(chunk)
            body_len += len(chunk)
            if not message.get("more_body", False):
                break
        ext: Mapping[str, Any] = scope.get("extensions", {}).get("pipeparse") or {}
        target = ext.get("target")
        if target is None:
            query = scope["query_string"]
            target = scope.get("raw_path") or scope["path"].encode("utf-8")
            if query:
                target += b"?" + query
        doc = _echo_document(
            ext.get("seq"),
            scope["method"],
            target,
            scope["http_version"],
            scope["headers"],
            body_len,
            hasher.hexdigest(),
        )
        await _send_whole(send, status, json_type, doc)

    def __repr__(self) -> str:
        return "<pipeparse built-in app 'echo'>"


async def _websocket_echo(receive: Receive, send: Send) -> None:
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return  # websocket.disconnect
        text = message.get("text")
        if text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


async def _send_whole(send: Send, status: int, headers: Any, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


plaintext = PlaintextApp()
echo = EchoApp()

BUILTIN_APPS: Mapping[str, object] = {"plaintext": plaintext, "echo": echo}


class AppLoadError(ValueError):
    """An ``--app`` spec names no app that can be loaded."""


def load_app(spec: str, app_dir: str | None = None) -> object:
    """The app named by `spec`: a built-in name (``plaintext``, ``echo``) or ``module:attr``.

    ``attr`` may be dotted (``pkg.mod:obj.app``). `app_dir`, when given, is put first on
    ``sys.path`` (the command line passes the current directory). Raises `AppLoadError`.
    """
    spec = spec.strip()
    if spec in BUILTIN_APPS:
        return BUILTIN_APPS[spec]
    builtins = ", ".join(BUILTIN_APPS)
    module_name, colon, attr = spec.partition(":")
    if not colon or not module_name or not attr:
        raise AppLoadError(
            f"app {spec!r} is neither a built-in app ({builtins}) nor 'module:attribute'"
        )
    if app_dir is not None and app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (
            exc.name == module_name or module_name.startswith(exc.name + ".")
        ):
            raise AppLoadError(f"cannot load app {spec!r}: no module named {exc.name!r}") from exc
        raise AppLoadError(
            f"cannot load app {spec!r}: importing {module_name!r} failed: {exc}"
        ) from exc
    except Exception as exc:
        raise AppLoadError(
            f"cannot load app {spec!r}: importing {module_name!r} raised {exc!r}"
        ) from exc
    obj: object = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppLoadError(
                f"cannot load app {spec!r}: {type(obj).__name__} {getattr(obj, '__name__', '')!r}"
                f" has no attribute {part!r}"
            ) from None
    return obj
