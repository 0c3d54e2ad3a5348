"""The wrk cross-check's figures: wrk's output read (`WrkRun`), the order of the measurements,
the medians over clean runs, the targets evaluated, and the report (JSON-ready and as text).

A run whose output reports ``Non-2xx or 3xx responses`` or ``Socket errors``, or that failed,
is not clean and stays out of the median: a server that answers errors must not look fast.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeparse.clients.bench.procs import machine_info
from pipeparse.clients.bench.report import format_table
from pipeparse.clients.bench.server import rotated
from pipeparse.clients.bench.stats import median, safe_ratio
from pipeparse.clients.crosscheck.wrk import WRK_RPS, WRK_TOTAL
from pipeparse.clients.crosscheck.wrk_matrix import (
    TARGETS,
    WRK_THREADS,
    Contender,
    Matrix,
    describe,
)

__all__ = [
    "Results",
    "WrkRun",
    "build_report",
    "evaluate_targets",
    "format_report",
    "medians",
    "parse_wrk_output",
    "round_order",
]

_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(
    r"Socket errors:\s+connect (\d+), read (\d+), write (\d+), timeout (\d+)"
)
_SOCKET_KINDS = ("connect", "read", "write", "timeout")


# -- wrk's output ----------------------------------------------------------------------------


@dataclass(slots=True)
class WrkRun:
    """One wrk run. `error` is set when it produced no figure (then `rps` is None)."""

    rps: float | None = None
    requests: int | None = None
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    @property
    def clean(self) -> bool:
        """A figure, with no error responses and no socket errors."""
        return (
            self.error is None
            and self.rps is not None
            and self.non_2xx == 0
            and not any(self.socket_errors.values())
        )

    def problems(self) -> str:
        """What is wrong with this run, in words ('' when clean)."""
        parts = []
        if self.error:
            parts.append(self.error)
        if self.non_2xx:
            parts.append(f"{self.non_2xx} non-2xx/3xx responses")
        errors = {k: v for k, v in self.socket_errors.items() if v}
        if errors:
            parts.append("socket errors " + ", ".join(f"{k} {v}" for k, v in errors.items()))
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rps": self.rps,
            "requests": self.requests,
            "non_2xx": self.non_2xx,
            "socket_errors": dict(self.socket_errors),
            "error": self.error,
            "clean": self.clean,
        }


def parse_wrk_output(stdout: str) -> WrkRun:
    """A `WrkRun` from wrk's report; `error` set when there is no Requests/sec line."""
    run = WrkRun()
    m = WRK_RPS.search(stdout)
    if m is None:
        tail = stdout.strip().splitlines()[-3:]
        run.error = "no Requests/sec in wrk's output" + (f": {' | '.join(tail)}" if tail else "")
    else:
        run.rps = float(m.group(1))
    total = WRK_TOTAL.search(stdout)
    run.requests = int(total.group(1)) if total else None
    non = _NON_2XX.search(stdout)
    run.non_2xx = int(non.group(1)) if non else 0
    sock = _SOCKET_ERRORS.search(stdout)
    run.socket_errors = {
        kind: int(sock.group(i + 1)) if sock else 0 for i, kind in enumerate(_SOCKET_KINDS)
    }
    return run


# -- order and figures -------------------------------------------------------------------------


def round_order(matrices: Sequence[Matrix], rounds: int) -> list[tuple[int, Matrix, Contender]]:
    """Every measurement in the order taken: round by round; within a round, matrix by matrix,
    each matrix's servers rotated by the round's index (round 0 in the listed order)."""
    return [
        (r, matrix, contender)
        for r in range(rounds)
        for matrix in matrices
        for contender in rotated(matrix.contenders, r)
    ]


Results = Mapping[str, Mapping[str, Sequence[WrkRun]]]  # matrix -> label -> runs, by round


def medians(results: Results) -> dict[str, dict[str, float | None]]:
    """matrix -> label -> median rps over the clean runs (None: no clean run)."""
    out: dict[str, dict[str, float | None]] = {}
    for matrix, by_label in results.items():
        out[matrix] = {}
        for label, runs in by_label.items():
            clean = [r.rps for r in runs if r.clean and r.rps is not None]
            out[matrix][label] = median(clean) if clean else None
    return out


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None:
        return None
    return safe_ratio(numerator, denominator)


