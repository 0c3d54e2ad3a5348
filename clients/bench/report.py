"""How the bench reports: progress while it runs, a table per section, and `results.json`.

Strategy: progress goes to a `rich` progress bar when stdout is a terminal and rich is
importable, otherwise to one plain line per step on stderr, so a piped run stays readable.
Tables are printed as Markdown (pipes), the same text the README's Results section carries, and
need no dependency. `results.json` holds the machine, the run's settings, the rows of every
section, why any section was skipped, and the findings read off the rows.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

__all__ = ["PlainProgress", "Progress", "format_table", "make_progress", "write_results"]


class Progress:
    """The interface a section reports through: one task per section, advanced per step."""

    def start(self, section: str, total: int) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def step(self, label: str) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def finish(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def emit(self, text: str) -> None:
        """Print `text` (a table, a note) to stdout without breaking the progress display."""
        print(text, flush=True)

    def close(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class PlainProgress(Progress):
    """One line per step: ``bench: seek [3/28] n=2 size=1000 (1.2 s)``."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._section = ""
        self._total = 0
        self._done = 0
        self._t0 = 0.0

    def _write(self, text: str) -> None:
        stream = self._stream if self._stream is not None else sys.stderr
        print(text, file=stream, flush=True)

    def start(self, section: str, total: int) -> None:
        self._section, self._total, self._done = section, total, 0
        self._t0 = time.monotonic()
        self._write(f"bench: {section}: {total} steps")

    def step(self, label: str) -> None:
        self._done += 1
        elapsed = time.monotonic() - self._t0
        self._write(
            f"bench: {self._section} [{self._done}/{self._total}] {label} ({elapsed:.1f} s)"
        )

    def finish(self) -> None:
        self._write(f"bench: {self._section} done in {time.monotonic() - self._t0:.1f} s")

    def close(self) -> None:
        pass


class _RichProgress(Progress):
    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import Progress as RichBar

        self._bar = RichBar(
            TextColumn("[bold]{task.fields[section]:<9}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            transient=False,
        )
        self._bar.start()
        self._task: Any = None

    def start(self, section: str, total: int) -> None:
        self._task = self._bar.add_task("", total=total, section=section)

    def step(self, label: str) -> None:
        self._bar.update(self._task, advance=1, description=label)

    def finish(self) -> None:
        self._bar.update(self._task, description="done")

    def emit(self, text: str) -> None:
        self._bar.console.print(text, markup=False, highlight=False)

    def close(self) -> None:
        self._bar.stop()


def make_progress(stream: TextIO | None = None) -> Progress:
    """A rich progress bar when stdout is a terminal and rich is installed, else plain lines."""
    out = stream if stream is not None else sys.stdout
    if out.isatty():
        try:
            return _RichProgress()
        except ImportError:
            pass
    return PlainProgress()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and abs(value) >= 10000:
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.4g}"
    return str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """`rows` as a Markdown table (columns: those given, else the first row's keys)."""
    if not rows:
        return "(no rows)"
    cols = list(columns) if columns is not None else list(rows[0].keys())
    cells = [[_cell(row.get(c)) for c in cols] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    numeric = [
        all(isinstance(row.get(c), int | float) or row.get(c) is None for row in rows) for c in cols
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "| " + " | ".join(parts) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if num else ("-" * (w + 2))
            for w, num in zip(widths, numeric, strict=True)
        )
        + "|"
    )
    return "\n".join([line(cols), rule, *(line(r) for r in cells)])


def write_results(
    path: Path,
    machine: Mapping[str, Any],
    sections: Mapping[str, list[dict[str, Any]]],
    settings: Mapping[str, Any],
    skipped: Mapping[str, str],
    warnings: Sequence[str] = (),
    findings: Sequence[Mapping[str, Any]] = (),
) -> None:
    """Write `results.json`: ``{"machine", "settings", "sections", "skipped", "warnings",
    "findings"}``; `sections` maps each section's name to its rows, `findings` are the
    run's headline lines (`bench_findings`)."""
    doc = {
        "machine": dict(machine),
        "settings": dict(settings),
        "sections": {name: list(rows) for name, rows in sections.items()},
        "skipped": dict(skipped),
        "warnings": list(warnings),
        "findings": [dict(f) for f in findings],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
