"""What the asyncio loops do not serve yet is refused with a clear error, not ignored."""

from __future__ import annotations

from typing import Any

import pytest

from pipeparse.servers.config import ServerConfig


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"uds": "/tmp/x.sock"}, "uds is not implemented on --loop asyncio"),
        ({"fd": 3}, "fd is not implemented on --loop asyncio"),
        ({"ssl_certfile": "cert.pem"}, "ssl_certfile is not implemented on --loop asyncio"),
        ({"proxy_headers": True}, "proxy headers and root_path are trio-only"),
        ({"root_path": "/api"}, "proxy headers and root_path are trio-only"),
    ],
)
def test_trio_only_settings_are_refused_on_asyncio(setting: dict[str, Any], message: str) -> None:
    ServerConfig(**setting)  # fine on trio
    with pytest.raises(ValueError, match=message):
        ServerConfig(loop="asyncio", **setting)
