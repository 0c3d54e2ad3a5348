"""WebSocket echo throughput: pipeparse on each loop against uvicorn, one server at a time.

Strategy: every server serves the built-in ``echo`` app's ASGI form, which sends each
WebSocket message back (`pipeparse.servers.apps`). The client opens CONNECTIONS WebSockets and
keeps one message of SIZE bytes in flight on each: it sends a binary frame, waits for the
echo, sends the next. It is an asyncio `Protocol` (on uvloop when installed) that writes one
pre-masked frame and counts echoed bytes, so it costs a few microseconds per message and the
server is what is measured. Messages are counted for SECONDS after a one-second warm-up.

As in `wrk_servers`: a fresh server process per measurement, the client pinned to the first
usable CPU and the server to the others, rounds taken in turn with the order rotated, the
median of the rounds per server, and ratios against uvicorn (websockets) from the same run.
Server pings are off everywhere (``--ws-ping-interval 0``), so no server pays for them.

The servers (P: a free port; pipeparse picks its own)::

    python -m pipeparse.cli serve echo --interface asgi --loop {trio,asyncio,uvloop} \\
        --ws-ping-interval 0 --port 0
    python -m uvicorn pipeparse.servers.apps:echo --http httptools --loop uvloop \\
        --ws {websockets,wsproto} --ws-ping-interval 0 --host 127.0.0.1 --port P

Run it as ``python -m pipeparse.clients.crosscheck.ws_echo [--connections 16] [--size 64]
[--seconds 5] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from pipeparse.clients.bench.peers import ServerSpec, running_servers
from pipeparse.clients.bench.procs import available_cpus, can_pin, split_cpus

__all__ = ["CONTENDERS", "Contender", "echo_rate", "main", "masked_frame"]

_MASK = b"\x37\xfa\x21\x3d"
_WARM_UP = 1.0


@dataclass(frozen=True)
class Contender:
    label: str
    spec: ServerSpec
    needs: tuple[str, ...] = ()  # modules it needs (skipped when missing)


_OFF = ("--ws-ping-interval", "0")
CONTENDERS = (
    Contender("pipeparse/trio", ServerSpec("pipeparse", "asgi", "echo", _OFF)),
    Contender(
        "pipeparse/asyncio", ServerSpec("pipeparse", "asgi", "echo", ("--loop", "asyncio", *_OFF))
    ),
    Contender(
        "pipeparse/uvloop",
        ServerSpec("pipeparse", "asgi", "echo", ("--loop", "uvloop", *_OFF)),
        ("uvloop",),
    ),
    Contender(
        "uvicorn/websockets",
        ServerSpec("uvicorn", "asgi", "echo", ("--ws", "websockets", *_OFF)),
        ("uvicorn", "websockets"),
    ),
    Contender(
        "uvicorn/wsproto",
        ServerSpec("uvicorn", "asgi", "echo", ("--ws", "wsproto", *_OFF)),
        ("uvicorn", "wsproto"),
    ),
)
BASELINE = "uvicorn/websockets"


def masked_frame(payload: bytes) -> bytes:
    """One final binary frame from a client (masked, RFC 6455 §5.2), payload up to 64 KiB."""
    n = len(payload)
    if n < 126:
        head = bytes([0x82, 0x80 | n])
    elif n < 65536:
        head = bytes([0x82, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        raise ValueError("payloads up to 64 KiB")
    masked = bytes(b ^ _MASK[i % 4] for i, b in enumerate(payload))
    return head + _MASK + masked


def _echo_length(size: int) -> int:
    """Bytes of the server's (unmasked) frame echoing `size` bytes."""
    return size + (2 if size < 126 else 4)


