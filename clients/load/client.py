"""The engine of `pipeparse load`: pipelined HTTP/1.1 load on trio sockets, measured per request.

Strategy
--------
Every request of a run is the same, so it is rendered once and each connection sends copies of
it: a batch of k requests is one ``send`` of k copies (a slice of one pre-rendered buffer).
Sockets are plain non-blocking sockets driven by trio's ``wait_readable``: a send is one system
call, a read one wait and one ``recv_into`` of up to 64 KiB straight into a `SeekableBuffer`
(bytes land once). `ResponseIndex.tally` frames everything a read brought in one call, without
an object per response (byte-identical responses frame as a run); framed bytes are released
when the buffer runs low. Requests sent together are remembered as one group ``[send time,
count]``; a read that completes k of them records one latency with count k. Latency is a
request's send (its intended send in rate mode) to the last byte of its response.

Two loops drive a connection:

- closed loop (no ``rate``): one task; after each read it sends as many requests as completed
  (``window``: DEPTH in flight, a sliding window) or the next DEPTH once all are answered
  (``batch``, as wrk's pipelining does).
- open loop (``rate``): a sender task sends on a fixed schedule (R/connections per connection,
  connections staggered), at most DEPTH in flight; a request sent late because the window was
  full or the connection was down still measures from its intended time (coordinated omission
  corrected, as wrk2 does). A receiver task frames and records (`open_loop.OpenLoop`).

Failures never stop a run: each is counted by kind and the connection reconnects. Every request
sent is either answered (``requests``) or counted ``unanswered`` (the server closed, a read or
write failed, a timeout, a bad response), so ``sent == requests + unanswered``. A run ends by
time (``duration``, then in-flight requests drain) or by count (``requests`` sent and settled);
a connection that cannot connect for ``timeout`` seconds in a row gives up. A server that
refuses every connection from the start is no run at all: if none of the first connections opens
and none opens within `_CONNECT_GIVE_UP` seconds (or `timeout`, if shorter) of retrying, the run
raises `CannotConnect` (``cannot connect to HOST:PORT: connection refused``) instead of counting
errors for its length.

`run_load` is one process; `run_load_sync` runs it, or `processes` of them side by side
(`load_processes`). What a run does is `LoadConfig` (`load_config`); what its connections share
is `plan.Plan` and the current `plan.Phase`.
"""

from __future__ import annotations

import json
import os
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from pipeparse import BufferFull, FramedResponse, ResponseIndex, SeekableBuffer
from pipeparse.clients.load.config import MODES, LoadConfig, Progress, ProgressCallback
from pipeparse.clients.load.open_loop import OpenLoop
from pipeparse.clients.load.plan import SECONDS, Phase, Plan
from pipeparse.clients.load.result import LoadResult, LoadStats
from pipeparse.clients.load.socket_io import ConnectionFailed, reason, send_rest, wait_writable
from pipeparse.clients.load.tls import handshake

__all__ = [
    "MODES",
    "CannotConnect",
    "LoadConfig",
    "LoadResult",
    "Progress",
    "run_load",
    "run_load_sync",
]

_BACKOFF_FIRST = 0.01 * SECONDS  # reconnect backoff after a failed connect, doubling ...
_BACKOFF_MAX = 0.5 * SECONDS  # ... up to this
PROGRESS_EVERY = 0.25 * SECONDS  # (also the multi-process parent's, `load_processes`)
_CONNECT_GIVE_UP = 2.0 * SECONDS  # no connection at all for this long: the run cannot start
_ONLY_200 = {200: 0}.keys()


class CannotConnect(RuntimeError):
    """Not one connection to the server could be opened (the message says why, in one line)."""


# -- a connection ------------------------------------------------------------------------------


