"""Process plumbing for the benchmark: CPU pinning, the facts about the machine, and how a
Python process of its own is started (`python_module`).

Strategy: on a small machine the load generator and the server compete for the same cores, so a
section can pin the measuring process to one set of CPUs and its peer process to another. Pinning
uses `os.sched_setaffinity` (Linux); where that is missing it is a no-op and the bench says so
in `machine_info()["pinning"]`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import sys
from collections.abc import Iterator

__all__ = ["available_cpus", "can_pin", "machine_info", "pinned", "python_module", "split_cpus"]


def python_module(module: str) -> list[str]:
    """``python -P -m module``: ``-P`` keeps the working directory off ``sys.path``, so a bench
    run from a clone of the repository serves the installed pipeparse (the compiled build, if
    installed) rather than the source tree it stands in."""
    return [sys.executable, "-P", "-m", module]


def can_pin() -> bool:
    return hasattr(os, "sched_setaffinity") and hasattr(os, "sched_getaffinity")


def available_cpus() -> list[int]:
    """The CPUs this process may run on, sorted."""
    if can_pin():
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def split_cpus(cpus: list[int]) -> tuple[set[int], set[int]]:
    """Split `cpus` into (measuring side, peer side): the first CPU, and the rest.

    With a single CPU both sides share it.
    """
    if not cpus:
        raise ValueError("no CPUs to split")
    if len(cpus) == 1:
        return {cpus[0]}, {cpus[0]}
    return {cpus[0]}, set(cpus[1:])


@contextlib.contextmanager
def pinned(cpus: set[int] | None) -> Iterator[None]:
    """Run the body with this process pinned to `cpus` (None or no pinning support: as is)."""
    if cpus is None or not can_pin():
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, object]:
    """What the figures came from: CPU, cores, OS, Python, date."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cpus_usable": len(available_cpus()),
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "executable": sys.executable,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "pinning": can_pin(),
    }