class _EchoClient(asyncio.Protocol):
    def __init__(self, host: str, path: str, frame: bytes, echo_length: int) -> None:
        self.frame = frame
        self.echo_length = echo_length
        key = base64.b64encode(os.urandom(16)).decode()
        self.handshake = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.head = b""
        self.open = asyncio.get_running_loop().create_future()
        self.pending = 0  # echo bytes received toward the next whole message
        self.count = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.handshake)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if not self.open.done():
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.head.startswith(b"HTTP/1.1 101"):
                self.open.set_exception(RuntimeError(f"handshake refused: {self.head[:80]!r}"))
                return
            self.open.set_result(None)
            data = self.head[end + 4 :]
            assert self.transport is not None
            self.transport.write(self.frame)
        self.pending += len(data)
        if self.pending >= self.echo_length:
            done, self.pending = divmod(self.pending, self.echo_length)
            self.count += done
            assert self.transport is not None
            self.transport.write(self.frame)  # (one in flight: `done` is 1)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.open.done():
            self.open.set_exception(ConnectionError(f"closed during the handshake: {exc}"))


async def _measure(
    host: str, port: int, connections: int, size: int, seconds: float, warm_up: float
) -> float:
    loop = asyncio.get_running_loop()
    frame = masked_frame(b"x" * size)
    clients = []
    for _ in range(connections):
        _, client = await loop.create_connection(
            lambda: _EchoClient(f"{host}:{port}", "/", frame, _echo_length(size)), host, port
        )
        clients.append(client)
    try:
        await asyncio.wait_for(asyncio.gather(*(c.open for c in clients)), 10)
        await asyncio.sleep(warm_up)
        before = sum(c.count for c in clients)
        start = time.perf_counter()
        await asyncio.sleep(seconds)
        done = sum(c.count for c in clients) - before
        elapsed = time.perf_counter() - start
    finally:
        for client in clients:
            if client.transport is not None:
                client.transport.close()
    if done == 0:
        raise RuntimeError("no message was echoed")
    return done / elapsed


def echo_rate(
    host: str, port: int, connections: int, size: int, seconds: float, warm_up: float = _WARM_UP
) -> float:
    """Messages echoed per second by the server at host:port (see the module comment)."""
    factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_measure(host, port, connections, size, seconds, warm_up))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipeparse.clients.crosscheck.ws_echo",
        description="WebSocket echo throughput: pipeparse against uvicorn.",
    )
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--size", type=int, default=64, help="message bytes (default: 64)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="contender labels to run (default: all)")
    args = parser.parse_args(argv)
    if args.connections < 1 or args.rounds < 1 or args.seconds <= 0 or not 0 < args.size < 65536:
        parser.error("connections and rounds >= 1, seconds > 0, 0 < size < 65536")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    contenders = [
        c
        for c in CONTENDERS
        if (not args.only or c.label in args.only)
        and all(importlib.util.find_spec(m) is not None for m in c.needs)
    ]
    client_cpus, server_cpus = split_cpus(available_cpus()) if can_pin() else (None, None)
    if client_cpus:
        os.sched_setaffinity(0, client_cpus)
    rates: dict[str, list[float]] = {c.label: [] for c in contenders}
    for round_no in range(args.rounds):
        shift = round_no % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            with running_servers([contender.spec], server_cpus) as started:
                server = started[contender.spec]
                try:
                    rate = echo_rate(
                        "127.0.0.1", server.port, args.connections, args.size, args.seconds
                    )
                except (OSError, RuntimeError, TimeoutError) as exc:
                    print(f"round {round_no + 1} {contender.label}: failed: {exc}")
                    continue
            rates[contender.label].append(rate)
            print(f"round {round_no + 1} {contender.label}: {rate:,.0f} msg/s", flush=True)
    base = statistics.median(rates[BASELINE]) if rates.get(BASELINE) else None
    print(
        f"\nWebSocket echo, {args.connections} connections, {args.size} B messages, "
        f"median of {args.rounds} rounds (client CPU {client_cpus}, server CPU {server_cpus})"
    )
    for label, values in rates.items():
        if not values:
            print(f"  {label:20} no clean run")
            continue
        median = statistics.median(values)
        ratio = f"  {median / base:.2f}x {BASELINE}" if base else ""
        print(f"  {label:20} {median:>10,.0f} msg/s{ratio}")
    return 0



if __name__ == "__main__":
    sys.exit(main())
