"""What a load run measures: counters by kind, an HDR latency histogram, a per-second timeline.

Strategy: the engine records into one `LoadStats` per process and phase, in bulk: requests sent
together complete together, so a read that completes k of them records one value with count k
(`record_latency`). Latencies are integer microseconds in an HDR histogram (`hdrhistogram`, 3
significant figures, 1 us to 1 hour), kept per second of the run as well (`intervals`, for
HdrHistogram's interval log, `load_hdr`): the pending latencies are handed to the histograms
when a new second begins. A `LoadResult` is the frozen outcome; results of several processes
merge exactly, the histograms through their encoded form (`encode` / `decode_and_add`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

__all__ = ["ERROR_KINDS", "LoadResult", "LoadStats", "latency_ms", "new_histogram"]

ERROR_KINDS = ("connect", "read", "write", "timeout", "status", "framing", "unanswered")
_LOWEST_US = 1
_HIGHEST_US = 3_600_000_000  # one hour
_SIGNIFICANT_FIGURES = 3
_PENDING_MAX = 100_000  # distinct latencies held before a flush
_PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9))


def new_histogram() -> HdrHistogram:
    """An empty latency histogram: microseconds, 1 us to 1 hour, 3 significant figures."""
    return HdrHistogram(_LOWEST_US, _HIGHEST_US, _SIGNIFICANT_FIGURES)


def _exact_bits() -> int:
    """Values below 2**this are recorded exactly; above, the histogram keeps this many leading
    bits of a value (HDR's sub-bucket layout: 2048 sub-buckets for 3 significant figures)."""
    h = new_histogram()
    assert h.unit_magnitude == 0
    return int(h.sub_bucket_half_count_magnitude) + 1


_EXACT_BITS = _exact_bits()


class LoadStats:
    """The live counters of one process in one phase (warmup or measurement).

    Attributes:
        start: the phase's start (trio clock); the timeline counts seconds from it.
        sent: requests written to a socket.
        requests: responses received complete (status errors included).
        bytes_received: bytes read from sockets.
        errors: counts by kind (`ERROR_KINDS`, plus ``verify`` when verifying).
        histogram: per-request latency, microseconds.
        intervals: the same, one histogram per second of the timeline (None: no latency).
        tl_requests, tl_errors, tl_bytes: the per-second timeline.
    """

    __slots__ = (
        "_pending",
        "bytes_received",
        "errors",
        "histogram",
        "intervals",
        "requests",
        "sent",
        "start",
        "tl_bytes",
        "tl_errors",
        "tl_requests",
    )

    def __init__(self, start: float, verify: bool = False) -> None:
        self.start = start
        self.sent = 0
        self.requests = 0
        self.bytes_received = 0
        self.errors: dict[str, int] = dict.fromkeys(ERROR_KINDS, 0)
        if verify:
            self.errors["verify"] = 0
        self.histogram = new_histogram()
        self.intervals: list[HdrHistogram | None] = []
        self._pending: dict[int, int] = {}  # latency (us, rounded) -> count, not yet recorded
        self.tl_requests: list[int] = []
        self.tl_errors: list[int] = []
        self.tl_bytes: list[int] = []

    def _second(self, now: float) -> int:
        i = int(now - self.start)
        if i < 0:
            i = 0
        tl = self.tl_requests
        if len(tl) <= i:
            self._new_second(i)
        return i

    def _new_second(self, i: int) -> None:
        if self._pending:
            self.flush()  # what is pending was recorded in the second that ends
        tl = self.tl_requests
        while len(tl) <= i:
            tl.append(0)
            self.tl_errors.append(0)
            self.tl_bytes.append(0)

    def received(self, now: float, n: int) -> None:
        """`n` bytes were read at `now`."""
        self.bytes_received += n
        self.tl_bytes[self._second(now)] += n

    def completed(self, now: float, n: int) -> None:
        """`n` responses completed at `now`."""
        self.requests += n
        self.tl_requests[self._second(now)] += n

    def error(self, now: float, kind: str, n: int = 1) -> None:
        """`n` errors of `kind` happened at `now`."""
        self.errors[kind] += n
        self.tl_errors[self._second(now)] += n

    def record_latency(self, seconds: float, count: int = 1) -> None:
        """Record `count` requests that each took `seconds` (clamped to the histogram range).

        Cheap: the value is rounded down to its histogram bucket's lowest value (the rounding
        the histogram does itself, so nothing changes) and counted in a dict; `flush` hands the
        distinct values to the histogram (its `record_value` is slow Python).
        """
        us = int(seconds * 1_000_000)
        if us < _LOWEST_US:
            us = _LOWEST_US
        elif us > _HIGHEST_US:
            us = _HIGHEST_US
        shift = us.bit_length() - _EXACT_BITS
        if shift > 0:
            us = us >> shift << shift
        pending = self._pending
        pending[us] = pending.get(us, 0) + count
        if len(pending) > _PENDING_MAX:
            self.flush()

    def flush(self) -> None:
        """Record the pending latencies in the histogram and the current second's interval.

        Callers record a latency after the ``received``/``completed`` call of the same moment,
        so pending latencies always belong to the last second of the timeline.
        """
        if not self._pending:
            return
        i = max(len(self.tl_requests) - 1, 0)
        intervals = self.intervals
        while len(intervals) <= i:
            intervals.append(None)
        interval = intervals[i]
        if interval is None:
            interval = intervals[i] = new_histogram()
        record = self.histogram.record_value
        record_interval = interval.record_value
        for us, count in self._pending.items():
            record(us, count)
            record_interval(us, count)
        self._pending.clear()

    @property
    def error_total(self) -> int:
        return sum(self.errors.values())

    def result(self, end: float, connections: int, depth: int) -> LoadResult:
        self.flush()
        return LoadResult(
            requests=self.requests,
            sent=self.sent,
            errors=dict(self.errors),
            duration_s=max(end - self.start, 0.0),
            bytes_received=self.bytes_received,
            connections=connections,
            depth=depth,
            histogram=self.histogram,
            intervals=list(self.intervals),
            start_epoch=time.time() - max(end - self.start, 0.0),
            timeline_requests=list(self.tl_requests),
            timeline_errors=list(self.tl_errors),
            timeline_bytes=list(self.tl_bytes),
        )


@dataclass
class LoadResult:
    """The outcome of a load run.

    `requests` counts responses received complete; every request sent is either one of them or
    counted in ``errors["unanswered"]`` (``sent == requests + errors["unanswered"]``).
    """

    requests: int
    sent: int
    errors: dict[str, int]
    duration_s: float
    bytes_received: int
    connections: int
    depth: int
    histogram: HdrHistogram = field(default_factory=new_histogram, repr=False)
    intervals: list[HdrHistogram | None] = field(default_factory=list, repr=False)
    start_epoch: float = 0.0  # when the measurement began, seconds since the epoch
    timeline_requests: list[int] = field(default_factory=list)
    timeline_errors: list[int] = field(default_factory=list)
    timeline_bytes: list[int] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def error_total(self) -> int:
        return sum(self.errors.values())

    def latency_ms(self) -> dict[str, float | None]:
        """p50, p90, p99, p99.9 and max, milliseconds; None for each when nothing completed."""
        return latency_ms(self.histogram)

    def timeline(self) -> list[dict[str, int]]:
        """One entry per second of the run: ``t`` (seconds from the start), ``requests``
        completed, ``errors`` and ``bytes_received`` in that second."""
        return [
            {"t": i, "requests": r, "errors": e, "bytes_received": b}
            for i, (r, e, b) in enumerate(
                zip(self.timeline_requests, self.timeline_errors, self.timeline_bytes, strict=True)
            )
        ]

    def to_json(self) -> dict[str, Any]:
        """Exactly the keys of ``pipeparse load --json``."""
        return {
            "requests": self.requests,
            "errors": dict(self.errors),
            "duration_s": round(self.duration_s, 6),
            "rps": round(self.rps, 3),
            "latency_ms": self.latency_ms(),
            "bytes_received": self.bytes_received,
            "connections": self.connections,
            "depth": self.depth,
            "timeline": self.timeline(),
        }

    # -- crossing a process boundary -------------------------------------------------------

    def to_wire(self) -> dict[str, Any]:
        """A picklable form with the histogram encoded (exact: HDR's own transport format)."""
        return {
            "requests": self.requests,
            "sent": self.sent,
            "errors": dict(self.errors),
            "duration_s": self.duration_s,
            "bytes_received": self.bytes_received,
            "connections": self.connections,
            "depth": self.depth,
            "histogram": _encode(self.histogram),
            "intervals": [_encode(h) for h in self.intervals],
            "start_epoch": self.start_epoch,
            "timeline_requests": self.timeline_requests,
            "timeline_errors": self.timeline_errors,
            "timeline_bytes": self.timeline_bytes,
        }

    @classmethod
    def merge(cls, wires: list[dict[str, Any]], depth: int) -> LoadResult:
        """Merge results of processes that ran side by side (started together)."""
        hist = new_histogram()
        intervals: list[HdrHistogram | None] = []
        errors: dict[str, int] = {}
        for w in wires:
            if w["histogram"]:
                hist.decode_and_add(w["histogram"])
            for i, encoded in enumerate(w["intervals"]):
                while len(intervals) <= i:
                    intervals.append(None)
                if encoded:
                    h = intervals[i]
                    if h is None:
                        h = intervals[i] = new_histogram()
                    h.decode_and_add(encoded)
            for k, v in w["errors"].items():
                errors[k] = errors.get(k, 0) + v
        return cls(
            requests=sum(w["requests"] for w in wires),
            sent=sum(w["sent"] for w in wires),
            errors=errors or dict.fromkeys(ERROR_KINDS, 0),
            duration_s=max((w["duration_s"] for w in wires), default=0.0),
            bytes_received=sum(w["bytes_received"] for w in wires),
            connections=sum(w["connections"] for w in wires),
            depth=depth,
            histogram=hist,
            intervals=intervals,
            start_epoch=min((w["start_epoch"] for w in wires), default=0.0),
            timeline_requests=_sum_lists([w["timeline_requests"] for w in wires]),
            timeline_errors=_sum_lists([w["timeline_errors"] for w in wires]),
            timeline_bytes=_sum_lists([w["timeline_bytes"] for w in wires]),
        )


def latency_ms(h: HdrHistogram) -> dict[str, float | None]:
    """p50, p90, p99, p99.9 and max of a histogram of microseconds, in milliseconds; None for
    each when it is empty."""
    if h.get_total_count() == 0:
        nothing: dict[str, float | None] = {name: None for name, _ in _PERCENTILES}
        return nothing | {"max": None}
    out: dict[str, float | None] = {
        name: h.get_value_at_percentile(p) / 1000.0 for name, p in _PERCENTILES
    }
    out["max"] = h.get_max_value() / 1000.0
    return out


def _encode(h: HdrHistogram | None) -> bytes:
    return h.encode() if h is not None and h.get_total_count() else b""


def _sum_lists(lists: list[list[int]]) -> list[int]:
    out = [0] * max((len(x) for x in lists), default=0)
    for x in lists:
        for i, v in enumerate(x):
            out[i] += v
    return out
