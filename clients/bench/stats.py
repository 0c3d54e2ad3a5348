"""Pure helpers for the benchmark: medians of repeated runs and the summaries built from them.

Strategy: every figure the bench reports is the median of repeated, side-by-side runs, so the
logic that turns a list of runs into one row lives here, free of I/O, and is tested on its own.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["Row", "median", "median_of", "reduction_pct", "safe_ratio"]

Row = dict[str, Any]  # one row of a section's results (a JSON object in results.json)


def median(values: Iterable[float]) -> float:
    """The median of `values` (the mean of the middle two for an even count).

    Raises `ValueError` for no values: a figure from no runs is a bug, never a zero.
    """
    data = list(values)
    if not data:
        raise ValueError("median of no values")
    return float(statistics.median(data))


def median_of(runs: Sequence[Mapping[str, Any]], key: str) -> float:
    """The median of ``run[key]`` over `runs`."""
    return median(float(run[key]) for run in runs)


def reduction_pct(baseline: float, improved: float) -> float:
    """How much `improved` cuts `baseline`, in percent (negative: it costs more)."""
    if baseline <= 0:
        raise ValueError(f"baseline must be positive, got {baseline}")
    return 100.0 * (baseline - improved) / baseline


def safe_ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator``, or None when the denominator is not positive."""
    if denominator <= 0:
        return None
    return numerator / denominator
