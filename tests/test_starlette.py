"""A Starlette app on trio (anyio's trio backend) through every engine, pipelined."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

pytest.importorskip("starlette")

import anyio
import trio
import trio.testing
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from pipeparse.servers.handlers import resolve_app
from tests.server_harness import (
    exchange,
    parametrize_chunkings,
    parametrize_engines,
    parse_responses,
    request,
)

EVENTS: list[str] = []


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    EVENTS.append("startup")
    yield {"greeting": "hello from lifespan"}
    EVENTS.append("shutdown")


async def root(request: Request) -> Response:
    return PlainTextResponse(f"root {request.url.path}")


async def upload(request: Request) -> Response:
    body = await request.body()
    return JSONResponse(
        {
            "len": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "greeting": request.state.greeting,
            "query": dict(request.query_params),
        }
    )


async def sleepy(request: Request) -> Response:
    ms = int(request.path_params["ms"])
    await anyio.sleep(ms / 1000)
    return PlainTextResponse(f"slept {ms}")


async def stream(request: Request) -> Response:
    async def pieces() -> AsyncIterator[bytes]:
        for i in range(3):
            await anyio.sleep(0)
            yield b"piece %d;" % i

    return StreamingResponse(pieces(), media_type="text/plain")


async def broken(request: Request) -> Response:
    raise RuntimeError("route bug")


app = Starlette(
    routes=[
        Route("/", root),
        Route("/upload", upload, methods=["POST"]),
        Route("/sleep/{ms:int}", sleepy),
        Route("/stream", stream),
        Route("/broken", broken),
    ],
    lifespan=lifespan,
)


@asynccontextmanager
async def served_starlette() -> AsyncIterator[Any]:
    EVENTS.clear()
    served = resolve_app(app)
    assert served.interface == "asgi"
    async with served.lifespan():
        assert EVENTS == ["startup"]
        yield served.handler
    assert EVENTS == ["startup", "shutdown"]


@parametrize_engines
@parametrize_chunkings
async def test_starlette_pipelined(
    serve: Any, chunking: str, autojump_clock: trio.testing.MockClock
) -> None:
    body = b"starlette body " * 50
    data = (
        request("GET", "/sleep/30")
        + request("POST", "/upload?x=1", body=body)
        + request("GET", "/stream")
        + request("POST", "/upload", body=body, chunked=True)
        + request("GET", "/sleep/0")
        + request("GET", "/missing")
        + request("HEAD", "/")
        + request("GET", "/", headers=[("Connection", "close")])
    )
    async with served_starlette() as handler:
        raw = await exchange(serve, handler, data, chunking, close_write=False)
    methods = ["GET", "POST", "GET", "POST", "GET", "GET", "HEAD", "GET"]
    responses = parse_responses(raw, methods)
    assert [r.status for r in responses] == [200, 200, 200, 200, 200, 404, 200, 200]
    assert responses[0].body == b"slept 30"
    expected = {
        "len": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
        "greeting": "hello from lifespan",
    }
    assert responses[1].json() == {**expected, "query": {"x": "1"}}
    assert responses[2].chunked
    assert responses[2].body == b"piece 0;piece 1;piece 2;"
    assert responses[3].json() == {**expected, "query": {}}
    assert responses[4].body == b"slept 0"
    assert responses[6].body == b""
    assert responses[6].header("content-length") == b"6"
    assert responses[7].body == b"root /"
    for response in responses:
        assert response.header("server") == b"pipeparse"
        assert response.header("date") is not None


@parametrize_engines
async def test_starlette_error_is_a_500(serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    data = request("GET", "/") + request("GET", "/broken", headers=[("Connection", "close")])
    async with served_starlette() as handler:
        raw = await exchange(serve, handler, data, close_write=False)
    responses = parse_responses(raw)
    assert [r.status for r in responses] == [200, 500]
    assert "route bug" in caplog.text
