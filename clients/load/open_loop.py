"""The open loop of `pipeparse load` (``rate``): requests on a schedule, on one connection.

Strategy: a sender task sends on a fixed schedule (R/connections per connection, connections
staggered over one interval), at most DEPTH in flight; a request sent late because the window
was full or the connection was down still measures from its intended time (coordinated omission
corrected, as wrk2 does). A receiver task frames and records, and wakes the sender when the
window opens (`room`). The receiver's timer runs only while requests are in flight. The state
both tasks share is the connection's (`pipeparse.clients.load.client.Connection`); what only
the loop needs is this object's.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import trio

from pipeparse import BufferFull, FramedResponse
from pipeparse.clients.load.plan import Phase
from pipeparse.clients.load.socket_io import ConnectionFailed, send_rest

if TYPE_CHECKING:
    from pipeparse.clients.load.client import Connection

__all__ = ["OpenLoop"]


class OpenLoop:
    """One run of the open loop on `conn` (a new one after each reconnect)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.room = trio.Event()  # set by the receiver when the window opens
        self.sender_done = False
        self.failure: str | None = None  # the sender's failure kind
        self.stop_scope = trio.CancelScope()  # the receiver's: cancelled by the sender

    async def run(self, ph: Phase) -> None:
        """The sender on its schedule, the receiver recording; returns or raises like
        `Connection._closed_loop`."""
        conn = self.conn
        conn.last = trio.current_time()
        failure: ConnectionFailed | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sender, ph)
            try:
                await self._receiver(ph)
            except ConnectionFailed as f:
                failure = f  # raised outside the nursery, which would wrap it in a group
            finally:
                nursery.cancel_scope.cancel()
        if failure is not None:
            raise failure

    async def _sender(self, ph: Phase) -> None:
        conn = self.conn
        plan = conn.plan
        sock = conn.sock
        assert sock is not None
        depth = plan.depth
        batch = plan.batch
        interval = plan.interval
        step = interval * depth if batch else interval
        offsets = plan.offsets
        cycle_len = plan.cycle_len
        stats = ph.stats
        groups = conn.groups
        if conn.next_t is None:  # stagger the connections over one interval
            conn.next_t = ph.start + interval * conn.number / plan.config.connections
        try:
            while True:
                t = conn.next_t
                if (ph.end is not None and t >= ph.end) or ph.budget == 0:
                    break
                now = trio.current_time()
                if t > now:
                    await trio.sleep_until(t)
                    continue
                inflight = conn.inflight
                room = (0 if inflight else depth) if batch else depth - inflight
                if not room:
                    self.room = trio.Event()
                    await self.room.wait()
                    continue
                if batch:
                    due = depth
                else:
                    due = min(room, int((now - t) / interval) + 1)
                    if ph.end is not None:  # only requests intended before the end
                        due = min(due, math.ceil((ph.end - t) / interval - 1e-9))
                k = ph.take(due, t)
                if not k:
                    break
                if batch:
                    groups.append([t, k])
                else:
                    groups.extend([[t + i * interval, 1] for i in range(k)])
                conn.next_t = t + (step if batch else k * interval)
                pos = conn.pos
                if plan.method is not None:
                    conn.index.expect(plan.method, k)
                else:
                    conn.expect_mixed(pos, k)
                if not inflight:
                    conn.last = now
                conn.inflight = inflight + k
                stats.sent += k
                data = plan.requests[offsets[pos] : offsets[pos + k]]
                conn.pos = (pos + k) % cycle_len
                try:
                    sent = sock.send(data)
                except BlockingIOError:
                    sent = 0
                if sent < len(data):
                    await send_rest(sock, data[sent:], plan.timeout)
                await trio.lowlevel.checkpoint()
        except OSError:
            self.failure = "write"
        except ConnectionFailed as f:
            self.failure = f.kind
        else:
            self.sender_done = True
            if conn.inflight:
                return
        self.stop_scope.cancel()

    async def _receiver(self, ph: Phase) -> None:
        conn = self.conn
        plan = conn.plan
        sock = conn.sock
        assert sock is not None
        wait_readable = plan.wait_readable
        buf = conn.buf
        index = conn.index
        stats = ph.stats
        recv_size = plan.recv_size
        timeout = plan.timeout
        stop = self.stop_scope
        completed = index.completed
        with stop:
            while True:
                # The timer runs only while requests are in flight.
                # (Armed from now when nothing is in flight yet: a silent server still ends it.)
                deadline = (conn.last if conn.inflight else trio.current_time()) + timeout
                with trio.CancelScope(deadline=deadline) as timer:
                    try:
                        await wait_readable(sock)
                    except OSError:
                        raise ConnectionFailed("read") from None
                if timer.cancelled_caught:
                    if conn.inflight and trio.current_time() - conn.last >= timeout:
                        raise ConnectionFailed("timeout")
                    continue
                try:
                    view = buf.write_view(recv_size)
                except BufferFull:
                    raise ConnectionFailed("framing") from None
                try:
                    n = sock.recv_into(view, recv_size)
                except BlockingIOError:
                    continue
                except OSError:
                    raise ConnectionFailed("read") from None
                finally:
                    view.release()
                now = trio.current_time()
                prev = index.current
                if n:
                    buf.commit(n)
                    stats.received(now, n)
                    framed: list[FramedResponse] | int = (
                        index.advance() if plan.verify else index.tally()
                    )
                else:
                    framed = index.eof()
                done = index.completed - completed
                if done:
                    completed += done
                    conn.inflight -= done
                    conn.last = now
                    conn.settle(stats, now, done, prev, framed)
                    self.room.set()
                if index.error is not None:
                    raise ConnectionFailed("framing")
                if not n or index.done:
                    raise ConnectionFailed(None)
                conn.release()
                if self.sender_done and not conn.inflight:
                    return
        # The stop scope was cancelled: the sender is done with nothing in flight, or failed.
        if self.failure is not None:
            raise ConnectionFailed(self.failure)
