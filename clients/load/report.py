"""What `pipeparse load` shows a person: a live progress line on a terminal, a final summary.

Strategy: the summary is plain text built here (`format_summary`, testable, the same on a
terminal and in a pipe). The live line is drawn with rich on standard error, and only when
standard error is a terminal; it is transient, so it leaves nothing behind. With no terminal
there is no live output at all.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import IO, TYPE_CHECKING

from pipeparse.clients.load.client import LoadConfig, Progress
from pipeparse.clients.load.result import LoadResult

if TYPE_CHECKING:
    from rich.live import Live

__all__ = ["LiveProgress", "format_summary"]


def _count(n: float) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.2f}M"
    if n >= 10_000:
        return f"{n / 1_000:.1f}k"
    return f"{n:,.0f}"


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def format_summary(config: LoadConfig, result: LoadResult) -> str:
    """The human summary of a run, as lines of plain text."""
    how = f"rate {config.rate:g}/s" if config.rate else config.mode
    lines = [
        f"pipeparse load {config.url}",
        f"  {result.connections} connections, depth {result.depth}, {how}"
        + (f", {config.processes} processes" if config.processes > 1 else ""),
    ]
    if config.mix:
        weights = ", ".join(f"{m.method} {m.target} x{m.weight}" for m in config.mix[:4])
        more = f", ... ({len(config.mix)} requests)" if len(config.mix) > 4 else ""
        lines.append(f"  mix          {weights}{more}")
    d = result.duration_s
    lines.append(f"  requests     {result.requests:,} in {d:.2f} s   {result.rps:,.1f} req/s")
    lines.append(
        f"  received     {_size(result.bytes_received)}   "
        f"{_size(result.bytes_received / d if d > 0 else 0)}/s"
    )
    lat = result.latency_ms()
    if lat["p50"] is None:
        lines.append("  latency      (no request completed)")
    else:
        names = (("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p999", "p99.9"), ("max", "max"))
        lines.append("  latency ms   " + "   ".join(f"{shown} {lat[k]:.3f}" for k, shown in names))
    wrong = {k: v for k, v in result.errors.items() if v}
    if wrong:
        lines.append("  errors       " + ", ".join(f"{k} {v:,}" for k, v in wrong.items()))
    else:
        lines.append("  errors       none")
    if "verify" in result.errors:
        mismatched = result.errors["verify"]
        lines.append(
            f"  verify       {result.requests - mismatched:,} of {result.requests:,} responses "
            "match the requests sent" + (f" ({mismatched:,} do not)" if mismatched else "")
        )
    unanswered = result.errors.get("unanswered", 0)
    if unanswered:
        lines.append(
            f"  sent         {result.sent:,} = {result.requests:,} answered"
            f" + {unanswered:,} unanswered"
        )
    if result.timeline_requests:
        per_second = " ".join(_count(n) for n in result.timeline_requests[:60])
        more = " ..." if len(result.timeline_requests) > 60 else ""
        lines.append(f"  per second   {per_second}{more}")
    return "\n".join(lines)


class LiveProgress:
    """A transient progress line on standard error while a run goes, if it is a terminal.

    Use as a context manager; pass `update` as the run's progress callback.
    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._live: Live | None = None
        self._last: tuple[float, int] | None = None
        self._rate = 0.0
        self.enabled = bool(getattr(self._stream, "isatty", lambda: False)())

    def __enter__(self) -> LiveProgress:
        if self.enabled:
            from rich.console import Console
            from rich.live import Live

            live = Live(
                "",
                console=Console(file=self._stream, highlight=False),
                transient=True,
                auto_refresh=False,
            )
            live.start()
            self._live = live
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def line(self, p: Progress) -> str:
        """The progress line for `p` (the rate is measured between calls)."""
        if self._last is not None and p.elapsed > self._last[0]:
            self._rate = (p.requests - self._last[1]) / (p.elapsed - self._last[0])
        if self._last is None or p.requests < self._last[1]:
            self._rate = 0.0
        self._last = (p.elapsed, p.requests)
        if p.target_requests:
            where = f"sent {p.sent:,}/{p.target_requests:,}"
        elif p.planned:
            where = f"{min(p.elapsed, p.planned):.1f}/{p.planned:g} s"
        else:
            where = f"{p.elapsed:.1f} s"
        return (
            f"{p.phase:<7} {where}   requests {p.requests:,} ({_count(self._rate)}/s)   "
            f"errors {p.errors:,}   received {_size(p.bytes_received)}"
        )

    def update(self, p: Progress) -> None:
        line = self.line(p)
        if self._live is not None:
            from rich.text import Text

            self._live.update(Text(line), refresh=True)
