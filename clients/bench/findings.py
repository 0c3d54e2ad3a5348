"""What a run of `pipeparse bench` tells a user, read off its own rows.

Strategy: one pure function per section turns that section's rows into findings, each one line
that names its figure and the comparison it comes from (two engines, two depths, two receivers
of the same run). Nothing here judges the numbers against a goal: a finding says where something
wins and by how much, and where it loses. A section the run skipped says so instead of saying
nothing; a section the run did not ask for (``--only``) is left out. A finding whose rows are
missing (a quick grid, a peer not installed) is left out too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pipeparse.clients.bench.server import batching_flags
from pipeparse.clients.bench.stats import Row, safe_ratio

__all__ = ["FINDERS", "findings", "format_findings"]

Rows = Sequence[Mapping[str, Any]]
HANDLER_WORDS = {
    "instant": "instant handlers",
    "sleep1ms": "handlers that wait 1 ms",
    "sleep10ms": "handlers that wait 10 ms",
}
WALL_SHARE = 0.95  # "reaches its wall": the first connection count within 5% of the peak


def _num(value: float) -> str:
    """A figure as the tables print it: thousands separated, else 3-4 significant digits."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def _times(ratio: float) -> str:
    return f"{ratio:.1f}x" if ratio >= 10 else f"{ratio:.2f}x"


def _size(size: int) -> str:
    return f"{size // 1024} KiB" if size >= 1024 and size % 1024 == 0 else f"{size} B"


def _find(rows: Rows, **match: Any) -> Mapping[str, Any] | None:
    """The first row with these values; pipeparse's on trio unless a ``loop`` is given (the
    `server` section also has its rows on other loops)."""
    if match.get("engine") == "pipeparse" and "loop" not in match:
        match["loop"] = "trio"
    for r in rows:
        if all(r.get(k, "trio" if k == "loop" else None) == v for k, v in match.items()):
            return r
    return None


def _line(section: str, text: str) -> Row:
    return {"section": section, "finding": text}


# -- server --------------------------------------------------------------------------------


def _rps_row(rows: Rows, engine: str, handler: str, depth: int) -> tuple[str, Mapping[str, Any]]:
    """pipeparse's interface of choice for a comparison: native where measured, else ASGI."""
    for interface in ("native", "asgi"):
        row = _find(rows, engine=engine, handler=handler, depth=depth, interface=interface)
        if row is not None and row.get("rps"):
            return interface, row
    raise LookupError(engine)


def _pipelining(rows: Rows) -> str | None:
    """pipeparse at depth 16 against depth 1, one connection, instant handlers; h11 alike."""
    try:
        iface, deep = _rps_row(rows, "pipeparse", "instant", 16)
    except LookupError:
        return None
    shallow = _find(rows, engine="pipeparse", handler="instant", depth=1, interface=iface)
    if shallow is None or not shallow.get("rps"):
        return None
    text = (
        f"pipelining, one connection, instant {iface} handler: pipeparse at depth 16 serves "
        f"{_num(deep['rps'])} rps, {_times(deep['rps'] / shallow['rps'])} its "
        f"{_num(shallow['rps'])} at depth 1"
    )
    h11_deep = _find(rows, engine="h11", handler="instant", depth=16, interface=iface)
    h11_shallow = _find(rows, engine="h11", handler="instant", depth=1, interface=iface)
    if h11_deep and h11_shallow and h11_shallow.get("rps"):
        gain = h11_deep["rps"] / h11_shallow["rps"]
        text += f" (h11, one request at a time: {_times(gain)})"
    return text


def _loops(rows: Rows) -> list[Row]:
    """pipeparse on each other loop against trio, native at depth 16 and 1, instant handlers."""
    out: list[Row] = []
    loops = list(dict.fromkeys(str(r.get("loop")) for r in rows if r["engine"] == "pipeparse"))
    for depth in (16, 1):
        trio = _find(rows, engine="pipeparse", handler="instant", depth=depth, interface="native")
        if trio is None or not trio.get("rps"):
            continue
        parts = []
        for loop in loops:
            if loop == "trio":
                continue
            row = _find(
                rows, engine="pipeparse", loop=loop, handler="instant", depth=depth,
                interface="native",
            )  # fmt: skip
            if row is not None and row.get("rps"):
                parts.append(f"{loop} {_num(row['rps'])} ({_times(row['rps'] / trio['rps'])})")
        if parts:
            out.append(
                _line(
                    "server",
                    f"pipeparse's loops, instant native handlers, depth {depth}: trio "
                    f"{_num(trio['rps'])} rps; " + ", ".join(parts),
                )
            )
    return out


