"""pipeparse.locust: a Locust user that pipelines (``pip install 'pipeparse[locust]'``).

A locustfile can be as short as::

    from pipeparse.locust import PipelinedUser

    class Plain(PipelinedUser):
        depth = 16
        paths = ["/plaintext"]

Strategy
--------
Locust's own users send one request at a time per connection. This one keeps `depth` requests in
flight on each of its `connections`, on Locust's gevent sockets, with the project's sans-I/O core
doing the HTTP: requests are rendered once (`pipeparse.clients.load.mix.Mix`, the same code and
format
as ``pipeparse load --requests``) and sent as one slice of one buffer per window, responses land
once in a `SeekableBuffer` and are framed by `ResponseIndex` (strict framing, HEAD and 1xx
aware). No trio runs here: gevent drives the socket, the core never does I/O.

Every response fires Locust's ``request`` event (method, the request's target as its name,
milliseconds from the request's send to its last byte, the body length), so Locust's
statistics, CSV files, web UI and ``--master``/``--worker`` runs work unchanged. A status >= 400
is reported with an exception (`HttpStatusError`). A framing error, a timeout or a dropped
connection (`ConnectionLost`) is reported once for every request in flight, never dropped
silently, and the connection reconnects (backing off from 10 ms to 0.5 s while it cannot).

When Locust stops a user gracefully (``--stop-timeout``), its connections stop sending and
drain what is in flight before closing, so every request sent is reported. A forced stop kills
the user mid-flight, as it does any Locust user.

``https://`` hosts work with the load client's TLS settings (`https_context`, shared code):
the system's CAs plus `cacert`, or no checks at all with `insecure`. gevent's ``ssl`` wraps the
socket (the handshake names the host, SNI) and the pipelining is the same as in plain text:
one ``sendall`` per window (OpenSSL cuts it into records), responses framed as they decrypt.
A handshake that fails (an untrusted certificate) is reported like a refused connect.

This module imports Locust (and so gevent, which patches the standard library): import it only
in a locustfile, never from code that runs trio. ``import pipeparse`` does not import it.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import gevent
from gevent import socket as gsocket
from gevent.pool import Group
from locust import User, task
from locust.exception import StopTest
from locust.user.task import LOCUST_STATE_STOPPING

from pipeparse.clients.load.mix import Mix, RequestSpec, parse_mix
from pipeparse.clients.load.request import Target, parse_url
from pipeparse.clients.load.tls_context import https_context

from ._buffer import SeekableBuffer
from ._errors import BufferFull
from ._limits import KiB, Limits
from ._response import FramedResponse, ResponseIndex

__all__ = ["ConnectionLost", "HttpStatusError", "PipelinedUser"]

_RECV_SIZE = 64 * KiB
_BACKOFF_FIRST = 0.01  # seconds between reconnects, doubling ...
_BACKOFF_MAX = 0.5  # ... up to this


class HttpStatusError(Exception):
    """A response with a status of 400 or more."""


class ConnectionLost(Exception):
    """The connection broke (closed, reset, timed out, or a framing error) with this request in
    flight; the message says how."""


class _Plan:
    """What every connection of one user class against one host shares (rendered once)."""

    def __init__(self, cls: type[PipelinedUser], host: str) -> None:
        for name in ("depth", "connections", "buffer_size", "max_head_size"):
            value = getattr(cls, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{cls.__name__}.{name} must be a positive integer, got {value!r}")
        if not (isinstance(cls.timeout, int | float) and cls.timeout > 0):
            raise ValueError(
                f"{cls.__name__}.timeout must be positive seconds, got {cls.timeout!r}"
            )
        if not isinstance(cls.insecure, bool):
            raise ValueError(f"{cls.__name__}.insecure must be True or False, got {cls.insecure!r}")
        if cls.cacert is not None and not (isinstance(cls.cacert, str) and cls.cacert):
            raise ValueError(
                f"{cls.__name__}.cacert must be a CA bundle's file name (PEM) or None, "
                f"got {cls.cacert!r}"
            )
        server = parse_url(host)
        if server.target not in ("/", ""):
            raise ValueError(
                f"host {host!r} has a path: give whole targets in `paths` or `requests`"
            )
        if cls.requests is not None:
            specs = parse_mix(cls.requests)
        else:
            if isinstance(cls.paths, str) or not cls.paths:
                raise ValueError(f"{cls.__name__}.paths must be a non-empty list of paths")
            specs = parse_mix([{"target": p} for p in cls.paths])
        self.server: Target = server
        self.tls = _tls_context(cls) if server.tls else None
        self.mix = Mix(specs, server, cls.depth, extra_headers=list(cls.headers))
        self.data = memoryview(self.mix.data)
        self.names = [s.target for s in specs]
        self.method_names = [s.method for s in specs]
        self.depth = cls.depth
        self.connections = cls.connections
        self.timeout = float(cls.timeout)
        self.buffer_size = cls.buffer_size
        self.limits = Limits(max_head_size=cls.max_head_size)
        self.recv_size = min(_RECV_SIZE, cls.buffer_size)


class PipelinedUser(User):
    """A Locust user keeping `depth` pipelined requests in flight on each of its `connections`.

    Attributes (set them on your subclass):
        depth: requests in flight per connection (default 16).
        connections: persistent connections per user (default 1).
        paths: request targets, sent in turn with GET (default ``["/"]``).
        requests: a weighted mix instead of `paths`: dicts with ``target`` and optionally
            ``method``, ``headers``, ``body`` or ``body_file``, ``weight`` (the format of
            ``pipeparse load --requests``), or `RequestSpec` objects.
        headers: ``(name, value)`` pairs added to every request.
        timeout: seconds without a complete response (or a connect) before the connection is
            dropped and its requests in flight are reported as failures (default 10).
        buffer_size, max_head_size: the receive buffer and the largest response head, bytes.
        cacert: https: a CA bundle (PEM) to verify the server with, besides the system's
            (``pipeparse load --cacert``).
        insecure: https: do not verify the server's certificate (``pipeparse load -k``).
    """

    abstract = True
    depth: int = 16
    connections: int = 1
    paths: Sequence[str] = ("/",)
    requests: Sequence[dict[str, Any] | RequestSpec] | None = None
    headers: Sequence[tuple[str, str]] = ()
    timeout: float = 10.0
    cacert: str | None = None
    insecure: bool = False
    buffer_size: int = 256 * KiB
    max_head_size: int = 16 * KiB

    _plans: ClassVar[dict[tuple[type, str], _Plan]] = {}

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        host = self.host or environment.host
        if not host:
            raise StopTest("give the host: --host http://HOST:PORT, or a `host` class attribute")
        key = (type(self), host)
        plan = PipelinedUser._plans.get(key)
        if plan is None:
            plan = PipelinedUser._plans[key] = _Plan(type(self), host)
        self._plan = plan

    def _stopping(self) -> bool:
        return self._state == LOCUST_STATE_STOPPING

    @task
    def pipeline(self) -> None:
        """Run the connections until Locust stops this user (then drain them)."""
        plan = self._plan
        fire = self.environment.events.request.fire
        if extra := plan.connections - 1:
            group = Group()
            try:
                for i in range(extra):
                    group.spawn(_Pipe(plan, fire, self.context(), i + 1).run, self._stopping)
                _Pipe(plan, fire, self.context(), 0).run(self._stopping)
                group.join(raise_error=True)
            finally:
                group.kill()
        else:
            _Pipe(plan, fire, self.context(), 0).run(self._stopping)


class _Broken(Exception):
    """The connection broke; `reason` says how (reported for each request in flight)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Pipe:
    """One pipelined connection of a user, reconnected until the user stops."""

    def __init__(
        self, plan: _Plan, fire: Callable[..., None], context: dict[str, Any], number: int
    ) -> None:
        self.plan = plan
        self.fire = fire
        self.context = context
        # Connections of a user start at different points of the mix.
        self.pos = number * plan.depth % len(plan.mix)
        self.inflight: deque[tuple[float, int]] = deque()  # (send time, spec index) in order

    def run(self, stopping: Callable[[], bool]) -> None:
        plan = self.plan
        backoff = _BACKOFF_FIRST
        address = (plan.server.host, plan.server.port)
        while not stopping():
            started = time.perf_counter()
            try:
                sock = self._connect(address)
            except OSError as e:
                spec = plan.mix.cycle[self.pos]
                self.fire(
                    request_type=plan.method_names[spec],
                    name=plan.names[spec],
                    response_time=(time.perf_counter() - started) * 1000.0,
                    response_length=0,
                    response=None,
                    context=self.context,
                    exception=ConnectionLost(f"cannot connect: {e.strerror or e}"),
                )
                gevent.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            backoff = _BACKOFF_FIRST
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._drive(sock, stopping)
                return
            except _Broken as e:
                self._lost(e.reason)
            except OSError as e:
                self._lost(_reason(e))
            finally:
                sock.close()

    def _connect(self, address: tuple[str, int]) -> Any:
        """A connected socket, over TLS with the handshake done for an https host."""
        plan = self.plan
        sock = gsocket.create_connection(address, timeout=plan.timeout)
        if plan.tls is None:
            return sock
        try:  # gevent's context: the handshake waits cooperatively, bounded by the timeout
            return plan.tls.wrap_socket(sock, server_hostname=plan.server.host)
        except BaseException:
            sock.close()
            raise

    def _lost(self, reason: str) -> None:
        """Report every request in flight as failed: the connection broke."""
        plan = self.plan
        now = time.perf_counter()
        error = ConnectionLost(reason)
        while self.inflight:
            sent, spec = self.inflight.popleft()
            self.fire(
                request_type=plan.method_names[spec],
                name=plan.names[spec],
                response_time=(now - sent) * 1000.0,
                response_length=0,
                response=None,
                context=self.context,
                exception=error,
            )

    def _send(self, sock: Any, index: ResponseIndex, k: int) -> None:
        """Send the next `k` requests of the mix (one slice, one ``sendall``)."""
        plan = self.plan
        mix = plan.mix
        pos = self.pos
        if mix.one_method is not None:
            index.expect(mix.one_method, k)
        else:
            for m in mix.methods[pos : pos + k]:
                index.expect(m)
        now = time.perf_counter()
        cycle = mix.cycle
        n = len(cycle)
        self.inflight.extend([(now, cycle[(pos + i) % n]) for i in range(k)])
        self.pos = (pos + k) % n
        sock.sendall(plan.data[mix.offsets[pos] : mix.offsets[pos + k]])

    def _drive(self, sock: Any, stopping: Callable[[], bool]) -> None:
        """Keep `depth` in flight until the user stops and nothing is; raise `_Broken`."""
        plan = self.plan
        buf = SeekableBuffer(plan.buffer_size)
        index = ResponseIndex(buf, plan.limits)
        inflight = self.inflight
        responses: deque[FramedResponse] = deque()  # heads framed, not yet reported
        depth = plan.depth
        recv_size = plan.recv_size
        low_water = 2 * recv_size
        fire = self.fire
        context = self.context
        names = plan.names
        methods = plan.method_names
        clock = time.perf_counter
        completed = 0
        while True:
            room = depth - len(inflight)
            if room and not stopping():
                self._send(sock, index, room)
            if not inflight:
                return
            if buf.writable() < low_water:
                buf.release(buf.head, index.position)
            try:
                n = buf.recv_into(sock, recv_size)
            except TimeoutError:
                raise _Broken(f"no response within {plan.timeout:g} s") from None
            except BufferFull:  # cannot happen: framed bytes are released (kept for safety)
                raise _Broken("receive buffer full") from None
            now = clock()
            responses.extend(index.advance() if n else index.eof())
            done = index.completed - completed
            completed += done
            for _ in range(done):
                r = responses.popleft()
                sent, spec = inflight.popleft()
                status = r.head.status
                fire(
                    request_type=methods[spec],
                    name=names[spec],
                    response_time=(now - sent) * 1000.0,
                    response_length=r.body_framed,
                    response=None,
                    context=context,
                    exception=HttpStatusError(f"HTTP {status}") if status >= 400 else None,
                )
            if index.error is not None:
                raise _Broken(f"bad response: {index.error}")
            if not n:
                raise _Broken("closed by the server")
            if index.done:
                raise _Broken("the server ended the connection (Connection: close)")


def _tls_context(cls: type[PipelinedUser]) -> ssl.SSLContext:
    try:
        return https_context(cls.cacert, cls.insecure)
    except OSError as e:  # (ssl.SSLError too: a file with no certificate in it)
        raise ValueError(f"{cls.__name__}.cacert: cannot load {cls.cacert!r}: {_reason(e)}") from e


def _reason(e: OSError) -> str:
    text = e.strerror or str(e) or type(e).__name__
    return text[:1].lower() + text[1:]
