"""Proxy headers and root path: `pipeparse.servers.proxy` as tables, then through the adapters
and over a real socket (both engines)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from pipeparse import HttpRequest, Response, native
from pipeparse.servers.config import ServerConfig
from pipeparse.servers.handlers import resolve_app
from pipeparse.servers.proxy import TrustedProxies, forwarded_client, parse_host_port
from tests.loop_servers import parametrize_engine_loops, serving
from tests.server_harness import RecordingSink, make_request, parse_responses, receive_all

LOCAL = TrustedProxies.parse("127.0.0.1")
PEER = ("127.0.0.1", 40000)

# (headers, trusted spec, peer) -> (client, scheme)
CASES: list[tuple[str, list[tuple[bytes, bytes]], str, Any, Any, str]] = [
    ("no headers", [], "127.0.0.1", PEER, PEER, "http"),
    ("xff one hop", [(b"x-forwarded-for", b"1.2.3.4")], "127.0.0.1", PEER, ("1.2.3.4", 0), "http"),
    (
        "xff last untrusted hop",
        [(b"x-forwarded-for", b"5.5.5.5, 1.2.3.4, 10.0.0.2")],
        "127.0.0.1, 10.0.0.0/8",
        PEER,
        ("1.2.3.4", 0),
        "http",
    ),
    (
        "xff all trusted: leftmost",
        [(b"x-forwarded-for", b"10.0.0.3, 10.0.0.2")],
        "127.0.0.1,10.0.0.0/8",
        PEER,
        ("10.0.0.3", 0),
        "http",
    ),
    (
        "xff two header lines join",
        [(b"x-forwarded-for", b"9.9.9.9"), (b"x-forwarded-for", b"1.2.3.4")],
        "127.0.0.1",
        PEER,
        ("1.2.3.4", 0),
        "http",
    ),
    (
        "xff with port",
        [(b"x-forwarded-for", b"1.2.3.4:81")],
        "127.0.0.1",
        PEER,
        ("1.2.3.4", 81),
        "http",
    ),
    (
        "xff ipv6",
        [(b"x-forwarded-for", b"[2001:db8::1]:9")],
        "127.0.0.1",
        PEER,
        ("2001:db8::1", 9),
        "http",
    ),
    (
        "xff bare ipv6",
        [(b"x-forwarded-for", b"2001:db8::1")],
        "127.0.0.1",
        PEER,
        ("2001:db8::1", 0),
        "http",
    ),
    ("xfp https", [(b"x-forwarded-proto", b"HTTPS")], "127.0.0.1", PEER, PEER, "https"),
    ("xfp last value", [(b"x-forwarded-proto", b"http, https")], "127.0.0.1", PEER, PEER, "https"),
    (
        "xff and xfp",
        [(b"x-forwarded-for", b"1.2.3.4"), (b"x-forwarded-proto", b"https")],
        "127.0.0.1",
        PEER,
        ("1.2.3.4", 0),
        "https",
    ),
    (
        "untrusted peer: ignored",
        [(b"x-forwarded-for", b"1.2.3.4"), (b"x-forwarded-proto", b"https")],
        "10.0.0.1",
        PEER,
        PEER,
        "http",
    ),
    (
        "star trusts all",
        [(b"x-forwarded-for", b"1.2.3.4")],
        "*",
        ("8.8.8.8", 1),
        ("1.2.3.4", 0),
        "http",
    ),
    ("unix socket, star", [(b"x-forwarded-for", b"1.2.3.4")], "*", None, ("1.2.3.4", 0), "http"),
    ("unix socket, not star", [(b"x-forwarded-for", b"1.2.3.4")], "127.0.0.1", None, None, "http"),
    # malformed: ignored, never an error
    ("xff garbage", [(b"x-forwarded-for", b"not-an-ip")], "127.0.0.1", PEER, PEER, "http"),
    ("xff one bad hop", [(b"x-forwarded-for", b"1.2.3.4, nope")], "127.0.0.1", PEER, PEER, "http"),
    ("xff empty hop", [(b"x-forwarded-for", b"1.2.3.4,,")], "127.0.0.1", PEER, PEER, "http"),
    ("xff bad port", [(b"x-forwarded-for", b"1.2.3.4:99999")], "127.0.0.1", PEER, PEER, "http"),
    ("xff not ascii", [(b"x-forwarded-for", b"1.2.3.4\xff")], "127.0.0.1", PEER, PEER, "http"),
    ("xfp unknown", [(b"x-forwarded-proto", b"gopher")], "127.0.0.1", PEER, PEER, "http"),
    ("xfp empty", [(b"x-forwarded-proto", b"")], "127.0.0.1", PEER, PEER, "http"),
    # RFC 7239 Forwarded
    ("fwd for", [(b"forwarded", b"for=1.2.3.4")], "127.0.0.1", PEER, ("1.2.3.4", 0), "http"),
    (
        "fwd for proto",
        [(b"forwarded", b"for=1.2.3.4;proto=https;by=127.0.0.1")],
        "127.0.0.1",
        PEER,
        ("1.2.3.4", 0),
        "https",
    ),
    (
        "fwd quoted ipv6 with port",
        [(b"forwarded", b'For="[2001:db8::1]:4711"; Proto=HTTPS')],
        "127.0.0.1",
        PEER,
        ("2001:db8::1", 4711),
        "https",
    ),
    (
        "fwd hops: last untrusted, its proto",
        [(b"forwarded", b"for=5.5.5.5;proto=http, for=1.2.3.4;proto=https, for=10.0.0.2")],
        "127.0.0.1,10.0.0.0/8",
        PEER,
        ("1.2.3.4", 0),
        "https",
    ),
    (
        "fwd wins over xff",
        [(b"forwarded", b"for=1.2.3.4"), (b"x-forwarded-for", b"9.9.9.9")],
        "127.0.0.1",
        PEER,
        ("1.2.3.4", 0),
        "http",
    ),
    (
        "bad fwd falls back to xff",
        [(b"forwarded", b"for=1.2.3.4;;"), (b"x-forwarded-for", b"9.9.9.9")],
        "127.0.0.1",
        PEER,
        ("9.9.9.9", 0),
        "http",
    ),
    ("fwd obfuscated", [(b"forwarded", b"for=_hidden")], "127.0.0.1", PEER, PEER, "http"),
    ("fwd unknown", [(b"forwarded", b"for=unknown")], "127.0.0.1", PEER, PEER, "http"),
    ("fwd without for", [(b"forwarded", b"proto=https")], "127.0.0.1", PEER, PEER, "http"),
    (
        "fwd twice a param",
        [(b"forwarded", b"for=1.2.3.4;for=5.6.7.8")],
        "127.0.0.1",
        PEER,
        PEER,
        "http",
    ),
    ("fwd bad proto", [(b"forwarded", b"for=1.2.3.4;proto=ftp")], "127.0.0.1", PEER, PEER, "http"),
    ("fwd unquoted ipv6", [(b"forwarded", b"for=[::1]")], "127.0.0.1", PEER, PEER, "http"),
    ("fwd open quote", [(b"forwarded", b'for="1.2.3.4')], "127.0.0.1", PEER, PEER, "http"),
    ("fwd trailing comma", [(b"forwarded", b"for=1.2.3.4,")], "127.0.0.1", PEER, PEER, "http"),
    ("fwd untrusted peer", [(b"forwarded", b"for=1.2.3.4")], "10.0.0.1", PEER, PEER, "http"),
]


@pytest.mark.parametrize(
    ("headers", "spec", "peer", "client", "scheme"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_forwarded_client(
    headers: list[tuple[bytes, bytes]], spec: str, peer: Any, client: Any, scheme: str
) -> None:
    assert forwarded_client(headers, peer, "http", TrustedProxies.parse(spec)) == (client, scheme)


def test_the_connection_scheme_stays_without_a_forwarded_one() -> None:
    assert forwarded_client([], PEER, "https", LOCAL) == (PEER, "https")
    headers = [(b"x-forwarded-proto", b"http")]
    assert forwarded_client(headers, PEER, "https", LOCAL) == (PEER, "http")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2.3.4", ("1.2.3.4", 0)),
        (" 1.2.3.4:8 ", ("1.2.3.4", 8)),
        ("[::1]", ("::1", 0)),
        ("[::1]:80", ("::1", 80)),
        ("::1", ("::1", 0)),
        ("[1.2.3.4]", None),
        ("[::1]x", None),
        ("[::1", None),
        ("1.2.3.4:", None),
        ("1.2.3.4:x", None),
        ("example.com", None),
        ("", None),
    ],
)
def test_parse_host_port(text: str, expected: tuple[str, int] | None) -> None:
    assert parse_host_port(text) == expected


def test_trusted_proxies_parse() -> None:
    trusted = TrustedProxies.parse(" 127.0.0.1 , 10.0.0.0/8,::1")
    assert trusted.trusts("10.1.2.3") and trusted.trusts("127.0.0.1") and trusted.trusts("::1")
    assert not trusted.trusts("11.0.0.1") and not trusted.trusts(None)
    assert not trusted.trusts("not-an-address")
    assert TrustedProxies.parse("*").trusts(None)
    assert not TrustedProxies.parse("").trusts("127.0.0.1")
    with pytest.raises(ValueError, match="'nope' is not an address or a network"):
        TrustedProxies.parse("127.0.0.1,nope")


def test_config_checks_the_proxy_settings() -> None:
    with pytest.raises(ValueError, match="'x' is not an address"):
        ServerConfig(forwarded_allow_ips="x")
    for bad in ("api", "/api/", "/ä"):
        with pytest.raises(ValueError, match="root_path"):
            ServerConfig(root_path=bad)
    assert ServerConfig(root_path="/api").root_path == "/api"
    assert not ServerConfig().proxy_headers
    assert ServerConfig().forwarded_allow_ips == "127.0.0.1"


# --- through the adapters -------------------------------------------------------------------


async def _scope_of(**settings: Any) -> dict[str, Any]:
    scopes: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scopes.append(scope)
        await send({"type": "http.response.start", "status": 204})
        await send({"type": "http.response.body"})

    served = resolve_app(app, "asgi", **settings)
    headers = ((b"host", b"a"), (b"x-forwarded-for", b"1.2.3.4"), (b"x-forwarded-proto", b"https"))
    await served.handler(make_request(target=b"/a%20b?q=1", headers=headers), RecordingSink())
    (scope,) = scopes
    return scope


async def test_asgi_scope_behind_a_trusted_proxy_with_a_root_path() -> None:
    trusted = TrustedProxies.parse("10.0.0.0/8")  # make_request's peer is 10.0.0.1
    scope = await _scope_of(trusted=trusted, root_path="/api")
    assert scope["client"] == ("1.2.3.4", 0)
    assert scope["scheme"] == "https"
    assert scope["root_path"] == "/api"
    assert (scope["path"], scope["raw_path"]) == ("/api/a b", b"/api/a%20b")


async def test_asgi_scope_without_proxy_headers_keeps_the_peer() -> None:
    scope = await _scope_of()
    assert (scope["client"], scope["scheme"], scope["root_path"]) == (("10.0.0.1", 5), "http", "")
    assert scope["path"] == "/a b"
    untrusted = await _scope_of(trusted=LOCAL)
    assert (untrusted["client"], untrusted["scheme"]) == (("10.0.0.1", 5), "http")


async def test_native_request_behind_a_trusted_proxy() -> None:
    seen: list[tuple[Any, str]] = []

    @native
    async def app(request: HttpRequest) -> Response:
        seen.append((request.client, request.scheme))
        return Response(b"", status=204)

    headers = ((b"host", b"a"), (b"forwarded", b'for="[::2]:7";proto=https'))
    for trusted in (TrustedProxies.parse("10.0.0.1"), None):
        served = resolve_app(app, "native", trusted=trusted)
        await served.handler(make_request(headers=headers), RecordingSink())
    assert seen == [(("::2", 7), "https"), (("10.0.0.1", 5), "http")]


# --- over a real socket ---------------------------------------------------------------------


async def _echo_scope(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = json.dumps(
        {k: scope[k] for k in ("client", "scheme", "root_path", "path")}, default=list
    ).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


@parametrize_engine_loops
async def test_proxy_headers_over_a_socket_pipelined(engine: str, loop: str) -> None:
    settings = {"engine": engine, "proxy_headers": True, "root_path": "/api"}
    async with serving(loop, _echo_scope, **settings) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(
                b"GET /x HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 1.2.3.4\r\n"
                b"X-Forwarded-Proto: https\r\n\r\n"
                b"GET /y HTTP/1.1\r\nHost: t\r\nForwarded: for=bad-value\r\n\r\n"
                b"GET /z HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            )
            responses = parse_responses(await receive_all(stream))
    bodies = [json.loads(r.body) for r in responses]
    assert [r.status for r in responses] == [200, 200, 200]
    assert bodies[0] == {
        "client": ["1.2.3.4", 0],
        "scheme": "https",
        "root_path": "/api",
        "path": "/api/x",
    }
    assert bodies[1]["client"][0] == "127.0.0.1" and bodies[1]["scheme"] == "http"
    assert bodies[2]["path"] == "/api/z"