def server_findings(rows: Rows) -> list[Row]:
    """Pipelining (depth 16 against 1), concurrency against the sequential h11 engine at each
    handler wait, and pipeparse against the peers on the same ASGI app."""
    out: list[Row] = []
    pipelining = _pipelining(rows)
    if pipelining is not None:
        out.append(_line("server", pipelining))
    for depth in (16, 1):
        for handler, words in HANDLER_WORDS.items():
            try:
                iface, pp = _rps_row(rows, "pipeparse", handler, depth)
            except LookupError:
                continue
            h11 = _find(rows, engine="h11", handler=handler, depth=depth, interface=iface)
            if h11 is None or not h11.get("rps"):
                continue
            text = (
                f"{words}, depth {depth}, one connection ({iface}): pipeparse "
                f"{_num(pp['rps'])} rps against h11's {_num(h11['rps'])}, "
                f"{_times(pp['rps'] / h11['rps'])}"
            )
            if pp.get("p50_ms") is not None and h11.get("p50_ms") is not None:
                text += f"; p50 {_num(pp['p50_ms'])} ms against {_num(h11['p50_ms'])} ms"
            out.append(_line("server", text))
    out.extend(_loops(rows))
    peers = sorted(
        {str(r["engine"]) for r in rows} - {"pipeparse", "h11"},
        key=lambda e: [r["engine"] for r in rows].index(e),
    )
    for depth in (16, 1):
        for handler, words in HANDLER_WORDS.items():
            pp_row = _find(rows, engine="pipeparse", handler=handler, depth=depth, interface="asgi")
            if pp_row is None or not pp_row.get("rps"):
                continue
            parts = []
            for peer in peers:
                other = _find(rows, engine=peer, handler=handler, depth=depth, interface="asgi")
                if other is not None and other.get("rps"):
                    ratio = pp_row["rps"] / other["rps"]
                    parts.append(f"{peer} {_num(other['rps'])} ({_times(ratio)})")
            if parts:
                out.append(
                    _line(
                        "server",
                        f"the same ASGI app, {words}, depth {depth}: pipeparse "
                        f"{_num(pp_row['rps'])} rps; " + ", ".join(parts),
                    )
                )
    return out


def wall_findings(rows: Rows) -> list[Row]:
    """Where pipeparse's throughput stops growing with connections, and the others there."""
    mine = [r for r in rows if r["engine"] == "pipeparse" and r.get("rps")]
    if not mine:
        return []
    peak = max(mine, key=lambda r: r["rps"])
    wall = min(
        (r for r in mine if r["rps"] >= WALL_SHARE * peak["rps"]), key=lambda r: r["connections"]
    )
    last = max(mine, key=lambda r: r["connections"])
    text = (
        f"depth 16, instant ASGI handler: pipeparse reaches {_num(wall['rps'])} rps at "
        f"{wall['connections']} connections (p99 {_num(wall['p99_ms'])} ms), "
    )
    if wall is peak:
        text += "its peak"
    else:
        text += f"within {100 * (1 - WALL_SHARE):.0f}% of its peak of {_num(peak['rps'])}"
    if last["connections"] > wall["connections"]:
        text += (
            f"; more connections add latency, not throughput (p99 {_num(last['p99_ms'])} ms at "
            f"{last['connections']})"
        )
    out = [_line("wall", text)]
    others = []
    for r in rows:
        if r["connections"] == wall["connections"] and r["engine"] != "pipeparse" and r["rps"]:
            others.append(f"{r['engine']} {_num(r['rps'])} ({_times(wall['rps'] / r['rps'])})")
    if others:
        out.append(
            _line(
                "wall",
                f"at {wall['connections']} connections, against pipeparse's "
                f"{_num(wall['rps'])} rps: " + ", ".join(others),
            )
        )
    return out


def batching_findings(rows: Rows) -> list[Row]:
    """Per depth: the fastest batching setting against the adaptive default."""
    out: list[Row] = []
    for depth in sorted({r["depth"] for r in rows}):
        at = [r for r in rows if r["depth"] == depth and r.get("rps_vs_adaptive") is not None]
        base = _find(at, recv_size="adaptive", flush="adaptive")
        if base is None or len(at) < 2:
            continue
        best = max(at, key=lambda r: r["rps_vs_adaptive"])
        conns = base["connections"]
        where = f"depth {depth}, {conns} connection{'' if conns == 1 else 's'}"
        if best is base:
            text = f"{where}: the adaptive default is the fastest setting measured"
            text += f" ({_num(base['rps'])} rps)"
        else:
            flags = " ".join(batching_flags(best["recv_size"], best["flush"]))
            text = (
                f"{where}: `{flags}` serves {_num(best['rps'])} rps, "
                f"{_times(best['rps_vs_adaptive'])} the adaptive default's {_num(base['rps'])}"
            )
        out.append(_line("batching", text))
    return out


# -- connections ---------------------------------------------------------------------------


