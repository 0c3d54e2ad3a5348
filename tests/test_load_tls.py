"""`pipeparse load` over TLS (https:// URLs, --cacert, -k/--insecure) and over a Unix socket
(--unix-socket), against the pipeparse server on real sockets."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

import pipeparse
from pipeparse.cli import main as cli_main
from pipeparse.clients.load.client import CannotConnect, LoadConfig, run_load
from pipeparse.clients.load.request import parse_url
from pipeparse.servers.listen import Server
from tests.test_tls import Certs, certs_fixture  # noqa: F401  (the `certs` fixture)


@asynccontextmanager
async def serving(app: str, **settings: Any) -> AsyncIterator[Server]:
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(partial(pipeparse.serve, app, **settings))
        try:
            yield server
        finally:
            server.shutdown()


def _tls(certs: Certs) -> dict[str, Any]:
    return {"port": 0, "ssl_certfile": certs.certfile, "ssl_keyfile": certs.keyfile}


def test_https_urls_parse() -> None:
    t = parse_url("https://example.test/a")
    assert (t.port, t.authority, t.tls) == (443, "example.test", True)
    t = parse_url("https://example.test:8443/")
    assert (t.port, t.authority, t.tls) == (8443, "example.test:8443", True)
    assert not parse_url("http://example.test/").tls


@pytest.mark.parametrize("mode", ["window", "batch"])
async def test_pipelined_load_over_tls_verifies(certs: Certs, mode: str) -> None:
    async with serving("echo", **_tls(certs)) as server:
        config = LoadConfig(
            url=f"https://127.0.0.1:{server.port}/echo",
            connections=2,
            depth=16,
            duration=None,
            requests=400,
            mode=mode,
            method="POST",
            body=b"x" * 100,
            verify=True,
            cacert=certs.ca_file,
        )
        result = await run_load(config)
    assert result.requests == 400
    assert result.error_total == 0, result.errors


async def test_an_untrusted_certificate_cannot_connect_unless_insecure(certs: Certs) -> None:
    async with serving("plaintext", **_tls(certs)) as server:
        url = f"https://127.0.0.1:{server.port}/plaintext"
        with pytest.raises(CannotConnect, match="certificate verify failed"):
            await run_load(LoadConfig(url=url, duration=None, requests=10, timeout=5))
        result = await run_load(
            LoadConfig(url=url, connections=1, duration=None, requests=64, insecure=True)
        )
    assert result.requests == 64 and result.error_total == 0


async def test_load_over_a_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    async with serving("plaintext", uds=path):
        config = LoadConfig(
            url="http://localhost/plaintext",
            connections=2,
            duration=None,
            requests=200,
            unix_socket=path,
        )
        result = await run_load(config)
    assert result.requests == 200 and result.error_total == 0


def test_the_cli_drives_an_https_server(certs: Certs, capsys: pytest.CaptureFixture[str]) -> None:
    async def main() -> int:
        async with serving("plaintext", **_tls(certs)) as server:
            url = f"https://127.0.0.1:{server.port}/plaintext"
            argv = ["load", url, "-n", "100", "-c", "1", "--cacert", certs.ca_file, "--json"]
            return await trio.to_thread.run_sync(cli_main, argv)

    assert trio.run(main) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["requests"] == 100, report
