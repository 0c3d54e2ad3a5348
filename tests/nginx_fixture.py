"""nginx for the tests: installed from the OS packages when missing (as root), else a clear skip.

Strategy: `pipeparse.clients.crosscheck.nginx` does the work (install, a throwaway config, a
listening socket
handed to nginx so nothing waits for it to start). This module only turns "cannot have nginx"
into a pytest skip that says why, once per session.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from pipeparse.clients.crosscheck.nginx import NginxServer, ensure_nginx, nginx_server

__all__ = ["nginx_or_skip"]

_checked: list[str | None] = []


def _nginx_binary() -> str | None:
    if not _checked:
        _checked.append(ensure_nginx())
    return _checked[0]


@contextmanager
def nginx_or_skip(**kwargs: Any) -> Iterator[NginxServer]:
    """`nginx_server(**kwargs)`, or skip the test with the reason nginx cannot be had."""
    binary = _nginx_binary()
    if binary is None:
        if os.geteuid() != 0:
            why = "not root, so it cannot be installed"
        elif shutil.which("apt-get") is None:
            why = "there is no apt-get to install it with"
        else:
            why = "'apt-get install -y nginx' failed"
        pytest.skip(f"nginx is not on PATH and {why}")
    with nginx_server(nginx=binary, **kwargs) as server:
        yield server
