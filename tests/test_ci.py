"""`.ci/run` runs exactly the README's test command (the second ```sh block of "Quick start")."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_test_command() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", quick_start, re.DOTALL)
    assert len(blocks) >= 2, "Quick start must hold the main job and the test command"
    return str(blocks[1].strip())


def ci_command() -> str:
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    return [ln for ln in lines if ln.strip() and not ln.startswith("#")][-1].strip()


def test_ci_runs_the_readmes_test_command() -> None:
    venv, _, command = readme_test_command().partition(" && . .venv/bin/activate && ")
    assert venv == "python3 -m venv .venv"  # .ci/run makes its own virtualenv instead
    assert ci_command() == command


def test_the_test_command_lints_type_checks_and_tests() -> None:
    steps = readme_test_command().split(" && ")
    assert steps[-3:] == ["ruff check .", "mypy", "python -m pytest"]
