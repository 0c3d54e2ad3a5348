"""App adapters: turn a native handler or an ASGI 3 app into the engines' `Handler`.

Strategy: `resolve_app` decides the interface once, at startup, and returns a `ServedApp` whose
`handler` is the one ``async (HttpRequest, ResponseSink) -> None`` the engines call per request.

- Native (``async def handler(request) -> Response``, marked with `@native`): the adapter awaits
  the handler and makes exactly two sink calls for a bytes body (``start``, then one final
  ``send``); an async-iterable body streams one ``send(chunk, more=True)`` per chunk.
- ASGI 3: `servers/asgi.py` (`AsgiHandler`), re-exported here.
- ASGI lifespan runs in a task of its own, in ``async with served.lifespan():`` (or
  ``await served.startup(nursery)`` ... ``await served.shutdown()``). An app that
  raises before reading its first lifespan message does not support lifespan (skipped, as
  uvicorn's "auto" does); one that sends ``lifespan.startup.failed``, or raises after reading
  ``lifespan.startup``, fails startup with `LifespanError`.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal, TypeVar

import trio

from pipeparse import NATIVE_MARK, HttpRequest, Response, native

from .asgi import AsgiHandler, asgi_handler, split_target
from .protocol import (
    AsgiApp,
    Handler,
    Message,
    NativeHandler,
    ResponseSink,
    Scope,
)
from .proxy import TrustedProxies, forwarded_client

__all__ = [
    "AsgiApp",
    "AsgiHandler",
    "LifespanError",
    "NativeHandler",
    "ServedApp",
    "asgi_handler",
    "is_native",
    "native",
    "native_handler",
    "resolve_app",
    "send_stream",
    "split_target",
    "with_forwarding",
]

logger = logging.getLogger("pipeparse.server")


F = TypeVar("F", bound=Callable[..., Any])


def is_native(obj: object) -> bool:
    """True for a callable marked with `@native` (also through a bound method)."""
    return getattr(obj, NATIVE_MARK, False) is True


# --- native ---------------------------------------------------------------------------------

_BYTES_TYPES = (bytes, bytearray, memoryview)


def with_forwarding(
    fn: NativeHandler, scheme: str = "http", trusted: TrustedProxies | None = None
) -> NativeHandler:
    """`fn`, seeing the connection's `scheme` and, from `trusted` proxies, the forwarded client
    and scheme as ``request.client``/``request.scheme`` (`fn` itself when there is nothing to
    change, so plain HTTP without proxy headers costs nothing)."""
    if scheme == "http" and trusted is None:
        return fn

    async def forwarded(request: HttpRequest) -> Response:
        request.scheme = scheme
        if trusted is not None:
            request.client, request.scheme = forwarded_client(
                request.headers, request.client, scheme, trusted
            )
        return await fn(request)

    return forwarded


def native_handler(fn: NativeHandler) -> Handler:
    """The engine handler for a native handler `fn`."""

    async def handle(request: HttpRequest, sink: ResponseSink) -> None:
        response = await fn(request)
        body = response.body
        await sink.start(response.status, response.headers)
        if type(body) is bytes or isinstance(body, _BYTES_TYPES):
            await sink.send(body, False)
        else:
            await send_stream(body, sink)

    handle.native = fn  # type: ignore[attr-defined]  # see `protocol.native_of`
    return handle


async def send_stream(body: Any, sink: ResponseSink) -> None:
    """Send an async-iterable body as chunks, closing it if sending fails."""
    if not hasattr(body, "__aiter__"):
        raise TypeError(
            f"Response.body must be bytes or an async iterable of bytes, got {type(body).__name__}"
        )
    try:
        async for chunk in body:
            if not isinstance(chunk, _BYTES_TYPES):
                raise TypeError(f"a streamed body yielded {type(chunk).__name__}, not bytes")
            await sink.send(chunk, True)
    finally:
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            await aclose()
    await sink.send(b"", False)


# --- lifespan and ServedApp -----------------------------------------------------------------


class LifespanError(RuntimeError):
    """The app's ASGI lifespan startup or shutdown failed."""