def connections_findings(rows: Rows) -> list[Row]:
    """Memory per idle connection at the largest count measured, and growing against fixed
    receive buffers under a deep pipeline."""
    out: list[Row] = []
    idle = [r for r in rows if r["measure"] == "idle rss" and r["kib_per_connection"] is not None]
    mine = [r for r in idle if r["server"] == "pipeparse"]
    if mine:
        top = max(mine, key=lambda r: r["connections"])
        others = [
            f"{r['server']} {_num(r['kib_per_connection'])} KiB"
            for r in idle
            if r["server"] != "pipeparse" and r["connections"] == top["connections"]
        ]
        text = (
            f"an idle keep-alive connection costs pipeparse {_num(top['kib_per_connection'])} "
            f"KiB of RSS at {_num(top['connections'])} connections"
        )
        if others:
            text += " (" + ", ".join(others) + ")"
        out.append(_line("connections", text))
    growing = _find(rows, measure="buffer growing")
    fixed = _find(rows, measure="buffer fixed 256K")
    if growing and fixed and growing.get("rps_vs_fixed") is not None:
        out.append(
            _line(
                "connections",
                f"receive buffers that grow on demand serve {_num(growing['rps'])} rps at depth "
                f"{growing['depth']} x {growing['connections']} connections, "
                f"{_times(growing['rps_vs_fixed'])} the fixed 256 KiB buffers' "
                f"{_num(fixed['rps'])} (`--fixed-buffer`)",
            )
        )
    return out


# -- seek ----------------------------------------------------------------------------------


def _seek_receiver(rows: Rows, key: str, what: str) -> list[Row]:
    rows = [r for r in rows if r.get(key) is not None]
    if not rows:
        return []
    best = max(rows, key=lambda r: r[key])
    losing = [r for r in rows if r[key] < 0]
    sizes = sorted({r["size"] for r in rows})
    lose_all = [s for s in sizes if all(r[key] < 0 for r in rows if r["size"] == s)]
    gain_all = [s for s in sizes if all(r[key] > 0 for r in rows if r["size"] == s)]
    if best[key] > 0:
        text = (
            f"{what}: at best {best[key]:.1f}% less receiver CPU than copying "
            f"(N={best['n']}, {_size(best['size'])})"
        )
    else:
        text = f"{what}: never cheaper than copying (closest: {best[key]:.1f}%)"
    text += f"; it loses at {len(losing)} of {len(rows)} points"
    if lose_all:
        text += ", at every N for " + ", ".join(_size(s) for s in lose_all)
    if gain_all:
        text += "; it gains at every N for " + ", ".join(_size(s) for s in gain_all)
    else:
        text += "; at no size does it gain at every N"
    return [_line("seek", text)]


def seek_findings(rows: Rows) -> list[Row]:
    """Each seeking receiver against the copying one: its best point and where it loses; and
    the most any reordering receiver could save (the in-order floor)."""
    out = _seek_receiver(rows, "reduction_pct", "user-space seeking (SeekableBuffer)")
    out += _seek_receiver(rows, "kernel_reduction_pct", "kernel seeking (KernelSeekableSocket)")
    floors = [r for r in rows if r.get("ceiling_pct") is not None]
    if floors:
        best = max(floors, key=lambda r: r["ceiling_pct"])
        out.append(
            _line(
                "seek",
                f"an in-order receiver (no reordering at all) costs at most "
                f"{best['ceiling_pct']:.1f}% less than copying (N={best['n']}, "
                f"{_size(best['size'])}): the most any user-space reordering could save here",
            )
        )
    return out


def parse_findings(rows: Rows) -> list[Row]:
    """pipeparse's framing against h11 and httptools, per workload: the range and its ends."""
    out: list[Row] = []
    for other in ("h11", "httptools"):
        ratios: list[tuple[float, str]] = []
        for workload in dict.fromkeys(r["workload"] for r in rows):
            pp = _find(rows, workload=workload, parser="pipeparse")
            them = _find(rows, workload=workload, parser=other)
            if pp and them:
                ratio = safe_ratio(pp["requests_per_s"], them["requests_per_s"])
                if ratio is not None:
                    ratios.append((ratio, workload))
        if ratios:
            low, high = min(ratios), max(ratios)
            out.append(
                _line(
                    "parse",
                    f"pipeparse frames {_times(low[0])} ({low[1]}) to {_times(high[0])} "
                    f"({high[1]}) as many requests per second as {other}",
                )
            )
    return out


Finder = Callable[[Rows], list[Row]]
FINDERS: dict[str, Finder] = {
    "server": server_findings,
    "wall": wall_findings,
    "batching": batching_findings,
    "connections": connections_findings,
    "seek": seek_findings,
    "parse": parse_findings,
}


def findings(sections: Mapping[str, Rows], skipped: Mapping[str, str] | None = None) -> list[Row]:
    """The run's findings, ``{"section", "finding"}`` each, section by section; a skipped
    section gives one line saying why it has none."""
    out: list[Row] = []
    skipped = skipped or {}
    for name, finder in FINDERS.items():
        if name in skipped:
            out.append(_line(name, f"not measured in this run ({skipped[name]})"))
        elif sections.get(name):
            out += finder(sections[name])
    return out


def format_findings(found: Sequence[Mapping[str, Any]]) -> str:
    """The findings as a Markdown list, one line each: ``- section: finding``."""
    return "\n".join(f"- {f['section']}: {f['finding']}" for f in found)
