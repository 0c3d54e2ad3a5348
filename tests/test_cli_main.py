"""The `pipeparse` command itself: ``--version``, ``python -m pipeparse``, and what importing the
package pulls in (never Locust or gevent: gevent's monkey-patching must stay out of trio code).

Each test runs a real interpreter, bounded by a timeout that only a hang would reach.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from importlib.metadata import version

import pipeparse

SAFETY = 60.0  # seconds


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=SAFETY, check=False
    )


def test_version_matches_the_installed_distribution() -> None:
    assert pipeparse.__version__ == version("pipeparse")
    for argv in (["-m", "pipeparse", "--version"], ["-m", "pipeparse.cli", "--version"]):
        done = run(*argv)
        assert (done.returncode, done.stdout, done.stderr) == (
            0,
            f"pipeparse {version('pipeparse')}\n",
            "",
        )


def test_python_dash_m_pipeparse_is_the_command() -> None:
    done = run("-m", "pipeparse", "--help")
    assert done.returncode == 0
    assert "usage: pipeparse" in done.stdout and "serve" in done.stdout and "load" in done.stdout
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = run("-m", "pipeparse", "load", f"http://127.0.0.1:{port}/", "--duration", "600")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (
        f"pipeparse load: error: cannot connect to 127.0.0.1:{port}: connection refused\n"
    )


def test_importing_pipeparse_never_imports_locust_or_gevent() -> None:
    code = (
        "import sys, pipeparse, pipeparse.cli, pipeparse.clients.load.cli\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('locust', 'gevent')))"
    )
    done = run("-c", code)
    assert (done.returncode, done.stdout) == (0, "[]\n"), done.stderr
