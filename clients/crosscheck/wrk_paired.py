"""The wrk cross-check's targets measured in pairs: a target's two servers at once, on one CPU.

On a shared machine a server's rate drifts by tens of percent within minutes, so two servers
measured one after the other (`wrk_servers`) need many rounds before a gap of a few percent
shows. Here both servers of a target run at the same time, pinned to the same single CPU, each
loaded by its own wrk (both wrk pinned to the other CPUs) for the same seconds. Both are
CPU-bound on that CPU and the scheduler gives each an equal share, so the ratio of their rates
is the inverse ratio of their CPU cost per request, and the machine's drift, which slows both
alike, cancels. (The same server against itself gives 0.99 to 1.03 on the 2-CPU machine of the
README's figures.)

What it does not measure: absolute rates (each server has half a CPU), and anything that
depends on time per connection (timers re-armed per idle gap) weighs more than it does alone.
Nor the ``sleep`` matrix: a server bound by its handlers' sleeps (h11, uvicorn there) is not
CPU-bound, so the shares are not equal and the ratio means nothing; its targets are left out.
The standalone run (`wrk_servers`) stays the figure of record; this one says how large a gap is.

Run it as ``python -m pipeparse.clients.crosscheck.wrk_paired [--rounds 3] [--duration 5]
[--json] [--only MATRIX ...]``: every target (`wrk_matrix.TARGETS`) of the chosen matrices whose
two servers can run here (but the sleep matrix's), round after round, the pair's start order
alternating.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pipeparse.clients.bench.procs import pinned
from pipeparse.clients.bench.report import format_table
from pipeparse.clients.crosscheck.wrk import ensure_wrk
from pipeparse.clients.crosscheck.wrk_matrix import (
    MATRICES,
    TARGETS,
    Contender,
    Matrix,
    Target,
    unavailable,
    wrk_command,
)
from pipeparse.clients.crosscheck.wrk_report import WrkRun
from pipeparse.clients.crosscheck.wrk_servers import (
    WRK_GRACE,
    cpu_sides,
    parse_args,
    probe,
    serving,
    wrk_overtime,
    wrk_result,
)

__all__ = [
    "CPU_BOUND",
    "PairMeasure",
    "format_pairs",
    "main",
    "measure_pairs_with",
    "run_pairs",
    "run_wrk_together",
]

PairMeasure = Callable[[Matrix, Contender, Contender], tuple[WrkRun, WrkRun]]
CPU_BOUND = ("plaintext", "plaintext-depth1")  # the matrices whose servers are all CPU-bound


def run_wrk_together(
    wrk: str, urls: Sequence[str], connections: int, duration: int, depth: int,
    cpus: set[int] | None,
) -> list[WrkRun]:  # fmt: skip
    """One wrk per URL, all at once (pinned to `cpus`); their parsed reports, in order."""
    with pinned(cpus):  # (the children inherit the affinity: no preexec_fn)
        procs = [
            subprocess.Popen(
                wrk_command(wrk, url, connections, duration, depth),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for url in urls
        ]
    runs: list[WrkRun] = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=duration + WRK_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            runs.append(wrk_overtime(duration))
            continue
        runs.append(wrk_result(out, err, proc.returncode))
    return runs


def measure_pairs_with(
    wrk: str, duration: int, wrk_cpus: set[int] | None, server_cpu: set[int] | None
) -> PairMeasure:
    """A `PairMeasure`: start both servers on `server_cpu`, probe both, load both at once."""

    def measure(matrix: Matrix, first: Contender, second: Contender) -> tuple[WrkRun, WrkRun]:
        try:
            with serving(first, server_cpu) as base1, serving(second, server_cpu) as base2:
                urls = [base1 + matrix.path, base2 + matrix.path]
                problems = [probe(url) for url in urls]
                if any(problems):
                    runs = [WrkRun(error=p or "the other server failed") for p in problems]
                    return runs[0], runs[1]
                a, b = run_wrk_together(
                    wrk, urls, matrix.connections, duration, matrix.depth, wrk_cpus
                )
                return a, b
        except (RuntimeError, OSError) as exc:
            failed = WrkRun(error=f"server failed: {exc}")
            return failed, failed

    return measure


def _contender(matrix: Matrix, label: str) -> Contender:
    return next(c for c in matrix.contenders if c.label == label)


def run_pairs(
    targets: Sequence[Target],
    rounds: int,
    measure: PairMeasure,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Measure every target's pair once per round (rounds in turn; within a pair, the server
    started and loaded first alternates); each target's per-round ratios and their median."""
    matrices = {m.name: m for m in MATRICES}
    out: list[dict[str, Any]] = [
        {
            "target": t.name,
            "goal": t.goal,
            "numerator_rps": [],
            "denominator_rps": [],
            "per_round": [],
        }
        for t in targets
    ]
    for r in range(rounds):
        for target, entry in zip(targets, out, strict=True):
            matrix = matrices[target.matrix]
            num = _contender(matrix, target.numerator)
            den = _contender(matrix, target.denominator)
            if r % 2 == 0:
                num_run, den_run = measure(matrix, num, den)
            else:
                den_run, num_run = measure(matrix, den, num)
            ratio = None
            if num_run.clean and den_run.clean and num_run.rps and den_run.rps:
                ratio = num_run.rps / den_run.rps
            entry["numerator_rps"].append(num_run.rps if num_run.clean else None)
            entry["denominator_rps"].append(den_run.rps if den_run.clean else None)
            entry["per_round"].append(ratio)
            if progress is not None:
                trouble = "; ".join(p for p in (num_run.problems(), den_run.problems()) if p)
                figure = "-" if ratio is None else f"{ratio:.3f}"
                progress(f"round {r + 1}/{rounds} {target.name:<58} {figure}  {trouble}".rstrip())
    for entry in out:
        ratios = [x for x in entry["per_round"] if x is not None]
        entry["ratio"] = statistics.median(ratios) if ratios else None
        entry["status"] = (
            "unknown" if entry["ratio"] is None
            else "met" if entry["ratio"] >= entry["goal"] else "not met"
        )  # fmt: skip
    return out


