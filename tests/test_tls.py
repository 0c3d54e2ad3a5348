"""TLS over real sockets, certificates from `trustme`: pipelining in one record and split across
many, coalesced responses, scheme https, broken handshakes, and the settings."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

import pipeparse
from pipeparse.servers.config import ServerConfig
from tests.loop_servers import LOOPS, Served, parametrize_engine_loops, parametrize_loops, serving
from tests.server_harness import parse_responses

ENGINES = ("pipeparse", "h11")
SEED = 1405


@dataclass
class Certs:
    certfile: str
    keyfile: str
    ca_file: str
    client: ssl.SSLContext


@pytest.fixture(scope="module", name="certs")
def certs_fixture(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA and a certificate for 127.0.0.1 and localhost, as files, and a client context
    that trusts the CA (tests/test_load_tls.py imports it)."""
    folder = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile, ca_file = folder / "cert.pem", folder / "key.pem", folder / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(certfile), append=True)
    cert.private_key_pem.write_to_path(str(keyfile))
    ca.cert_pem.write_to_path(str(ca_file))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return Certs(str(certfile), str(keyfile), str(ca_file), client)


async def _scheme_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = json.dumps({"scheme": scope["scheme"], "path": scope["path"]}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def tls_server(
    app: object, certs: Certs, loop: str = "trio", **settings: Any
) -> AsyncIterator[Served]:
    settings = {"ssl_certfile": certs.certfile, "ssl_keyfile": certs.keyfile, **settings}
    async with serving(loop, app, **settings) as server:
        yield server


async def _receive_all(stream: trio.abc.ReceiveStream, responses: int = 1) -> bytes:
    """Read until `responses` whole responses arrived (not to EOF: TLS has no half-close, so
    the server lingers up to 2 s for a client that keeps its connection open)."""
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
        with contextlib.suppress(Exception):  # (incomplete so far)
            if len(parse_responses(data)) >= responses:
                break
    return data


def _requests(n: int) -> bytes:
    parts = [f"GET /r{i} HTTP/1.1\r\nHost: t\r\n\r\n".encode() for i in range(n - 1)]
    parts.append(f"GET /r{n - 1} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    return b"".join(parts)


@parametrize_engine_loops
@pytest.mark.parametrize("split", ["one record", "many records"])
async def test_pipelined_requests_over_tls(
    engine: str, loop: str, split: str, certs: Certs
) -> None:
    async with tls_server(_scheme_app, certs, loop, engine=engine) as server:
        assert server.url.startswith("https://127.0.0.1:")
        tcp = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with trio.SSLStream(tcp, certs.client, server_hostname="127.0.0.1") as stream:
            data = _requests(8)
            if split == "one record":
                await stream.send_all(data)
            else:  # each send_all is a record of its own: 1 to 9 bytes each
                rng = random.Random(SEED)
                pos = 0
                while pos < len(data):
                    step = rng.randint(1, 9)
                    await stream.send_all(data[pos : pos + step])
                    pos += step
            responses = parse_responses(await _receive_all(stream, 8))
    assert [r.status for r in responses] == [200] * 8
    assert [json.loads(r.body) for r in responses] == [
        {"scheme": "https", "path": f"/r{i}"} for i in range(8)
    ]


@parametrize_loops
async def test_native_request_scheme_is_https(certs: Certs, loop: str) -> None:
    @pipeparse.native
    async def app(request: pipeparse.HttpRequest) -> pipeparse.Response:
        return pipeparse.Response(request.scheme.encode())

    async with tls_server(app, certs, loop) as server:
        tcp = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with trio.SSLStream(tcp, certs.client, server_hostname="127.0.0.1") as stream:
            await stream.send_all(_requests(2))
            responses = parse_responses(await _receive_all(stream, 2))
    assert [r.body for r in responses] == [b"https", b"https"]


def _records(raw: bytes) -> list[tuple[int, int]]:
    """``(content type, length)`` of each whole TLS record in `raw`."""
    out, pos = [], 0
    while pos + 5 <= len(raw):
        length = int.from_bytes(raw[pos + 3 : pos + 5], "big")
        out.append((raw[pos], length))
        pos += 5 + length
    return out


@parametrize_loops
async def test_pipelined_responses_leave_in_few_records(certs: Certs, loop: str) -> None:
    """16 requests in one record: their 16 responses arrive in far fewer application-data
    records than 16 (the engine writes them coalesced; TLS 1.3 adds its session tickets)."""
    async with tls_server("plaintext", certs, loop) as server:
        sock = trio.socket.socket()
        await sock.connect(("127.0.0.1", server.port))
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = certs.client.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if outgoing.pending:
                    await sock.send(outgoing.read())
                incoming.write(await sock.recv(65536))
        request = b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"
        tls.write(request * 15 + request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        await sock.send(outgoing.read())
        raw = plain = b""
        while plain.count(b"Hello, World!") < 16 and (chunk := await sock.recv(65536)):
            raw += chunk  # (not to EOF: the server lingers for a client that stays open)
            incoming.write(chunk)
            with contextlib.suppress(ssl.SSLZeroReturnError, ssl.SSLWantReadError):
                while piece := tls.read(65536):
                    plain += piece
        sock.close()
    assert len(parse_responses(plain)) == 16
    app_records = [length for kind, length in _records(raw) if kind == 23]
    assert len(app_records) <= 6, app_records  # 16 responses, plus tickets and close_notify


@parametrize_loops
async def test_a_plain_http_client_is_closed_and_the_server_goes_on(
    certs: Certs, loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pipeparse.server")
    async with tls_server("plaintext", certs, loop) as server:
        plain = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with plain:
            await plain.send_all(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n")
            try:
                answer = await _receive_all(plain)
            except trio.BrokenResourceError:  # reset: closed just the same
                answer = b""
        assert b"HTTP/1.1 200" not in answer
        tcp = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with trio.SSLStream(tcp, certs.client, server_hostname="127.0.0.1") as stream:
            await stream.send_all(_requests(1).replace(b"/r0", b"/plaintext"))
            assert (await _receive_all(stream)).endswith(b"Hello, World!")
    failures = [r for r in caplog.records if "TLS handshake" in r.getMessage()]
    if loop == "trio":  # (asyncio's own TLS transport does the handshake: it logs nothing)
        assert len(failures) == 1 and failures[0].levelno == logging.DEBUG
    assert all(r.levelno < logging.WARNING for r in caplog.records if r.name == "pipeparse.server")


@parametrize_loops
async def test_a_silent_handshake_stalls_nobody_and_times_out(certs: Certs, loop: str) -> None:
    async with tls_server("plaintext", certs, loop, ssl_handshake_timeout=0.2) as server:
        silent = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with silent:
            tcp = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with trio.SSLStream(tcp, certs.client, server_hostname="127.0.0.1") as stream:
                await stream.send_all(_requests(1).replace(b"/r0", b"/plaintext"))
                assert (await _receive_all(stream)).endswith(b"Hello, World!")
            assert await silent.receive_some(1) == b""  # closed once its time was up


@parametrize_loops
async def test_a_client_that_does_not_trust_the_certificate_fails_and_the_server_goes_on(
    certs: Certs,
    loop: str,
) -> None:
    async with tls_server("plaintext", certs, loop) as server:
        tcp = await trio.open_tcp_stream("127.0.0.1", server.port)
        stranger = trio.SSLStream(tcp, ssl.create_default_context(), server_hostname="127.0.0.1")
        with pytest.raises(trio.BrokenResourceError):
            await stranger.do_handshake()
        await trio.aclose_forcefully(stranger)
        tcp = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with trio.SSLStream(tcp, certs.client, server_hostname="127.0.0.1") as stream:
            await stream.send_all(_requests(1).replace(b"/r0", b"/plaintext"))
            assert (await _receive_all(stream)).endswith(b"Hello, World!")


async def test_bad_tls_settings_fail_at_start(certs: Certs, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="need ssl_certfile"):
        ServerConfig(ssl_keyfile=certs.keyfile)
    with pytest.raises(ValueError, match="ssl_cert_reqs"):
        ServerConfig(ssl_certfile=certs.certfile, ssl_cert_reqs=3)
    with pytest.raises(ValueError, match="ssl_handshake_timeout"):
        ServerConfig(ssl_handshake_timeout=0)
    with pytest.raises(OSError):
        await pipeparse.serve("plaintext", port=0, ssl_certfile=str(tmp_path / "missing.pem"))
    with pytest.raises(ssl.SSLError):  # the key of another certificate
        other = trustme.CA().issue_cert("x")
        other.private_key_pem.write_to_path(str(tmp_path / "other.pem"))
        await pipeparse.serve(
            "plaintext",
            port=0,
            ssl_certfile=certs.certfile,
            ssl_keyfile=str(tmp_path / "other.pem"),
        )


@parametrize_loops
async def test_an_encrypted_key_with_its_password(certs: Certs, loop: str, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(Path(certs.keyfile).read_bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret"),
    )
    (tmp_path / "enc.pem").write_bytes(encrypted)
    async with tls_server(
        "plaintext",
        certs,
        loop,
        ssl_keyfile=str(tmp_path / "enc.pem"),
        ssl_keyfile_password="s3cret",
    ) as server:
        tcp = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with trio.SSLStream(tcp, certs.client, server_hostname="127.0.0.1") as stream:
            await stream.send_all(_requests(1).replace(b"/r0", b"/plaintext"))
            assert (await _receive_all(stream)).endswith(b"Hello, World!")


@pytest.mark.parametrize(
    ("workers", "loop"), [(1, "trio"), (2, "trio"), (1, LOOPS[-1]), (2, "asyncio")]
)
def test_the_command_line_serves_https(certs: Certs, workers: int, loop: str) -> None:
    import signal
    import socket

    from tests.test_cli_serve import SAFETY, read_line, serve_command, started

    argv = serve_command(
        f"--ssl-certfile={certs.certfile}",
        f"--ssl-keyfile={certs.keyfile}",
        f"--workers={workers}",
        f"--loop={loop}",
    )
    with started(argv) as proc:
        line = read_line(proc.stdout, [])
        assert line.startswith("pipeparse: listening on https://127.0.0.1:"), line
        port = int(line.split("https://127.0.0.1:")[1].split(" ")[0])
        for _ in range(2 * workers):
            with (
                socket.create_connection(("127.0.0.1", port), timeout=SAFETY) as raw,
                certs.client.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
            ):
                tls.sendall(b"GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                response = b""
                while not response.endswith(b"Hello, World!"):  # (not to EOF: the server
                    data = tls.recv(65536)  # lingers for the client's close)
                    assert data, response
                    response += data
            assert response.startswith(b"HTTP/1.1 200 ") and response.endswith(b"Hello, World!")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(SAFETY) == 0


@parametrize_engine_loops
async def test_a_close_with_unread_bytes_still_delivers_the_response(
    certs: Certs, engine: str, loop: str
) -> None:
    """The server closes after `Connection: close` while the client's later bytes are still
    arriving: it drains them first, so the kernel does not reset the connection under the
    response (what lingering does for plain TCP)."""
    async with tls_server("plaintext", certs, loop, engine=engine) as server:
        tcp = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with trio.SSLStream(tcp, certs.client, server_hostname="127.0.0.1") as stream:
            first = b"GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            await stream.send_all(first + b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n" * 20000)
            answer = await _receive_all(stream)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"Hello, World!")
