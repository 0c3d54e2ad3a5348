"""wrk and `pipeparse load` side by side against one URL: the median of several runs of each.

Strategy: the two clients take turns (wrk, pipeparse, wrk, ...) so that a noisy machine hurts
both alike, each run a fresh process with the same connections, depth and duration. wrk
pipelines through `wrk_pipeline.lua` (batches of DEPTH); `pipeparse load` runs in the given
mode (``batch`` is wrk's scheme; ``window`` its own default). The ratio of the medians is
printed, and with ``--json`` every figure.

With ``--plaintext``, `pipeparse serve plaintext` is started on a free port (more server flags
with ``--serve-arg``) and loaded at ``/plaintext``. With ``--nginx``, a one-worker nginx (OS
package, installed when missing and root) serves a small file; a last run by request count then
checks that the client's count agrees with nginx's access log. wrk itself comes from the OS
packages (``apt-get install -y wrk`` when missing and root).

    python -m pipeparse.clients.crosscheck.wrk http://127.0.0.1:8000/plaintext -c 64 -d 16 --runs 5
    python -m pipeparse.clients.crosscheck.wrk --nginx -c 64 -d 16 --runs 5
    python -m pipeparse.clients.crosscheck.wrk --plaintext -c 64 -d 16 --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeparse.clients.bench.procs import python_module
from pipeparse.clients.crosscheck.nginx import ensure_nginx, nginx_server

__all__ = ["WRK_PIPELINE_LUA", "WRK_RPS", "WRK_TOTAL", "ensure_wrk", "main"]

WRK_PIPELINE_LUA = Path(__file__).with_name("wrk_pipeline.lua")
WRK_RPS = re.compile(r"Requests/sec:\s+([0-9.]+)")
WRK_TOTAL = re.compile(r"([0-9]+) requests in")


def ensure_wrk() -> str | None:
    found = shutil.which("wrk")
    if found or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return found
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "wrk"]
    if subprocess.run(cmd, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        subprocess.run(cmd, env=env, capture_output=True, check=False)
    return shutil.which("wrk")


_LISTENING = re.compile(r"listening on (http://\S+)")


@contextmanager
def pipeparse_server(app: str, args: list[str]) -> Iterator[str]:
    """Run `pipeparse serve APP --port 0 ARGS`; yields its base URL (read from the line it
    prints once it listens), and stops it (SIGTERM) at the end."""
    cmd = [*python_module("pipeparse.cli"), "serve", app, "--port", "0", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            m = _LISTENING.search(line)
            if m:
                break
        else:
            raise RuntimeError(f"pipeparse serve exited with {proc.wait()} before listening")
        yield m.group(1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_wrk(wrk: str, url: str, a: argparse.Namespace) -> dict[str, Any]:
    cmd = [wrk, f"-t{a.threads}", f"-c{a.connections}", f"-d{a.duration:g}s"]
    cmd += ["-s", str(WRK_PIPELINE_LUA), url, "--", str(a.depth)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=a.duration + 60)
    m = WRK_RPS.search(out.stdout)
    if m is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out.stdout}\n{out.stderr}")
    total = WRK_TOTAL.search(out.stdout)
    return {"rps": float(m.group(1)), "requests": int(total.group(1)) if total else None}


def run_pipeparse(url: str, a: argparse.Namespace, requests: int | None = None) -> dict[str, Any]:
    cmd = [*python_module("pipeparse.cli"), "load", url, "--json"]
    cmd += ["-c", str(a.connections), "-d", str(a.depth), "--mode", a.mode]
    cmd += ["--processes", str(a.processes)]
    cmd += ["-n", str(requests)] if requests else ["--duration", f"{a.duration:g}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=a.duration + 120)
    if out.returncode not in (0, 1):
        raise RuntimeError(f"pipeparse load failed:\n{out.stderr}")
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def compare(url: str, wrk: str, a: argparse.Namespace) -> dict[str, Any]:
    wrk_rps: list[float] = []
    pp_rps: list[float] = []
    pp_errors: list[int] = []
    for i in range(a.runs):
        w = run_wrk(wrk, url, a)
        p = run_pipeparse(url, a)
        wrk_rps.append(w["rps"])
        pp_rps.append(p["rps"])
        pp_errors.append(sum(p["errors"].values()))
        if not a.json:
            print(
                f"run {i + 1}/{a.runs}: wrk {w['rps']:>10,.0f} req/s   "
                f"pipeparse load {p['rps']:>10,.0f} req/s   (errors {pp_errors[-1]})",
                flush=True,
            )
    wm, pm = statistics.median(wrk_rps), statistics.median(pp_rps)
    return {
        "url": url,
        "connections": a.connections,
        "depth": a.depth,
        "duration_s": a.duration,
        "mode": a.mode,
        "wrk_threads": a.threads,
        "processes": a.processes,
        "wrk_rps": wrk_rps,
        "pipeparse_rps": pp_rps,
        "pipeparse_errors": pp_errors,
        "wrk_median": wm,
        "pipeparse_median": pm,
        "ratio": pm / wm if wm else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", help="the URL to load (not with --nginx)")
    parser.add_argument("--nginx", action="store_true", help="start a one-worker nginx")
    parser.add_argument(
        "--plaintext", action="store_true", help="start `pipeparse serve plaintext`"
    )
    parser.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="with --plaintext: a flag for `pipeparse serve` (repeatable)",
    )
    parser.add_argument("-c", "--connections", type=int, default=64)
    parser.add_argument("-d", "--depth", type=int, default=16)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--mode", choices=("window", "batch"), default="window")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default: 1)")
    parser.add_argument("--processes", type=int, default=1, help="pipeparse load processes")
    parser.add_argument(
        "--count-check",
        type=int,
        default=20000,
        metavar="N",
        help="with --nginx: requests in the count check (0: skip)",
    )
    parser.add_argument("--json", action="store_true")
    a = parser.parse_args(argv)
    if a.runs < 1 or a.duration <= 0:
        parser.error("--runs and --duration must be positive")
    if (a.url is not None) + a.nginx + a.plaintext != 1:
        parser.error("give one of: a URL, --nginx, --plaintext")
    wrk = ensure_wrk()
    if wrk is None:
        print("compare_wrk: wrk is not installed and cannot be installed here", file=sys.stderr)
        return 2
    if a.url:
        report = compare(a.url, wrk, a)
    elif a.plaintext:
        with pipeparse_server("plaintext", a.serve_arg) as base:
            report = compare(base + "/plaintext", wrk, a)
        report["server"] = "pipeparse serve plaintext " + " ".join(a.serve_arg)
    else:
        if ensure_nginx() is None:
            print("compare_wrk: nginx is not installed and cannot be installed", file=sys.stderr)
            return 2
        files = {"index.html": b"hello world"}
        with nginx_server(files) as srv:
            report = compare(srv.url + "/index.html", wrk, a)
        report["server"] = "nginx, 1 worker"
        if a.count_check:
            with nginx_server(files, access_log=True) as srv:
                p = run_pipeparse(srv.url + "/index.html", a, requests=a.count_check)
                srv.stop()
                report["count_check"] = {
                    "sent": a.count_check,
                    "client_requests": p["requests"],
                    "client_unanswered": p["errors"]["unanswered"],
                    "server_answered": srv.answered(),
                }
    if a.json:
        print(json.dumps(report))
    else:
        print(
            f"median: wrk {report['wrk_median']:,.0f} req/s, pipeparse load "
            f"{report['pipeparse_median']:,.0f} req/s: ratio {report['ratio']:.2f}"
        )
        if "count_check" in report:
            c = report["count_check"]
            print(
                f"count check: pipeparse load counted {c['client_requests']:,} answered "
                f"(+{c['client_unanswered']} unanswered) of {c['sent']:,}; "
                f"nginx logged {c['server_answered']:,}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
