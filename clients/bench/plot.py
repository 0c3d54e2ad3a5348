"""PNG plots of the bench's rows (matplotlib, the `plot` extra; skipped when it's missing).

Strategy: one function per figure, each taking a section's rows exactly as `results.json` holds
them, so a plot can be redrawn from a saved file. The Agg backend is selected before pyplot is
imported: no display is needed.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeparse.clients.bench.peers import server_label

__all__ = ["have_matplotlib", "plot_all"]

Rows = Sequence[Mapping[str, Any]]


def have_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_seek(rows: Rows, path: Path) -> Path:
    """Reduction % against message size (log x), one curve per N: the paper's Figure 3.

    One panel per seeking receiver (user space; the kernel's queue, when measured), each
    against the copying receiver, with the ceiling (dashed) that no reordering receiver passes.
    """
    plt = _pyplot()
    panels = [("reduction_pct", "user-space seeking (SeekableBuffer)")]
    if any("kernel_reduction_pct" in r for r in rows):
        panels.append(("kernel_reduction_pct", "kernel seeking (SO_PEEK_OFF, MSG_TRUNC)"))
    fig, axes = plt.subplots(
        1, len(panels), figsize=(7 * len(panels), 4.5), sharey=True, squeeze=False
    )
    for ax, (key, title) in zip(axes[0], panels, strict=True):
        ceiling_label = "dashed: ceiling, if reordering were free (copy vs in-order floor)"
        for n in sorted({r["n"] for r in rows}):
            pts = sorted((r["size"], r[key]) for r in rows if r["n"] == n and key in r)
            (line,) = ax.plot(
                [p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"N = {n}"
            )
            ceiling = sorted(
                (r["size"], r["ceiling_pct"]) for r in rows if r["n"] == n and "ceiling_pct" in r
            )
            if ceiling:
                ax.plot(
                    [p[0] for p in ceiling],
                    [p[1] for p in ceiling],
                    linestyle="--",
                    linewidth=0.9,
                    color=line.get_color(),
                    alpha=0.6,
                    label=ceiling_label,
                )
                ceiling_label = "_nolegend_"
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("message size (bytes, log scale)")
        ax.set_title(f"{title} vs copying (below 0: seeking costs more)", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("receiver CPU time reduced by seeking (%)")
    return _save(plt, fig, path)


def plot_wall(rows: Rows, path: Path) -> Path:
    """p99 latency against throughput, one curve per engine, points labelled by connections."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for engine in dict.fromkeys(r["engine"] for r in rows):
        pts = sorted(
            (r["connections"], r["rps"], r["p99_ms"])
            for r in rows
            if r["engine"] == engine and r["p99_ms"] is not None
        )
        ax.plot([p[1] for p in pts], [p[2] for p in pts], marker="o", label=engine)
        for c, x, y in pts:
            ax.annotate(str(c), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
    ax.set_yscale("log")
    ax.set_xlabel("throughput (requests/s)")
    ax.set_ylabel("p99 latency (ms, log scale)")
    ax.set_title("wall: depth 16, instant handler, ASGI; point labels: connections")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return _save(plt, fig, path)


def _grouped_bars(
    ax: Any, groups: list[str], series: dict[str, list[float]], ylabel: str, log: bool
) -> None:
    n = max(len(series), 1)
    width = 0.8 / n
    for i, (name, values) in enumerate(series.items()):
        xs = [g + (i - (n - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, values, width, label=name)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)


def _server_name(row: Mapping[str, Any]) -> str:
    """One bar per server: pipeparse on each loop apart (`peers.server_label`)."""
    return server_label(str(row["engine"]), str(row.get("loop", "trio")))


def plot_server(rows: Rows, path: Path) -> Path:
    """Requests/s per engine for each (interface, handler, depth), log scale."""
    plt = _pyplot()
    groups = list(dict.fromkeys(f"{r['interface']} {r['handler']} d{r['depth']}" for r in rows))
    engines = list(dict.fromkeys(_server_name(r) for r in rows))
    table = {(_server_name(r), f"{r['interface']} {r['handler']} d{r['depth']}"): r for r in rows}
    series = {
        e: [float(table[(e, g)]["rps"]) if (e, g) in table else 0.0 for g in groups]
        for e in engines
    }
    fig, ax = plt.subplots(figsize=(max(7, 0.55 * len(groups) + 2), 4.5))
    _grouped_bars(ax, groups, series, "requests/s (log scale)", log=True)
    ax.set_title("server: requests/s by engine")
    return _save(plt, fig, path)


def plot_parse(rows: Rows, path: Path) -> Path:
    """Requests/s per parser for each workload, log scale."""
    plt = _pyplot()
    groups = list(dict.fromkeys(str(r["workload"]) for r in rows))
    parsers = list(dict.fromkeys(str(r["parser"]) for r in rows))
    table = {(str(r["parser"]), str(r["workload"])): r for r in rows}
    series = {
        p: [float(table[(p, g)]["requests_per_s"]) if (p, g) in table else 0.0 for g in groups]
        for p in parsers
    }
    fig, ax = plt.subplots(figsize=(7, 4.5))
    _grouped_bars(ax, groups, series, "requests/s (log scale)", log=True)
    ax.set_title("parse: framing and parsing of pipelined streams")
    return _save(plt, fig, path)


def plot_connections(rows: Rows, path: Path) -> Path:
    """Left: server RSS against idle keep-alive connections, per server. Right: depth-16
    requests/s with growing receive buffers and with the fixed 256 KiB buffer."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    servers = dict.fromkeys(r["server"] for r in rows if r["measure"] == "idle rss")
    for server in servers:
        pts = sorted(
            (r["connections"], r["rss_mib"])
            for r in rows
            if r["measure"] == "idle rss" and r["server"] == server
        )
        left.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=server)
    left.set_xlabel("idle keep-alive connections")
    left.set_ylabel("server RSS (MiB)")
    left.set_title("connections: RSS against idle connections")
    left.grid(True, alpha=0.3)
    if servers:
        left.legend()
    bars = [r for r in rows if r["measure"].startswith("buffer ") and r["rps"] is not None]
    right.bar([r["measure"].removeprefix("buffer ") for r in bars], [r["rps"] for r in bars])
    right.set_ylabel("requests/s")
    right.set_title("depth 16, 64 connections: receive buffers")
    right.grid(True, axis="y", alpha=0.3)
    return _save(plt, fig, path)


_PLOTS = {
    "parse": plot_parse,
    "seek": plot_seek,
    "server": plot_server,
    "wall": plot_wall,
    "connections": plot_connections,
}


def plot_all(sections: Mapping[str, Rows], out: Path) -> list[Path]:
    """Every plot whose section has rows; returns the files written."""
    written: list[Path] = []
    for name, fn in _PLOTS.items():
        rows = sections.get(name)
        if rows:
            written.append(fn(rows, out / f"{name}.png"))
    return written