class Connection:
    """One client connection, kept open across phases, reconnected after a failure.

    A plain non-blocking socket, driven with trio's `wait_readable`/`wait_writable`: a send
    is one system call with no trio checkpoint, and a read waits once for readiness, then
    reads once (the wait is each loop's one scheduling point).
    """

    def __init__(self, plan: Plan, number: int) -> None:
        self.plan = plan
        self.number = number
        self.sock: socket.socket | None = None
        self.buf = SeekableBuffer(plan.config.buffer_size)
        self.index = ResponseIndex(self.buf, plan.limits)
        self.bad_statuses = 0  # responses of status >= 400 counted on this index
        self.groups: deque[list[Any]] = deque()  # [send time, count] per group sent
        self.inflight = 0
        self.pos = 0  # the position in the plan's request cycle of the next request to send
        self.next_t: float | None = None  # open loop: the next intended send time
        self.gave_up = False
        self.connect_error = ""  # why the last connect failed (for `CannotConnect`)
        self.last = 0.0  # when a response last completed, or the window last opened

    def close(self) -> None:
        if self.sock is not None:
            trio.lowlevel.notify_closing(self.sock)
            self.sock.close()
            self.sock = None

    async def connect(self, stats: LoadStats) -> bool:
        """One attempt; a failure is counted. True when connected."""
        plan = self.plan
        try:
            sock = socket.socket(plan.family, socket.SOCK_STREAM)
        except OSError as e:  # out of file descriptors, say
            self.connect_error = reason(e)
            stats.error(trio.current_time(), "connect")
            return False
        sock.setblocking(False)
        ok = False
        self.connect_error = f"no connection within {plan.timeout:g} s"
        try:
            with trio.move_on_after(plan.timeout):
                try:
                    sock.connect(plan.sockaddr)
                except BlockingIOError:
                    await wait_writable(sock)
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, os.strerror(err)) from None
                if plan.tls is not None:
                    sock = await handshake(sock, plan.tls, plan.target.host)
                ok = True
        except OSError as e:
            self.connect_error = reason(e)
        if not ok:
            trio.lowlevel.notify_closing(sock)
            sock.close()
            stats.error(trio.current_time(), "connect")
            return False
        if plan.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.buf = SeekableBuffer(plan.config.buffer_size)
        self.index = ResponseIndex(self.buf, plan.limits)
        self.bad_statuses = 0
        self.groups.clear()
        self.inflight = 0
        self.pos = 0  # the response to request `seq` answers cycle position `seq % cycle_len`
        return True

    async def run(self, ph: Phase) -> None:
        """Run the phase on this connection, until it is over and nothing is in flight."""
        plan = self.plan
        failing_since: float | None = None
        backoff = _BACKOFF_FIRST
        self.next_t = None
        while not self.gave_up:
            if self.sock is None:
                now = trio.current_time()
                if ph.over(now):
                    return
                if await self.connect(ph.stats):
                    failing_since = None
                    backoff = _BACKOFF_FIRST
                else:
                    now = trio.current_time()
                    if failing_since is None:
                        failing_since = now
                    elif now - failing_since >= plan.timeout:
                        self.gave_up = True  # the server cannot be reached
                        return
                    await trio.sleep(backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX)
                    continue
            try:
                if plan.interval:
                    await OpenLoop(self).run(ph)
                else:
                    await self._closed_loop(ph)
                return
            except ConnectionFailed as f:
                now = trio.current_time()
                stats = ph.stats
                if f.kind is not None:
                    stats.error(now, f.kind)
                if self.inflight:
                    stats.error(now, "unanswered", self.inflight)
                    self.inflight = 0
                self.groups.clear()
                self.close()

    # -- closed loop -------------------------------------------------------------------------

    async def _closed_loop(self, ph: Phase) -> None:
        """Send, read, frame, record, send again. Returns when the phase is over and nothing
        is in flight; raises `ConnectionFailed` when the connection is lost.

        The timeout is checked lazily: a cancel scope is armed at the last progress plus the
        timeout, and re-armed (rarely) when it fires early; progress only moves a float.
        """
        timeout = self.plan.timeout
        self.last = trio.current_time()
        while True:
            with trio.CancelScope(deadline=self.last + timeout):
                if await self._closed_steps(ph):
                    return
            if self.inflight and trio.current_time() - self.last >= timeout:
                raise ConnectionFailed("timeout")

    async def _closed_steps(self, ph: Phase) -> bool:
        """The hot loop of `_closed_loop`; True when done, False if cancelled by the timer.

        Each read first waits for readiness (trying the read first was measured: against a busy
        server it fails about nine times in ten, and a failed read costs more than the wait).
        """
        plan = self.plan
        sock = self.sock
        assert sock is not None
        wait_readable = plan.wait_readable
        buf = self.buf
        index = self.index
        stats = ph.stats
        depth = plan.depth
        batch = plan.batch
        reqs = plan.requests
        offsets = plan.offsets
        cycle_len = plan.cycle_len
        method = plan.method
        groups = self.groups
        timeout = plan.timeout
        recv_size = plan.recv_size
        low_water = 2 * recv_size
        verify = plan.verify
        now_fn = trio.current_time
        take = ph.take
        completed = index.completed
        inflight = self.inflight
        record = stats.record_latency
        kind = "write"
        now = now_fn()
        try:
            while True:
                room = (0 if inflight else depth) if batch else depth - inflight
                if room and ph.sending:
                    k = take(room, now)
                    if k:
                        if not inflight:
                            self.last = now
                        pos = self.pos
                        if method is not None:
                            index.expect(method, k)
                        else:
                            self.expect_mixed(pos, k)
                        groups.append([now, k])
                        inflight += k
                        self.inflight = inflight
                        stats.sent += k
                        kind = "write"
                        data = reqs[offsets[pos] : offsets[pos + k]]
                        self.pos = (pos + k) % cycle_len
                        try:
                            sent = sock.send(data)
                        except BlockingIOError:
                            sent = 0
                        if sent < len(data):
                            await send_rest(sock, data[sent:], timeout)
                if not inflight:
                    return True
                kind = "read"
                if buf.writable() < low_water:
                    self.release()
                await wait_readable(sock)
                try:
                    n = buf.recv_into(sock, recv_size)
                except BlockingIOError:
                    now = now_fn()
                    continue
                except BufferFull:
                    raise ConnectionFailed("framing") from None  # verify: a response > the buffer
                now = now_fn()
                prev = index.current
                if n:
                    stats.received(now, n)
                    framed = index.advance() if verify else index.tally()
                else:
                    framed = index.eof()
                done = index.completed - completed
                if done:
                    completed += done
                    inflight -= done
                    self.inflight = inflight
                    self.last = now
                    group = groups[0]
                    if group[1] > done and not verify:  # the common case, inline
                        group[1] -= done
                        stats.completed(now, done)
                        record(now - group[0], done)
                        if index.statuses.keys() != _ONLY_200:
                            self._count_statuses(stats, now)
                    else:
                        self.settle(stats, now, done, prev, framed)
                if index.error is not None:
                    raise ConnectionFailed("framing")
                if not n or index.done:
                    raise ConnectionFailed(None)  # closed: what is in flight is unanswered
        except OSError:
            raise ConnectionFailed(kind) from None
        finally:
            self.inflight = inflight

    def expect_mixed(self, pos: int, k: int) -> None:
        """Tell the index the methods of the `k` requests from cycle position `pos`."""
        expect = self.index.expect
        for m in self.plan.mix.methods[pos : pos + k]:
            expect(m)

    def release(self) -> None:
        """Release what was framed (with `verify`, keep a response whose body is arriving)."""
        buf = self.buf
        index = self.index
        upto = index.position
        if self.plan.verify and index.current is not None:
            upto = index.current.start
        if upto > buf.head:
            buf.release(buf.head, upto)

    def settle(
        self,
        stats: LoadStats,
        now: float,
        done: int,
        prev: FramedResponse | None,
        framed: list[FramedResponse] | int,
    ) -> None:
        """Record `done` completed responses: latency by group, statuses, verification.

        `prev` was the response still arriving before this read; `framed` what `advance()`
        returned (with `verify`), else what `tally()` did.
        """
        groups = self.groups
        left = done
        stats.completed(now, done)  # first: it starts a new second of the timeline if need be
        record = stats.record_latency
        while left:
            group = groups[0]
            count = group[1]
            if count <= left:
                groups.popleft()
                record(now - group[0], count)
                left -= count
            else:
                group[1] = count - left
                record(now - group[0], left)
                left = 0
        if self.index.statuses.keys() != _ONLY_200:
            self._count_statuses(stats, now)
        if self.plan.verify and not isinstance(framed, int):
            finished = [prev] if prev is not None and prev.end is not None else []
            finished.extend(r for r in framed if r.end is not None)
            wrong = sum(not self._verified(r) for r in finished)
            if wrong:
                stats.error(now, "verify", wrong)

    def _count_statuses(self, stats: LoadStats, now: float) -> None:
        """Count the responses with an error status (>= 400) completed since the last call."""
        bad = sum([v for k, v in self.index.statuses.items() if k >= 400])
        if bad > self.bad_statuses:
            stats.error(now, "status", bad - self.bad_statuses)
            self.bad_statuses = bad

    def _verified(self, r: FramedResponse) -> bool:
        """Does the echo app's report match the request sent, in order?"""
        plan = self.plan
        if r.head.status != 200:
            return False
        target, method, body_len, body_sha256 = plan.reports[r.seq % plan.cycle_len]
        body = b"".join([self.buf.view(s, e) for s, e in r.body])
        try:
            report = json.loads(body)
        except ValueError:
            return False
        return (
            isinstance(report, dict)
            and report.get("seq") == r.seq
            and report.get("target") == target
            and report.get("method") == method
            and report.get("body_len") == body_len
            and report.get("body_sha256") == body_sha256
        )


