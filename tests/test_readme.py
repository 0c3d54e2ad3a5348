"""The README's Python examples run as written.

Every ```python block of README.md is run on its own, in a fresh namespace, so an example that
uses a name it never defines fails here. A block that cannot run standalone (one that serves
until a signal, say) is marked on the line before its fence with ``<!-- readme-test: skip -->``
(invisible on the rendered page) and is skipped, with that reason.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
SKIP_MARKER = "<!-- readme-test: skip -->"
_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def python_blocks(text: str) -> list[tuple[int, str, bool]]:
    """``(line, code, skipped)`` for every ```python block, `line` where its fence is."""
    blocks = []
    for match in _BLOCK.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        blocks.append((line, match.group(1), before.strip() == SKIP_MARKER))
    return blocks


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def test_the_readme_has_python_examples() -> None:
    assert any(not skipped for _, _, skipped in BLOCKS)


def test_blocks_are_found_and_the_marker_skips() -> None:
    text = "x\n```python\na = 1\n```\n" + SKIP_MARKER + "\n```python\nforever()\n```\n"
    assert python_blocks(text) == [(2, "a = 1\n", False), (6, "forever()\n", True)]


@pytest.mark.parametrize(
    ("line", "code", "skipped"), BLOCKS, ids=[f"README.md:{line}" for line, _, _ in BLOCKS]
)
def test_a_readme_python_block_runs(line: int, code: str, skipped: bool) -> None:
    if skipped:
        pytest.skip(f"marked {SKIP_MARKER} (it cannot run standalone)")
    numbered = "\n" * line + code  # a traceback names the README's own line numbers
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(numbered, str(README), "exec"), {"__name__": "__readme__"})
