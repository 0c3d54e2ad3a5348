"""The trio driver: moves bytes between a trio stream and a `ServerConnection`.

Strategy
--------
Nothing here decides anything about HTTP: `pipeparse.ServerConnection` does. The driver reads
(straight into the protocol's receive buffer), feeds the protocol, and performs the actions it
returns, in order (`_pump`), until it has none: `Start` runs a handler, `Write` sends, `Timer`s
are deadlines kept as data, pause and resume gate the reader, `Cancel` cancels a handler that
ran over its time, `ShutWrite` and `Close` end the connection (in stages: `linger_close`),
`Upgrade` hands it to the WebSocket code.

Who runs what: leader/followers, in two layers. A handler runs inline in the task that
performs its `Start` (one ``coro.send(None)``, the shared trampoline `servers/trampoline.py`):
an instant handler costs a call, and every response of one receive's batch leaves in one
`Write`. On a socket the run's `Readiness` watches, input that comes while the connection is
idle is read and performed by the pool's leading task itself (`_serve_inline`): no task of the
connection wakes. A trio coroutine that suspended must go on in the task it suspended in, so a
handler that suspends keeps its task: a pool task hands the pool's lead to another and goes on
with it (`_run_pooled`; the connection's end cancels it, and `serve_connection` waits for it);
a task of the connection frees the connection's *leader* role (reading and performing
actions), and a parked follower is woken to take it when there is more to do than wait for
input, plus one per `Start` still pending (they likely block too), or spawned (at most
``max_in_flight`` plus the leader). When the handler finishes, its task reports the response,
performs what follows (once per wave: handlers that finish together leave in one write), and
the socket is watched again, or the task takes the leader role, or parks.

One task performs actions at a time (`pumping`); any task that changes the protocol's state
while another performs just leaves the new actions for it, which asks the protocol again
before it stops. A task that cannot perform (a handler's streamed piece, a timer) writes what
it may and `_kick`s the leader for the rest.

Timers: the "read" deadline (keep-alive, header, body timeouts, and the idle trim of the
receive block) ends the leader's wait for input; this run's `ReadDeadlines` keeps it (the wait
has no cancel scope of its own: see `servers/trio_deadlines.py`); request timeouts (only handlers
that suspended have one) are kept in deadline order and served by one watchdog task per
connection, started at the first one, so no request enters a cancel scope of its own. A
request over its timeout gets its 503 from the protocol, and a `Cancel` cancels the scope of
the task running it (a task's scope lasts until then: the hot path enters none).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Coroutine
from typing import Any

import trio
from trio.lowlevel import Abort, RaiseCancelT, Task, reschedule, wait_task_rescheduled

from pipeparse import (
    ConnectionTimeouts,
    HttpDate,
    ProtocolError,
    ServerConnection,
)
from pipeparse.actions import (
    BodyData,
    BodyEnd,
    BodyError,
    Cancel,
    Close,
    PauseReading,
    ResumeReading,
    ShutWrite,
    Start,
    Timer,
    Upgrade,
    Write,
)

from .admission import current_admission
from .config import ServerConfig
from .listen import current_shutdown, log_access
from .protocol import Handler, native_of
from .shutdown import ShutdownSignal
from .tls import close_stream
from .trio_bodies import NoBody, StreamedBody
from .trio_clock import run_clock
from .trio_deadlines import DeadlineTicket, read_deadlines
from .trio_handlers import RunsHandlers, Step, Worker
from .trio_readiness import readiness
from .trio_reading import MAX_RECV, MIN_RECV
from .trio_timers import RequestTimers
from .trio_writing import FLUSH_AT
from .websocket import websocket_of
from .websocket_trio import serve_websocket

__all__ = ["serve_connection"]

log = logging.getLogger("pipeparse.server")

_TIMED_OUT = len(b"503 Service Unavailable\n")
_NONE: list[Any] = []  # (never appended to)
_date = HttpDate()  # one per process: a connection's objects are its idle cost
_timeouts: dict[int, tuple[ServerConfig, ConnectionTimeouts]] = {}
_WORKER = "pipeparse.servers.trio_driver.TrioDriver.work"  # (a compiled method has no qualname)


def _timeouts_of(config: ServerConfig) -> ConnectionTimeouts:
    """The `ConnectionTimeouts` of `config`, one per config (shared by its connections)."""
    known = _timeouts.get(id(config))
    if known is not None and known[0] is config:
        return known[1]
    timeouts = ConnectionTimeouts(
        header=config.header_timeout,
        body=config.body_timeout,
        keep_alive=config.keep_alive_timeout,
        request=config.request_timeout,
    )
    if len(_timeouts) > 64:
        _timeouts.clear()
    _timeouts[id(config)] = (config, timeouts)
    return timeouts


async def serve_connection(
    stream: trio.abc.Stream,
    handler: Handler,
    config: ServerConfig,
    client: tuple[str, int] | None = None,
    *,
    connection: Callable[..., ServerConnection] = ServerConnection,
) -> None:
    """Serve one connection until it closes; the stream is closed on return. `connection`
    makes its protocol object (tests give one that records its buffer)."""
    driver = TrioDriver(stream, handler, config, client, connection)
    shutdown = current_shutdown()
    try:
        async with trio.open_nursery() as nursery:
            driver.nursery = nursery
            shutdown.add_callback(driver.shut_down)  # no watcher task: idle costs one task
            if shutdown.is_set():
                # It waited in the backlog through a graceful stop: its first receive (which
                # reads at once) still takes what the client already sent, to be answered.
                nursery.start_soon(_call, driver.shut_down)
            await driver.work(leader=True)
        while driver.outside:  # handlers that suspended in the `Readiness` pool's tasks
            await driver.wait_progress()
        driver.unwatch()
        if driver.upgrade is not None:
            await driver.serve_upgrade(driver.upgrade)
        elif driver.lingering:
            await driver.linger_close()
    except BaseException:  # (not `finally`: see `servers/asgi.py`, `AsgiHandler.__call__`)
        driver._end()  # (its handlers in the pool's tasks are cancelled too) ...
        with trio.CancelScope(shield=True):  # ... and waited for, as a nursery waits
            while driver.outside:
                await driver.wait_progress()
        await _release(driver, stream, shutdown)
        raise
    await _release(driver, stream, shutdown)


async def _release(driver: TrioDriver, stream: trio.abc.Stream, shutdown: ShutdownSignal) -> None:
    """The connection's end, however it ended: its socket unwatched, the stream closed."""
    driver.unwatch()
    shutdown.discard_callback(driver.shut_down)
    await close_stream(stream)  # close_notify first over TLS


