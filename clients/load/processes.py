"""`pipeparse load --processes P`: one run split over P processes, its results merged exactly.

Strategy: each process (spawned) runs `run_load` on its share of the connections, rate and
request count; all open their connections, then start together through a barrier. Progress comes
home through a shared array of counters, results through a queue in their wire form (histograms
encoded), and `LoadResult.merge` adds them up. A process that fails is reported; one that could
not connect at all raises `CannotConnect` here as it is.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import trio

from pipeparse.clients.load.client import PROGRESS_EVERY, CannotConnect, run_load
from pipeparse.clients.load.config import LoadConfig, Progress, ProgressCallback
from pipeparse.clients.load.result import LoadResult

__all__ = ["run_processes"]


def _shares(config: LoadConfig) -> list[LoadConfig]:
    """Split connections, rate and requests over the processes (in proportion)."""
    p = config.processes
    conns = [config.connections // p + (i < config.connections % p) for i in range(p)]
    requests: list[int | None] = [None] * p
    if config.requests is not None:
        if config.requests < p:
            raise ValueError(f"{config.requests} requests cannot be shared by {p} processes")
        base = [max(1, config.requests * c // config.connections) for c in conns]
        for i in range(config.requests - sum(base)):
            base[i % p] += 1
        while sum(base) > config.requests:  # the minimum of 1 each overshot: take it back
            base[base.index(max(base))] -= 1
        requests = list(base)
    return [
        replace(
            config,
            connections=conns[i],
            requests=requests[i],
            rate=config.rate * conns[i] / config.connections if config.rate else None,
            processes=1,
        )
        for i in range(p)
    ]


_SLOTS = 5  # per process in the shared progress array: phase, requests, sent, errors, bytes
_PHASES = ("connect", "warmup", "load", "drain", "done")


def _child(
    share: LoadConfig,
    number: int,
    barrier: Any,
    counters: Any,
    results: Any,
) -> None:
    """A process's part of the run (spawned): run, then send the result home."""
    base = number * _SLOTS

    def publish(p: Progress) -> None:
        counters[base] = _PHASES.index(p.phase)
        counters[base + 1] = p.requests
        counters[base + 2] = p.sent
        counters[base + 3] = p.errors
        counters[base + 4] = p.bytes_received

    async def gate() -> None:
        await trio.to_thread.run_sync(barrier.wait)

    try:
        result = trio.run(_gated, share, publish, gate)
        counters[base] = _PHASES.index("done")
        results.put((number, "ok", result.to_wire()))
    except CannotConnect as e:  # the parent raises it as it is
        results.put((number, "connect", str(e)))
    except BaseException as e:  # the parent reports it
        results.put((number, "error", f"{type(e).__name__}: {e}"))


async def _gated(
    share: LoadConfig, publish: ProgressCallback, gate: Callable[[], Awaitable[None]]
) -> LoadResult:
    return await run_load(share, publish, start_gate=gate)


def run_processes(config: LoadConfig, progress: ProgressCallback | None) -> LoadResult:
    shares = _shares(config)
    p = len(shares)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(p)
    counters = ctx.Array("q", p * _SLOTS, lock=False)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_child, args=(shares[i], i, barrier, counters, results), daemon=True)
        for i in range(p)
    ]
    for proc in procs:
        proc.start()
    wires: dict[int, dict[str, Any]] = {}
    started: float | None = None
    clock = time.monotonic
    try:
        while len(wires) < p:
            try:
                number, status, payload = results.get(timeout=PROGRESS_EVERY)
            except queue.Empty:
                dead = [x for x in procs if x.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(
                        f"a load process died (exit code {dead[0].exitcode})"
                    ) from None
            else:
                if status == "connect":
                    raise CannotConnect(payload)
                if status != "ok":
                    raise RuntimeError(f"load process {number} failed: {payload}")
                wires[number] = payload
            if progress is not None:
                phases = [counters[i * _SLOTS] for i in range(p)]
                phase = _PHASES[min(phases)]
                if phase in ("load", "drain") and started is None:
                    started = clock()
                sums = [sum(counters[i * _SLOTS + j] for i in range(p)) for j in range(1, 5)]
                progress(
                    Progress(
                        phase=phase if phase != "done" else "drain",
                        elapsed=clock() - started if started is not None else 0.0,
                        planned=config.duration,
                        requests=sums[0],
                        sent=sums[1],
                        errors=sums[2],
                        bytes_received=sums[3],
                        target_requests=config.requests,
                    )
                )
    finally:
        if len(wires) < p:
            barrier.abort()
        for proc in procs:
            proc.join(timeout=config.timeout + 5 if len(wires) == p else 1)
            if proc.is_alive():
                proc.terminate()
                proc.join()
    return LoadResult.merge([wires[i] for i in range(p)], config.depth)