# -- a run -------------------------------------------------------------------------------------


async def run_load(
    config: LoadConfig,
    progress: ProgressCallback | None = None,
    *,
    start_gate: Callable[[], Awaitable[None]] | None = None,
) -> LoadResult:
    """Run the load described by `config` in this process (trio); `processes` is ignored.

    Args:
        progress: called with a `Progress` snapshot every quarter second.
        start_gate: awaited once the connections are open, before the clock starts (lets
            several processes start together).
    """
    config.check()
    plan = Plan(config)
    now = trio.current_time()
    first = LoadStats(now, config.verify)
    conns = [Connection(plan, i) for i in range(config.connections)]
    try:
        try:
            await plan.resolve()
        except OSError as e:
            raise CannotConnect(f"cannot resolve {plan.target.host}: {reason(e)}") from None
        await _open_connections(plan, conns, first)
        if start_gate is not None:
            await start_gate()
        if config.warmup > 0:
            now = trio.current_time()
            first.start = now
            warm = Phase("warmup", first, now + config.warmup, None)
            await _run_phase(conns, warm, progress, config)
            first = LoadStats(trio.current_time(), config.verify)
        now = trio.current_time()
        first.start = now
        end = now + config.duration if config.duration is not None else None
        ph = Phase("load", first, end, config.requests)
        finished = await _run_phase(conns, ph, progress, config)
        return first.result(finished, config.connections, config.depth)
    finally:
        for c in conns:
            c.close()