async def _call(function: Callable[[], None]) -> None:
    function()


class TrioDriver(RunsHandlers):
    """One connection: the tasks that drive its `ServerConnection` (see the module comment)."""

    __slots__ = (
        "access_log",
        "admission",
        "bodies",
        "client",
        "config",
        "conn",
        "deadline_ticket",
        "deadlines",
        "done",
        "endpoint",
        "fd",
        "fixed_recv",
        "flush_each",
        "followers",
        "generation",
        "gone",
        "handler",
        "linger_deadline",
        "lingering",
        "max_recv",
        "native",
        "no_body",
        "nursery",
        "outside",
        "progress",
        "progress_waiting",
        "running",
        "stream",
        "tasks",
        "timers",
        "upgrade",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        handler: Handler,
        config: ServerConfig,
        client: tuple[str, int] | None,
        connection: Callable[..., ServerConnection] = ServerConnection,
    ) -> None:
        self.stream = stream
        self.handler = handler
        self.native = native_of(handler)
        self.endpoint = websocket_of(handler) if config.ws != "none" else None
        self.config = config
        self.client = client
        self.conn = connection(
            limits=config.limits,
            policy=config.pipeline_policy,
            max_in_flight=config.max_in_flight,
            buffer_size=config.buffer_size,
            fixed_buffer=config.fixed_buffer,
            timeouts=_timeouts_of(config),
            server_name=config.server_name,
            clock=run_clock(),
            date=_date,
            upgrades=self.endpoint is not None,
        )
        self.nursery: trio.Nursery
        sock = stream.socket if isinstance(stream, trio.SocketStream) else None
        self.fd = sock.fileno() if sock is not None else -1  # -1: use the stream
        self.readiness = readiness() if sock is not None else None
        if self.readiness is not None:
            try:
                self.readiness.register(self.fd)
            except OSError:  # (not a descriptor epoll watches: trio's wait then)
                self.readiness = None
        self.large_sends = False  # TCP_NOTSENT_LOWAT lifted (`WritesStream`)
        self.fixed_recv = config.recv_size
        self.recv_size = config.recv_size or min(MIN_RECV, config.buffer_size)
        self.max_recv = min(MAX_RECV, config.buffer_size)
        self.flush_each = config.flush == "each"
        self.eager_reads = 0  # receives in a row that found data without waiting
        self.eager_misses = 0  # receives in a row whose attempt to read at once found nothing
        self.unread = True  # the socket may hold input whose edge is spent: read, not watch
        self.access_log = config.access_log
        self.admission = current_admission()  # None: no limit on load (the usual case)
        self.pending: list[Any] = _NONE  # actions taken from the protocol, not yet done
        self.stalled: Coroutine[Any, Any, None] | None = None  # a write left for a task
        self.pumping = False  # a task performs actions
        self.starting = False  # a handler's first step runs inline, in the task that performs
        self.done = False
        self.lingering = False
        self.upgrade: Upgrade | None = None
        self.gone = trio.Event()  # the client closed its side, or the connection is over
        self.tasks = 1
        self.generation = 0  # bumped to end the parked followers (`_retire_helpers`)
        self.leader_vacant = False
        self.followers: list[Task] = []  # parked tasks of the connection (`_park`)
        self.progress = trio.lowlevel.ParkingLot()  # the leader waits here when it may not read
        self.progress_waiting = 0  # tasks in `progress` (its own count is a Python call away)
        self.flush_pending = False
        self.read_deadline = math.inf
        self.read_due = False  # the read deadline passed while the leader did not wait
        self.deadlines = read_deadlines()
        self.deadline_ticket = DeadlineTicket(self)  # (what `deadlines` holds, weakly)
        self.wait_scope: trio.CancelScope | None = None  # the leader's, while it waits for input
        self.watching = False  # no task leads: the socket's next edge serves it (`_watch_input`)
        self.linger_deadline = math.inf
        self.running: dict[int, Worker] = {}  # requests whose handler suspended
        self.outside: list[Worker] = []  # tasks of the `Readiness` pool working for it
        self.bodies: dict[int, StreamedBody] = {}
        self.no_body = NoBody(self.gone)
        self.timers: RequestTimers | None = None  # from the first request timeout
        self.error_logged = False

    # -- the tasks -----------------------------------------------------------------------

    async def work(self, leader: bool) -> None:
        """One task's life: lead while it can, help or follow while another leads. Its cancel
        scope lasts until a `Cancel` ends the request it runs, or until the leader's wait for
        input is interrupted; it then goes on in a new one."""
        while not self.done:
            with trio.CancelScope() as scope:
                worker = Worker(scope, leader)
                while not self.done:
                    if worker.leading or (self.leader_vacant and not self.watching):
                        self.leader_vacant = False
                        worker.leading = True
                        await self._lead(worker)
                    elif self.pending and not self.pumping:
                        await self._pump(worker)  # help: run the requests that may start
                    else:
                        generation = self.generation
                        await self._park(worker.task)  # woken: to lead, to help, or done
                        if self.generation != generation:  # (`_retire_helpers`)
                            self.tasks -= 1
                            return
                    if worker.cancelled:
                        break  # out of the cancelled scope
            # Out of its scope: a `Cancel` ended its request, or (still leading) a kick or
            # the read deadline ended its wait for input (`_receive`).
            leader = worker.leading

    async def _lead(self, worker: Worker) -> None:
        """Perform actions and read, until the connection is done, idle (nothing to read:
        the socket is watched), or this task's handler suspended (the role then went to
        another task)."""
        conn = self.conn
        while not self.done and worker.leading:
            if self.pumping:
                await self.wait_progress()  # another task performs: it wakes us
                continue
            await self._pump(worker)
            if not worker.leading or self.done:
                return
            if conn.reading:
                await self._receive(worker)
            else:
                await self.wait_progress()  # a resume, a completion or the end wakes us

    def _kick(self) -> None:
        """Actions are waiting and no task performs them: get the leader to."""
        if self.pumping or self.done:
            return
        if self.wait_scope is not None:
            self._interrupt_wait()  # it waits for input: it performs first
        elif self.progress_waiting:
            self.progress.unpark_all()
        elif self.leader_vacant:
            if self.watching:
                self._unwatch_input()
            self._wake(1)

    async def wait_progress(self) -> None:
        """Park until a task that performs, a resume, a completion or the end wakes us."""
        self.progress_waiting += 1
        try:
            await self.progress.park()
        finally:
            self.progress_waiting -= 1

    async def _park(self, task: Task) -> None:
        """Park `task` (the current one) as a follower, until `_wake` or the end. (A list and
        trio's wait, not a `ParkingLot`: an idle connection's task waits here, and a lot's
        ordered dict cost each one about 0.3 KiB more.)"""
        followers = self.followers
        followers.append(task)

        def abort(_: RaiseCancelT) -> Abort:
            followers.remove(task)
            return Abort.SUCCEEDED

        await wait_task_rescheduled(abort)

    def _wake(self, wanted: int) -> None:
        """Wake (or spawn) `wanted` tasks to lead or help."""
        followers = self.followers
        woken = min(wanted, len(followers))
        for _ in range(woken):
            reschedule(followers.pop())
        spawn = min(wanted - woken, self.config.max_in_flight + 1 - self.tasks)
        for _ in range(spawn):
            self.tasks += 1
            self.nursery.start_soon(self.work, False, name=_WORKER)

    def _end(self) -> None:
        """The connection is over (closed, shut, upgraded, or the client went away)."""
        if self.done:
            return
        self.done = True
        if self.watching:
            self._unwatch_input()
        self.gone.set()  # an app waiting for http.disconnect must not outlive the connection
        if self.timers is not None:
            self.timers.stop()
        for body in self.bodies.values():
            body.put(ProtocolError("client closed the connection", 400))
        for worker in self.outside:  # (the nursery's cancel does not reach them)
            worker.cancelled = True
            worker.scope.cancel()
        if self.stalled is not None:
            self.stalled.close()
            self.stalled = None
        self._wake_followers()
        self.progress.unpark_all()
        self.nursery.cancel_scope.cancel()

    def _wake_followers(self) -> None:
        followers = self.followers
        while followers:
            reschedule(followers.pop())

    def _retire_helpers(self) -> None:
        """The connection is idle: end the tasks that only wait for work (parked followers,
        an idle watchdog), so it is one waiting task again."""
        if self.followers:
            self.generation += 1  # every follower parked now sees it and ends
            self._wake_followers()
        if self.timers is not None and self.timers.retire():
            self.timers = None

    def unwatch(self) -> None:
        """Stop the run's `Readiness` watching the socket (before it is closed, or handed to
        the WebSocket code)."""
        readiness = self.readiness
        if readiness is not None:
            self.readiness = None
            readiness.unregister(self.fd)

    def shut_down(self) -> None:
        """Graceful shutdown (the server's `ShutdownSignal` calls it): read nothing new,
        answer what was read, close when idle."""
        if self.done:
            return
        self.conn.shutdown()
        self._kick()

    # -- performing actions --------------------------------------------------------------

    async def _pump(self, worker: Worker | None, starts: bool = True) -> None:
        """Perform the protocol's actions until it has none. One task at a time; without
        `starts` (a task inside a handler, or the watchdog) it stops before a `Start`."""
        if self.pumping:
            return
        self.pumping = True
        owned = True
        try:
            stalled = self.stalled
            if stalled is not None:  # a write the readiness pool could not wait for
                self.stalled = None
                await stalled
            while True:
                step = self._perform(starts and worker is not None)
                if step is None:
                    break
                if isinstance(step, tuple):
                    assert worker is not None
                    owned = self.pumping = False
                    await self._run_suspended(worker, *step)
                    return
                await step
        finally:
            if owned:
                self.pumping = False
                if self.progress_waiting:
                    self.progress.unpark_all()
        if self.pending and not starts:
            self._kick()

    def _perform(self, starts: bool) -> Step:
        """Perform the protocol's actions with no await (the caller holds `pumping`), until
        none is left (None) or one must be awaited: a write that waits for room (its
        coroutine; then perform again) or a handler that suspended (its `Start`, coroutine,
        trap and sink: go on with it in this task). Without `starts` it stops before a
        `Start`. What is left stays `pending`."""
        conn = self.conn
        actions = self.pending
        self.pending = _NONE
        i = 0
        while not self.done:
            if i == len(actions):
                actions = conn.actions()
                i = 0
                if not actions:
                    break
            action = actions[i]
            i += 1
            kind = type(action)
            if kind is Start:
                if not starts:
                    self.pending = actions[i - 1 :]
                    return None
                self.starting = True  # (see `stream_out`; `_start` raises no `Exception`)
                suspended = self._start(action)
                self.starting = False
                if suspended is not None:
                    self.pending = actions[i:]
                    return (action, *suspended)
                if self.flush_each or conn.responses.out_size >= FLUSH_AT:
                    actions = conn.actions() + actions[i:]
                    i = 0
            elif kind is Write:
                rest = self._write(action.parts)
                if rest is not None:
                    self.pending = actions[i:]
                    return rest
            elif kind is Timer:
                self._timer(action)
            elif kind is BodyData:
                self._body(action.seq, action.data)
            elif kind is BodyEnd:
                self._body(action.seq, None)
            elif kind is BodyError:
                self._body(action.seq, action.error)
            elif kind is PauseReading:
                self._interrupt_wait()  # (if the leader waits for input)
            elif kind is ResumeReading:
                if self.progress_waiting:
                    self.progress.unpark_all()
            elif kind is Cancel:
                self._cancel(action.seq)
            elif kind is ShutWrite or kind is Close:
                self.lingering = kind is ShutWrite
                self._log_error()
                self._end()
            elif kind is Upgrade:
                self.upgrade = action
                self._end()
        if self.done:  # (after the end: only timers still matter)
            for action in actions[i:]:
                if type(action) is Timer:
                    self._timer(action)
        return None

    def _timer(self, action: Timer) -> None:
        key, deadline = action.key, action.deadline
        if type(key) is int:
            timers = self.timers
            if timers is None:
                if deadline is None:
                    return
                timers = self.timers = RequestTimers(self)
            timers.set(key, deadline)
        elif key == "read":
            self.read_due = False
            if deadline is None:
                self.read_deadline = math.inf
            else:
                self.read_deadline = deadline
                self.deadlines.add(deadline, self.deadline_ticket)
        else:  # "linger"
            self.linger_deadline = math.inf if deadline is None else deadline

    def _body(self, seq: int, item: memoryview | ProtocolError | None) -> None:
        body = self.bodies.get(seq)
        if body is not None:
            body.put(item)

    def _cancel(self, seq: int) -> None:
        worker = self.running.pop(seq, None)
        if worker is not None:
            worker.cancelled = True
            worker.scope.cancel()

    def timer_fired(self, seq: int) -> None:
        """Request `seq` ran over its timeout (the watchdog calls it): the protocol answers
        503 and cancels it."""
        conn = self.conn
        in_flight = conn.in_flight
        conn.timer_expired(seq)
        if conn.in_flight < in_flight:
            log.warning("handler ran over %s s", self.config.request_timeout)
            worker = self.running.get(seq)
            if self.access_log and worker is not None:
                log_access(self.client, worker.method, worker.target, 503, _TIMED_OUT)

    async def perform_soon(self) -> None:
        """From a task that is not a worker (the watchdog): perform what may be performed
        now, and leave the rest (a `Start`) to the leader."""
        await self._pump(None, starts=False)
        self._kick()

    # -- the end -------------------------------------------------------------------------

    async def serve_upgrade(self, upgrade: Upgrade) -> None:
        """Serve the WebSocket the upgrade request asked for (the HTTP part is over)."""
        assert self.endpoint is not None
        options = self.config.websocket_options()
        status = await serve_websocket(
            self.stream, self.endpoint, upgrade.head, self.client, upgrade.data, options,
            self.conn.date(),
        )  # fmt: skip
        if self.access_log:
            log_access(self.client, b"GET", upgrade.head.target, status, 0)

    async def linger_close(self) -> None:
        """Close in stages (RFC 9112 §9.6): shut the write side, drain what the client still
        sends until the protocol says close; the caller closes. Without this, bytes the
        client had still in flight would make the kernel answer with a reset, which can
        destroy responses the client has not read yet."""
        conn = self.conn
        with trio.CancelScope(shield=True, deadline=self.linger_deadline):
            try:
                await self.stream.send_eof()  # type: ignore[attr-defined]
            except AttributeError:  # TLS has no half-close: drain all the same
                pass
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return
            try:
                while True:
                    data = await self.stream.receive_some(64 * 1024)
                    conn.receive_data(data)
                    if any(type(a) is Close for a in conn.actions()):
                        return
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
