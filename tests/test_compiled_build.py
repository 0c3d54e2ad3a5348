"""The optional compiled build (setup.py, ``PIPEPARSE_MYPYC=1``): the core compiles with mypyc,
adds no top-level name but its ``pipeparse__mypyc`` library, and the core's and the drivers'
tests pass against it. Built in a copy of the repository, so the working tree stays pure
Python (a compiled module would shadow its source). Skipped where nothing can compile C."""

from __future__ import annotations

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
# connection protocol), and of both drivers and the trio engine over it, on real sockets too.
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
    "tests/test_asyncio_driver.py",
    "tests/test_starlette.py",
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
    compiled = run("-c", "import pipeparse._connection as m; print(m.__file__)", timeout=60)
    assert compiled.strip().startswith(str(copy / "pipeparse" / "_connection.")), compiled
    assert compiled.strip().endswith(".so"), compiled
    run("-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *SUITE, timeout=800)