def format_pairs(results: Sequence[dict[str, Any]]) -> str:
    rows = []
    for t in results:
        row: dict[str, Any] = {"target (paired)": t["target"], "goal": f">= {t['goal']:g}"}
        row["median ratio"] = "-" if t["ratio"] is None else f"{t['ratio']:.2f}"
        for i, value in enumerate(t["per_round"]):
            row[f"round {i + 1}"] = "-" if value is None else f"{value:.3f}"
        row["status"] = t["status"]
        rows.append(row)
    return format_table(rows)


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv, prog="python -m pipeparse.clients.crosscheck.wrk_paired")
    wrk = ensure_wrk()
    if wrk is None:
        print("wrk_paired: wrk is not installed and cannot be installed here", file=sys.stderr)
        return 2
    matrices = {m.name: m for m in MATRICES if m.name in a.only}
    targets = [
        t
        for t in TARGETS
        if t.matrix in matrices
        and t.matrix in CPU_BOUND
        and not any(
            unavailable(_contender(matrices[t.matrix], label))
            for label in (t.numerator, t.denominator)
        )
    ]
    wrk_cpus, server_cpus, pinning = cpu_sides()
    server_cpu = {min(server_cpus)} if server_cpus else None  # both servers on one CPU
    progress = None if a.json else (lambda line: print(line, flush=True))
    results = run_pairs(
        targets, a.rounds, measure_pairs_with(wrk, a.duration, wrk_cpus, server_cpu), progress
    )
    if a.json:
        print(json.dumps({"pinning": pinning, "server_cpu": sorted(server_cpu or ()),
                          "rounds": a.rounds, "duration_s": a.duration, "targets": results},
                         indent=2))  # fmt: skip
    else:
        print()
        print(format_pairs(results))
        where = f"both servers on CPU {sorted(server_cpu)}" if server_cpu else "no pinning"
        print(f"\npinning: {where}; {pinning}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