def evaluate_targets(
    results: Results, skipped: Mapping[str, Mapping[str, str]] | None = None
) -> list[dict[str, Any]]:
    """Each target whose matrix ran: the ratio of medians, the per-round ratios, the status.

    Status: ``met`` / ``not met``; ``unknown`` when the baseline has no figure (skipped, or
    no clean run); ``not met`` when the pipeparse side has none (its runs failed or erred).
    """
    skipped = skipped or {}
    meds = medians(results)
    out: list[dict[str, Any]] = []
    for target in TARGETS:
        if target.matrix not in results:
            continue
        by_label = results[target.matrix]
        num_runs = by_label.get(target.numerator, ())
        den_runs = by_label.get(target.denominator, ())
        per_round = [
            _ratio(n.rps if n.clean else None, d.rps if d.clean else None)
            for n, d in zip(num_runs, den_runs, strict=False)
        ]
        num = meds[target.matrix].get(target.numerator)
        den = meds[target.matrix].get(target.denominator)
        ratio = _ratio(num, den)
        note = ""
        if num is None:
            status = "not met"
            note = f"{target.numerator} has no clean run"
        elif den is None:
            status = "unknown"
            note = skipped.get(target.matrix, {}).get(target.denominator) or (
                f"{target.denominator} has no clean run"
            )
        else:
            status = "met" if ratio is not None and ratio >= target.goal else "not met"
        out.append(
            {
                "target": target.name,
                "matrix": target.matrix,
                "numerator": target.numerator,
                "denominator": target.denominator,
                "goal": target.goal,
                "ratio": ratio,
                "per_round": per_round,
                "status": status,
                "note": note,
            }
        )
    return out


# -- report ------------------------------------------------------------------------------------


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_report(report: Mapping[str, Any]) -> str:
    """The tables and targets, as text."""
    lines: list[str] = []
    rounds = report["settings"]["rounds"]
    for name, matrix in report["matrices"].items():
        lines.append(
            f"\n## {name}: wrk -t{WRK_THREADS} -c{matrix['connections']} -d"
            f"{report['settings']['duration_s']}s, depth {matrix['depth']}, {matrix['path']}"
        )
        rows: list[dict[str, Any]] = []
        notes: list[str] = []
        for label, server in matrix["servers"].items():
            row: dict[str, Any] = {"server": label, "loop": server.get("loop", "-")}
            if server.get("skipped"):
                notes.append(f"{label}: {server['skipped']}")
                rows.append(row | {f"round {i + 1}": "-" for i in range(rounds)} | {"median": "-"})
                continue
            for i, run in enumerate(server["runs"]):
                cell = "-" if run["rps"] is None else f"{run['rps']:,.0f}"
                if not run["clean"]:
                    cell += " !"
                    problems = WrkRun(
                        rps=run["rps"],
                        requests=run["requests"],
                        non_2xx=run["non_2xx"],
                        socket_errors=run["socket_errors"],
                        error=run["error"],
                    ).problems()
                    notes.append(f"{label}, round {i + 1}: {problems} (not in the median)")
                row[f"round {i + 1}"] = cell
            med = server["median"]
            row["median"] = "-" if med is None else f"{med:,.0f}"
            rows.append(row)
        lines.append(format_table(rows))
        lines.extend(f"- {n}" for n in notes)
        for label, server in matrix["servers"].items():
            lines.append(f"  {label}: {server['command']}")
    lines.append("\n## targets")
    rows = []
    for t in report["targets"]:
        row = {
            "target": t["target"],
            "goal": f">= {t['goal']:g}",
            "median ratio": _fmt_ratio(t["ratio"]),
        }
        for i, value in enumerate(t["per_round"]):
            row[f"round {i + 1}"] = _fmt_ratio(value)
        row["status"] = t["status"] + (f" ({t['note']})" if t["note"] else "")
        rows.append(row)
    lines.append(format_table(rows))
    lines.append(f"\npinning: {report['pinning']}")
    return "\n".join(lines).lstrip("\n")


def build_report(
    matrices: Sequence[Matrix],
    results: Results,
    skipped: Mapping[str, Mapping[str, str]],
    settings: Mapping[str, Any],
    pinning: str,
) -> dict[str, Any]:
    meds = medians(results)
    out_matrices: dict[str, Any] = {}
    for m in matrices:
        servers: dict[str, Any] = {}
        for c in m.contenders:
            entry: dict[str, Any] = {"command": describe(c), "loop": c.loop}
            reason = skipped.get(m.name, {}).get(c.label)
            if reason:
                entry |= {"skipped": reason, "runs": [], "median": None}
            else:
                entry |= {
                    "runs": [r.as_dict() for r in results[m.name][c.label]],
                    "median": meds[m.name][c.label],
                }
            servers[c.label] = entry
        out_matrices[m.name] = {
            "path": m.path,
            "connections": m.connections,
            "depth": m.depth,
            "servers": servers,
        }
    return {
        "settings": dict(settings),
        "pinning": pinning,
        "machine": machine_info(),
        "matrices": out_matrices,
        "targets": evaluate_targets(results, skipped),
    }
