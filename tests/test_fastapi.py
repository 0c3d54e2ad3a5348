"""A FastAPI app with HTTP and WebSocket routes, as a user deploys it: over TLS behind a proxy,
and on a Unix socket, on every loop (real sockets; the `websockets` client library)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.requests import Request
from websockets.sync.client import connect, unix_connect

from tests.loop_servers import parametrize_loops
from tests.server_harness import parse_responses
from tests.test_tls import Certs, certs_fixture  # noqa: F401  (the "certs" fixture)
from tests.test_websocket import serving

app = FastAPI()


@app.get("/items/{item}")
async def item(item: int, request: Request) -> dict[str, Any]:
    client = request.client
    return {"item": item, "client": client.host if client else None, "scheme": request.url.scheme}


@app.websocket("/ws")
async def shout(websocket: WebSocket) -> None:
    await websocket.accept()
    client = websocket.client
    scheme = websocket.url.scheme
    await websocket.send_json({"client": client.host if client else None, "scheme": scheme})
    try:
        while True:
            await websocket.send_text((await websocket.receive_text()).upper())
    except WebSocketDisconnect:
        pass


FORWARDED = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}


def _get(sock: socket.socket, target: str, extra: str = "") -> Any:
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n".encode())
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    (response,) = parse_responses(data)
    assert response.status == 200
    return json.loads(response.body)


@parametrize_loops
def test_over_tls_behind_a_proxy(loop: str, certs: Certs) -> None:
    settings = {
        "ssl_certfile": certs.certfile,
        "ssl_keyfile": certs.keyfile,
        "proxy_headers": True,
        "forwarded_allow_ips": "127.0.0.1",
    }
    with serving(app, loop, **settings) as port:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        with certs.client.wrap_socket(raw, server_hostname="localhost") as tls:
            forwarded = "".join(f"{k}: {v}\r\n" for k, v in FORWARDED.items())
            assert _get(tls, "/items/7", forwarded) == {
                "item": 7,
                "client": "203.0.113.7",
                "scheme": "https",
            }
        url = f"wss://localhost:{port}/ws"
        with connect(url, ssl=certs.client, additional_headers=FORWARDED, open_timeout=10) as ws:
            assert json.loads(ws.recv(timeout=10)) == {"client": "203.0.113.7", "scheme": "wss"}
            ws.send("hello")
            assert ws.recv(timeout=10) == "HELLO"


@parametrize_loops
def test_on_a_unix_socket(loop: str, tmp_path: Path) -> None:
    path = str(tmp_path / "app.sock")
    with serving(app, loop, uds=path):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(path)
            assert _get(sock, "/items/3") == {"item": 3, "client": None, "scheme": "http"}
        with unix_connect(path, "ws://localhost/ws", open_timeout=10) as ws:
            assert json.loads(ws.recv(timeout=10)) == {"client": None, "scheme": "ws"}
            ws.send("unix")
            assert ws.recv(timeout=10) == "UNIX"
    assert not Path(path).exists()  # removed on shutdown

