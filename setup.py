"""The optional compiled build: ``PIPEPARSE_MYPYC=1 pip install .`` compiles the core's
per-request path (`COMPILED`) with mypyc, which halves its CPU time per request. Without it
(the default) pipeparse is pure Python. Keep compiled builds out of editable installs: a
compiled module shadows its source, so edits would not take effect. Everything else about the
package is in pyproject.toml."""

import os

from setuptools import setup

# Framing, the receive buffer, dispatch, ordering, rendering and the connection protocol. Not
# here: modules whose classes interpreted code subclasses, or whose dataclasses mypyc rejects
# (actions.py), and the public request/response records users may subclass (_native.py).
COMPILED = [
    "pipeparse/_abnf.py",
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
    "pipeparse/_ordered.py",
    "pipeparse/_reading.py",
    "pipeparse/_response.py",
    "pipeparse/_serialize.py",
    "pipeparse/_state.py",
]
COMPILE = os.environ.get("PIPEPARSE_MYPYC", "") not in ("", "0")


def ext_modules() -> list[object]:
    if not COMPILE:
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:  # a PEP 517 build's first pass: mypy comes as a setup requirement
        return []
    # (the shared library is the top-level module pipeparse__mypyc)
    return mypycify(["--no-warn-unused-configs", *COMPILED], group_name="pipeparse")


setup(ext_modules=ext_modules(), setup_requires=["mypy>=1.11"] if COMPILE else [])
