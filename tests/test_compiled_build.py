"""The optional compiled build (setup.py, ``PIPEPARSE_MYPYC=1``): the core and the trio driver
compile with mypyc, add no top-level name but its ``pipeparse__mypyc`` library, and the core's
and the drivers' tests pass against it. Built in a copy of the repository, so the working tree
stays pure Python (a compiled module would shadow its source). Skipped where nothing can compile
C."""

from __future__ import annotations

import ast
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The tests of what the build compiles (the buffer, framing, rendering, ordering, the
# connection protocol, the trio driver), and of both drivers and the trio engine over it, with
# apps as users write them, on real sockets too.
SUITE = [
    "tests/test_buffer.py",
    "tests/test_index.py",
    "tests/test_head.py",
    "tests/test_body.py",
    "tests/test_response.py",
    "tests/test_serialize.py",
    "tests/test_ordered.py",
    "tests/test_gather.py",
    "tests/test_connection.py",
    "tests/test_connection_instant.py",
    "tests/test_connection_timers.py",
    "tests/test_smuggling.py",
    "tests/test_engine_native.py",
    "tests/test_engine_memory.py",
    "tests/test_engine_pipeparse.py",
    "tests/test_trio_timers.py",
    "tests/test_trio_readiness.py",
    "tests/test_large_responses.py",
    "tests/test_asyncio_driver.py",
    "tests/test_starlette.py",
    "tests/test_fastapi.py",
    "tests/test_handlers.py",
    "tests/test_native_records.py",
    "tests/test_sink.py",
    "tests/test_trio_clock.py",
]


def can_compile() -> bool:
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    mypyc = importlib.util.find_spec("mypyc") is not None
    return mypyc and headers.exists() and shutil.which(compiler) is not None


@pytest.mark.skipif(not can_compile(), reason="no C compiler, Python headers or mypyc")
@pytest.mark.timeout(900)
def test_the_compiled_core_passes_the_core_and_driver_tests(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    skip = shutil.ignore_patterns("*.so", "__pycache__", "build")
    for folder in ("pipeparse", "servers", "clients", "tests"):
        shutil.copytree(ROOT / folder, copy / folder, symlinks=True, ignore=skip)
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, copy / name)
    env = {**os.environ, "PIPEPARSE_MYPYC": "1", "PYTHONPATH": str(copy)}

    def run(*args: str, timeout: float) -> str:
        done = subprocess.run(
            [sys.executable, *args], cwd=copy, env=env, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip
        output = done.stdout + done.stderr
        assert done.returncode == 0, output[-6000:]
        return output

    run("setup.py", "-q", "build_ext", "--inplace", "--parallel", "2", timeout=600)
    top_level = {p.name.split(".")[0] for p in copy.glob("*.so")}
    assert top_level == {"pipeparse__mypyc"}, top_level  # (its shared library)
    for module in ("pipeparse._connection", "pipeparse.servers.trio_driver"):
        found = run("-c", f"import {module} as m; print(m.__file__)", timeout=60).strip()
        assert found.startswith(str(copy / module.replace(".", "/"))), found
        assert found.endswith(".so"), found
    run("-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *SUITE, timeout=800)


def _compiled_modules() -> list[Path]:
    """The files setup.py's `COMPILED` lists (read from its source: importing it would build)."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "COMPILED":
            return [ROOT / path for path in ast.literal_eval(node.value)]
    raise AssertionError("setup.py has no COMPILED list")


def _awaits_in_finally(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Try | ast.TryStar):
            for statement in node.finalbody:
                lines += [n.lineno for n in ast.walk(statement) if isinstance(n, ast.Await)]
    return lines


def test_no_compiled_coroutine_awaits_in_a_finally_block() -> None:
    """mypyc (2.4) compiles an await in a finally block so that the exception the block
    re-raises stays in `sys.exc_info()`; a later bare raise in the task raised it again (an
    ASGI app's error escaped the driver). Compiled modules use ``except BaseException:``."""
    modules = _compiled_modules()
    assert any(path.name == "trio_driver.py" for path in modules)
    found = {
        str(path.relative_to(ROOT)): lines
        for path in modules
        if (lines := _awaits_in_finally(ast.parse(path.read_text())))
    }
    assert found == {}