async def _open_connections(plan: Plan, conns: list[Connection], stats: LoadStats) -> None:
    """Open every connection; if none opens, retry one (with backoff) for `_CONNECT_GIVE_UP`
    seconds (or the run's `timeout`, if shorter), then raise `CannotConnect`. Once one is open,
    the others reconnect as usual."""
    async with trio.open_nursery() as nursery:
        for c in conns:
            nursery.start_soon(c.connect, stats)
    first = conns[0]
    give_up = trio.current_time() + min(_CONNECT_GIVE_UP, plan.timeout)
    backoff = _BACKOFF_FIRST
    while not any(c.sock is not None for c in conns):
        if trio.current_time() >= give_up:
            t = plan.target
            host = f"[{t.host}]" if ":" in t.host else t.host
            raise CannotConnect(f"cannot connect to {host}:{t.port}: {first.connect_error}")
        await trio.sleep(backoff)
        backoff = min(backoff * 2, _BACKOFF_MAX)
        await first.connect(stats)


async def _run_phase(
    conns: list[Connection], ph: Phase, progress: ProgressCallback | None, config: LoadConfig
) -> float:
    """Run a phase on every connection; returns when the last one finished."""
    async with trio.open_nursery() as nursery:
        if progress is not None:
            nursery.start_soon(_report, ph, progress, config)
        async with trio.open_nursery() as workers:
            for c in conns:
                workers.start_soon(c.run, ph)
        nursery.cancel_scope.cancel()
    return trio.current_time()


async def _report(ph: Phase, progress: ProgressCallback, config: LoadConfig) -> None:
    planned = config.warmup if ph.name == "warmup" else config.duration
    while True:
        s = ph.stats
        now = trio.current_time()
        progress(
            Progress(
                phase=ph.name if ph.sending else "drain",
                elapsed=now - ph.start,
                planned=planned,
                requests=s.requests,
                sent=s.sent,
                errors=s.error_total,
                bytes_received=s.bytes_received,
                target_requests=config.requests if ph.name == "load" else None,
            )
        )
        await trio.sleep(PROGRESS_EVERY)


# -- several processes -------------------------------------------------------------------------


def run_load_sync(config: LoadConfig, progress: ProgressCallback | None = None) -> LoadResult:
    """Run the load, blocking; with ``processes > 1``, in that many processes side by side."""
    config.check()
    if config.processes == 1:
        return trio.run(_run_one, config, progress)
    from pipeparse.clients.load.processes import run_processes  # (it imports this module)

    return run_processes(config, progress)


async def _run_one(config: LoadConfig, progress: ProgressCallback | None) -> LoadResult:
    return await run_load(config, progress)
