"""The optional compiled build: ``PIPEPARSE_MYPYC=1 pip install .`` compiles the core's
per-request path (`COMPILED`) with mypyc, which halves its CPU time per request;
``PIPEPARSE_MYPYC=auto`` compiles where a C compiler and Python's headers are found, and says
so when it does not. Without it (the default) pipeparse is pure Python. Keep compiled builds
out of editable installs: a compiled module shadows its source, so edits would not take
effect. Everything else about the package is in pyproject.toml."""

import os
import shutil
import sys
import sysconfig
from pathlib import Path

from setuptools import setup

# Framing, the receive buffer, dispatch, ordering, rendering and the connection protocol; and
# the per-request path around it: the actions, the request and response records, the trio
# driver, the response sink and the ASGI adapter. Not here: modules whose classes interpreted
# code subclasses without a `mypyc_attr(allow_interpreted_subclasses=True)`.
COMPILED = [
    "pipeparse/_abnf.py",
    "pipeparse/actions.py",
    "pipeparse/_answering.py",
    "pipeparse/_body.py",
    "pipeparse/_buffer.py",
    "pipeparse/_connection.py",
    "pipeparse/_exchange.py",
    "pipeparse/_fields.py",
    "pipeparse/_gather.py",
    "pipeparse/_head.py",
    "pipeparse/_index.py",
    "pipeparse/_memo.py",
    "pipeparse/_native.py",
    "pipeparse/_ordered.py",
    "pipeparse/_reading.py",
    "pipeparse/_response.py",
    "pipeparse/_serialize.py",
    "pipeparse/_state.py",
    "pipeparse/servers/asgi.py",
    "pipeparse/servers/asyncio_driver.py",
    "pipeparse/servers/sink.py",
    "pipeparse/servers/trio_clock.py",
    "pipeparse/servers/trio_driver.py",
    "pipeparse/servers/trio_handlers.py",
    "pipeparse/servers/trio_readiness.py",
    "pipeparse/servers/trio_reading.py",
    "pipeparse/servers/trio_writing.py",
]


def can_compile() -> bool:
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    return headers.exists() and shutil.which(compiler) is not None


MODE = os.environ.get("PIPEPARSE_MYPYC", "0")
if MODE not in ("0", "1", "auto", ""):
    sys.exit(f"PIPEPARSE_MYPYC must be 0, 1 or auto, not {MODE!r}")
COMPILE = MODE == "1" or (MODE == "auto" and can_compile())
if MODE == "auto" and not COMPILE:
    print("pipeparse: no C compiler or Python headers: pure Python build", file=sys.stderr)


def ext_modules() -> list[object]:
    if not COMPILE:
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:  # a PEP 517 build's first pass: mypy comes as a setup requirement
        return []
    # The build environment has none of the runtime dependencies, which only modules outside
    # `COMPILED` import: checked as the type checker's run checks them, not here. (The shared
    # library is the top-level module pipeparse__mypyc.)
    options = ["--no-warn-unused-configs", "--ignore-missing-imports", "--follow-imports=silent"]
    return mypycify([*options, *COMPILED], group_name="pipeparse")


setup(ext_modules=ext_modules(), setup_requires=["mypy>=1.11"] if COMPILE else [])