class _Lifespan:
    """One run of the ASGI lifespan protocol, the app in a task of its own."""

    def __init__(self, app: AsgiApp, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state
        self.supported = True
        self._to_app_send, self._to_app_receive = trio.open_memory_channel[Message](math.inf)
        self._received = 0  # lifespan messages the app has read
        self._startup_done = trio.Event()
        self._shutdown_done = trio.Event()
        self._failure: str | None = None
        self._phase: Literal["startup", "running", "shutdown"] = "startup"
        # The app's task outlives cancellation of the serving code around it (so shutdown can
        # still reach it); `stop` ends it.
        self.cancel_scope = trio.CancelScope(shield=True)

    async def main(self) -> None:
        scope: Scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        try:
            with self.cancel_scope:
                await self.app(scope, self._receive, self._send)
        except Exception as exc:
            if self._received == 0:
                self.supported = False
                logger.info("ASGI lifespan not supported by the app (%r): skipped", exc)
            elif self._failure is None:
                self._failure = f"the app raised {exc!r} (lifespan phase: {self._phase})"
                logger.error("exception in ASGI lifespan (%s)", self._phase, exc_info=exc)
        else:
            if self._received == 0:
                self.supported = False
            elif not self._startup_done.is_set() and self._failure is None:
                self._failure = "the app returned during lifespan startup without completing it"
        finally:
            self._startup_done.set()
            self._shutdown_done.set()

    async def _receive(self) -> Message:
        message = await self._to_app_receive.receive()
        self._received += 1
        return message

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete" and self._phase == "startup":
            self._startup_done.set()
        elif kind == "lifespan.startup.failed" and self._phase == "startup":
            self._failure = message.get("message", "") or "lifespan.startup.failed"
            self._startup_done.set()
        elif kind == "lifespan.shutdown.complete" and self._phase == "shutdown":
            self._shutdown_done.set()
        elif kind == "lifespan.shutdown.failed" and self._phase == "shutdown":
            self._failure = message.get("message", "") or "lifespan.shutdown.failed"
            self._shutdown_done.set()
        else:
            raise RuntimeError(f"unexpected ASGI lifespan message {kind!r} during {self._phase}")

    async def startup(self) -> None:
        self._to_app_send.send_nowait({"type": "lifespan.startup"})
        await self._startup_done.wait()
        if self._failure is not None:
            raise LifespanError(f"ASGI lifespan startup failed: {self._failure}")
        self._phase = "running"

    def stop(self) -> None:
        self.cancel_scope.cancel()
        self._startup_done.set()
        self._shutdown_done.set()

    async def shutdown(self) -> None:
        if not self.supported:
            return
        self._phase = "shutdown"
        self._to_app_send.send_nowait({"type": "lifespan.shutdown"})
        await self._shutdown_done.wait()
        if self._failure is not None:
            raise LifespanError(f"ASGI lifespan shutdown failed: {self._failure}")


class ServedApp:
    """An app ready to serve: the engines' `handler`, and its lifespan.

    Attributes:
        app: the object given to `resolve_app`.
        handler: ``async (HttpRequest, ResponseSink) -> None``, what the engines call.
        interface: ``"asgi"`` or ``"native"``.
    """

    def __init__(
        self,
        app: object,
        interface: Literal["asgi", "native"],
        handler: Handler,
        asgi_app: AsgiApp | None = None,
        state: dict[str, Any] | None = None,
    ) -> None:
        self.app = app
        self.interface = interface
        self.handler = handler
        self._asgi_app = asgi_app
        self._state = state if state is not None else {}
        self._lifespan: _Lifespan | None = None

    async def startup(self, nursery: trio.Nursery) -> None:
        """Run the ASGI lifespan startup; the app's lifespan task runs in `nursery`.

        Raises `LifespanError` when the app reports (or raises during) a failed startup. A
        native app, or an ASGI app without lifespan support, starts at once. The task is
        shielded from cancellation of `nursery`: `shutdown` (or `stop`) ends it.
        """
        if self._asgi_app is None:
            return
        if self._lifespan is not None:
            raise RuntimeError("startup() was already called")
        lifespan = self._lifespan = _Lifespan(self._asgi_app, self._state)
        nursery.start_soon(lifespan.main, name="asgi-lifespan")
        try:
            await lifespan.startup()
        except BaseException:
            self.stop()
            raise

    async def shutdown(self) -> None:
        """Run the ASGI lifespan shutdown (a no-op unless `startup` ran it), then end its task.

        Raises `LifespanError` when the app reports (or raises during) a failed shutdown.
        """
        try:
            if self._lifespan is not None:
                await self._lifespan.shutdown()
        finally:
            self.stop()

    def stop(self) -> None:
        """End the lifespan task at once, without shutdown (idempotent)."""
        lifespan, self._lifespan = self._lifespan, None
        if lifespan is not None:
            lifespan.stop()

    @asynccontextmanager
    async def lifespan(self, shutdown_timeout: float = 10.0) -> AsyncIterator[None]:
        """``async with served.lifespan():`` serve inside; startup before, shutdown after.

        Shutdown runs however the body exits (shielded from cancellation, at most
        `shutdown_timeout` seconds). A shutdown failure raises `LifespanError` when the body
        exited normally, and is logged otherwise. Exceptions come out as raised, not wrapped
        in an exception group.
        """
        try:
            async with trio.open_nursery() as nursery:
                try:
                    await self.startup(nursery)
                    ok = False
                    try:
                        yield
                        ok = True
                    finally:
                        await self._bounded_shutdown(shutdown_timeout, raise_errors=ok)
                finally:
                    self.stop()
        except BaseExceptionGroup as group:
            if len(group.exceptions) != 1:
                raise
            raise group.exceptions[0] from None

    async def _bounded_shutdown(self, timeout: float, raise_errors: bool) -> None:
        try:
            with trio.move_on_after(timeout, shield=True) as scope:
                await self.shutdown()
            if scope.cancelled_caught:
                logger.error("ASGI lifespan shutdown took over %ss: stopped", timeout)
        except LifespanError:
            if raise_errors:
                raise
            logger.exception("ASGI lifespan shutdown failed")

    def __repr__(self) -> str:
        return f"ServedApp({self.app!r}, interface={self.interface!r})"


def resolve_app(
    app: object,
    interface: str = "auto",
    *,
    server: tuple[str, int] | None = None,
    scheme: str = "http",
    root_path: str = "",
    trusted: TrustedProxies | None = None,
) -> ServedApp:
    """Pick how to serve `app`.

    A native handler is an ``async def (request) -> Response`` marked with `@native`, or an object
    whose ``.native`` attribute is one; an ASGI 3 app is ``async def app(scope, receive, send)``
    (or an object with such a ``__call__``). ``"auto"`` prefers native when `app` offers it.

    Args:
        server: the listening ``(host, port)`` for ASGI's ``scope["server"]``.
        scheme, root_path, trusted: see `asgi_handler` (a native handler has no root path).

    Raises:
        ValueError: `interface` is not ``auto``, ``asgi`` or ``native``.
        TypeError: `app` does not offer the interface asked for.
    """
    if interface not in ("auto", "asgi", "native"):
        raise ValueError(f"interface must be 'auto', 'asgi' or 'native', got {interface!r}")
    native_fn: Any = None
    if is_native(app):
        native_fn = app
    elif is_native(getattr(app, "native", None)):
        native_fn = app.native  # type: ignore[attr-defined]
    if interface == "native" or (interface == "auto" and native_fn is not None):
        if native_fn is None:
            raise TypeError(
                f"{app!r} is not a native handler: mark `async def handler(request) -> Response` "
                "with @pipeparse.native, or give the app a `.native` attribute that is one"
            )
        if not _is_async_callable(native_fn):
            raise TypeError(f"native handler {native_fn!r} must be an async function")
        return ServedApp(app, "native", native_handler(with_forwarding(native_fn, scheme, trusted)))
    if is_native(app) or not callable(app):
        raise TypeError(
            f"{app!r} is not an ASGI 3 app (`async def app(scope, receive, send)`)"
            + (" and offers no native handler" if interface == "auto" else "")
        )
    if inspect.isclass(app):
        raise TypeError(
            f"{app!r} is a class: pass an instance (ASGI 2 'double callable' apps are not served)"
        )
    asgi_app: AsgiApp = app
    state: dict[str, Any] = {}
    handler = asgi_handler(
        asgi_app,
        server=server,
        state=state,
        scheme=scheme,
        root_path=root_path,
        trusted=trusted,
    )
    return ServedApp(app, "asgi", handler, asgi_app, state)


def _is_async_callable(obj: object) -> bool:
    while hasattr(obj, "func") and not inspect.isfunction(obj):  # functools.partial
        obj = obj.func
    return inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(
        getattr(obj, "__call__", None)  # noqa: B004
    )
