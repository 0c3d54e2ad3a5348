"""HDR histogram interval logs: `pipeparse load --hdr-log FILE` writes one, `--merge` reads many.

Strategy: the format is HdrHistogram's interval log (version 1.2), written and read with the
`hdrhistogram` package's own `HistogramLogWriter` and `HistogramLogReader`, so other HDR tools
read our logs and we read theirs. A run logs one interval histogram per second of measurement
(values in microseconds, the Interval_Max column in milliseconds), stamped relative to a
``#[BaseTime: ...]`` of the run's start. Interval histograms are the histograms themselves in
HDR's compressed encoding, so adding up the intervals of many logs (runs on many machines) gives
exactly the histogram one client recording everything would have: percentiles merge exactly.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from pathlib import Path

from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader, HistogramLogWriter

from pipeparse.clients.load.result import LoadResult, latency_ms, new_histogram

__all__ = ["format_merged", "merge_hdr_logs", "write_hdr_log"]

_US_PER_MS = 1000.0


def write_hdr_log(result: LoadResult, path: Path, title: str) -> None:
    """Write `result`'s per-second histograms to `path` as an HDR interval log."""
    # Whole milliseconds: BaseTime is printed from the start in milliseconds divided back, and
    # for some starts that round trip printed one digit below StartTime; the reader then
    # skipped the first interval as starting before the log (an empty log for a short run).
    start = math.floor(result.start_epoch * 1000) / 1000
    with open(path, "w", encoding="ascii") as f:
        writer = HistogramLogWriter(f)
        writer.output_comment(f"[{title}]")
        writer.output_log_format_version()
        # (The writer's own output_start_time is broken in hdrhistogram 0.10: written by hand.)
        when = datetime.datetime.fromtimestamp(start, datetime.UTC).isoformat(" ")
        # The same digits as the BaseTime line: the reader skips an interval that starts before
        # StartTime, and a rounding difference would make the first one do so.
        writer.output_comment(f"[StartTime: {start:f} (seconds since epoch), {when}]")
        writer.output_base_time(start * 1000.0)
        writer.output_comment("[Values in microseconds; Interval_Max in milliseconds]")
        writer.output_legend()
        for i, h in enumerate(result.intervals):
            if h is None or h.get_total_count() == 0:
                continue
            length = min(1.0, result.duration_s - i) if result.duration_s > i else 1.0
            h.set_start_time_stamp((start + i) * 1000.0)
            h.set_end_time_stamp((start + i + length) * 1000.0)
            writer.base_time = start * 1000.0
            writer.output_interval_histogram(h, max_value_unit_ratio=_US_PER_MS)


def merge_hdr_logs(paths: Sequence[Path]) -> HdrHistogram:
    """The sum of every interval histogram in the logs; raises ValueError naming a bad file."""
    total = new_histogram()
    for path in paths:
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
        reader = HistogramLogReader(str(path), new_histogram())
        intervals = 0
        try:
            while reader.add_next_interval_histogram(total) is not None:
                intervals += 1
        except Exception as e:  # the decoder raises many types (binascii, zlib, its own)
            raise ValueError(
                f"{path}: not an HDR histogram log ({type(e).__name__}: {e})"
            ) from None
        finally:
            reader.close()
        if not intervals:
            raise ValueError(f"{path}: no interval histograms (not an HDR histogram log?)")
    return total


def format_merged(paths: Sequence[Path], h: HdrHistogram) -> str:
    """The merged percentiles, as `pipeparse load --merge` prints them."""
    lat = latency_ms(h)
    names = (("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p999", "p99.9"), ("max", "max"))
    lines = [
        f"pipeparse load --merge: {len(paths)} logs",
        f"  requests     {h.get_total_count():,}",
        "  latency ms   " + "   ".join(f"{shown} {lat[k]:.3f}" for k, shown in names),
    ]
    return "\n".join(lines)
