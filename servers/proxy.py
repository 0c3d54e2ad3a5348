"""Proxy headers: who the client is and which scheme it used, when a trusted proxy says so.

Strategy
--------
Pure functions, no I/O. `TrustedProxies.parse` reads ``--forwarded-allow-ips`` (a comma list
of addresses or networks, ``*`` for every peer). `forwarded_client` takes a request's headers,
the peer's ``(host, port)`` and the connection's scheme, and returns the ``(client, scheme)``
the app should see:

- From an untrusted peer (or with no trusted list) nothing changes: a client could otherwise
  claim any address.
- From a trusted peer, an RFC 7239 ``Forwarded`` header wins; without one, ``X-Forwarded-For``
  and ``X-Forwarded-Proto``. Hops are read right to left (the nearest proxy appended the last
  one) and the first hop that is not itself a trusted proxy is the client; when every hop is
  trusted, the leftmost one is.
- A malformed header is ignored as a whole (a bad ``Forwarded`` falls back to the
  ``X-Forwarded-*`` pair), never an error: the request goes on with what the peer gave.
  Hops must be IP addresses (optionally with a port); RFC 7239's obfuscated identifiers and
  ``unknown`` count as malformed, since they cannot be checked against the trusted list.
- The scheme (``http`` or ``https``, any case) comes from the same ``Forwarded`` element as the
  client, or from the last value of ``X-Forwarded-Proto`` (what the nearest proxy received).
  WebSocket scopes map it to ``ws``/``wss`` where they are built.
- A connection without a peer address (a Unix socket) is trusted only with ``*``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["TrustedProxies", "forwarded_client", "parse_host_port"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Client = tuple[str, int] | None

_SCHEMES = frozenset({"http", "https"})
# RFC 7239 section 4: forwarded-element = pair *( ";" pair ), pair = token "=" value, value =
# token / quoted-string; elements are a comma list (optional whitespace tolerated around both).
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PAIR = rf'({_TOKEN})=({_TOKEN}|"(?:[^"\\]|\\.)*")'
_ELEMENT = rf"{_PAIR}(?:\s*;\s*{_PAIR})*"
_FORWARDED = re.compile(rf"\s*{_ELEMENT}(?:\s*,\s*{_ELEMENT})*\s*")
_ELEMENT_RE = re.compile(_ELEMENT)
_PAIR_RE = re.compile(_PAIR)


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    """The peers whose proxy headers are believed: every one (``*``) or these networks."""

    networks: tuple[Network, ...] = ()
    everyone: bool = False

    @classmethod
    def parse(cls, spec: str) -> TrustedProxies:
        """``"*"`` or a comma list of addresses and networks (``"127.0.0.1, 10.0.0.0/8"``).

        Raises `ValueError` naming the entry that is neither.
        """
        entries = [e.strip() for e in spec.split(",") if e.strip()]
        if "*" in entries:
            return cls(everyone=True)
        networks = []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(
                    f"forwarded_allow_ips: {entry!r} is not an address or a network "
                    "(use addresses like 127.0.0.1, networks like 10.0.0.0/8, or *)"
                ) from None
        return cls(networks=tuple(networks))

    def trusts(self, host: str | None) -> bool:
        """True when proxy headers from `host` (None: no address, a Unix socket) count."""
        if self.everyone:
            return True
        if host is None:
            return False
        address = _address(host)
        return address is not None and any(address in net for net in self.networks)


def _address(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def parse_host_port(text: str) -> tuple[str, int] | None:
    """A hop as ``(address, port)`` (port 0 when not given), or None when it is not one.

    Takes ``1.2.3.4``, ``1.2.3.4:80``, ``::1``, ``[::1]`` and ``[::1]:80``.
    """
    text = text.strip()
    port = 0
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        if rest:
            if not rest[1:].isdigit() or not 0 <= int(rest[1:]) <= 65535:
                return None
            port = int(rest[1:])
        address = _address(host)
        return (str(address), port) if isinstance(address, ipaddress.IPv6Address) else None
    if text.count(":") == 1:  # IPv4 with a port
        text, _, port_text = text.partition(":")
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            return None
        port = int(port_text)
    address = _address(text)
    if address is None or (port and isinstance(address, ipaddress.IPv6Address)):
        return None
    return (str(address), port)


def _pick_hop(hops: list[tuple[str, int]], trusted: TrustedProxies) -> int:
    """The index of the client among `hops`: the last untrusted one, else the first."""
    for index in range(len(hops) - 1, -1, -1):
        if not trusted.trusts(hops[index][0]):
            return index
    return 0


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The values of header `name`, joined with commas (None when absent or not ASCII)."""
    values = [value for key, value in headers if key == name]
    if not values:
        return None
    try:
        return ",".join(v.decode("ascii") for v in values)
    except UnicodeDecodeError:
        return ""  # present but malformed


def _unquote(value: str) -> str:
    if value.startswith('"'):
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _parse_forwarded(text: str) -> list[dict[str, str]] | None:
    """The elements of a ``Forwarded`` value as dicts of lowercased parameters, or None."""
    if _FORWARDED.fullmatch(text) is None:
        return None
    elements = []
    for element in _ELEMENT_RE.finditer(text):
        params: dict[str, str] = {}
        for pair in _PAIR_RE.finditer(element.group(0)):
            name = pair.group(1).lower()
            if name in params:  # a parameter twice in one element (RFC 7239 section 4)
                return None
            params[name] = _unquote(pair.group(2))
        elements.append(params)
    return elements


def _from_forwarded(
    text: str, trusted: TrustedProxies
) -> tuple[tuple[str, int], str | None] | None:
    elements = _parse_forwarded(text)
    if elements is None:
        return None
    hops = []
    for params in elements:
        if "for" not in params:
            return None
        hop = parse_host_port(params["for"])
        if hop is None:
            return None
        proto = params.get("proto")
        if proto is not None and proto.lower() not in _SCHEMES:
            return None
        hops.append(hop)
    index = _pick_hop(hops, trusted)
    proto = elements[index].get("proto")
    return hops[index], proto.lower() if proto is not None else None


def _from_x_forwarded(
    for_text: str | None, proto_text: str | None, trusted: TrustedProxies
) -> tuple[tuple[str, int] | None, str | None]:
    client = None
    if for_text is not None:
        hops = [parse_host_port(part) for part in for_text.split(",")]
        if hops and all(hop is not None for hop in hops):
            valid = [hop for hop in hops if hop is not None]
            client = valid[_pick_hop(valid, trusted)]
    scheme = None
    if proto_text is not None:
        last = proto_text.split(",")[-1].strip().lower()
        if last in _SCHEMES:
            scheme = last
    return client, scheme


def forwarded_client(
    headers: Iterable[tuple[bytes, bytes]],
    peer: Client,
    scheme: str,
    trusted: TrustedProxies,
) -> tuple[Client, str]:
    """The ``(client, scheme)`` an app sees for a request from `peer` (see the module)."""
    if not trusted.trusts(peer[0] if peer is not None else None):
        return peer, scheme
    headers = list(headers)
    forwarded = _header(headers, b"forwarded")
    if forwarded:
        found = _from_forwarded(forwarded, trusted)
        if found is not None:
            return found[0], found[1] or scheme
    client, proto = _from_x_forwarded(
        _header(headers, b"x-forwarded-for"), _header(headers, b"x-forwarded-proto"), trusted
    )
    return (client if client is not None else peer), (proto or scheme)
