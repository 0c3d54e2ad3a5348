"""Tests of `pipeparse bench`'s pure parts: rows, medians, arguments, and the seek receivers.

No timing is asserted anywhere: speed claims belong to the bench itself. Server runs are
replaced by fakes; the one real socket test (the seek sender) checks bytes and order only.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import random
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pipeparse import cli
from pipeparse.clients.bench import main as bench
from pipeparse.clients.bench import peers as bench_servers
from pipeparse.clients.bench import plot as bench_plot
from pipeparse.clients.bench import server as bench_server
from pipeparse.clients.bench.peers import ServerSpec, parse_listening_line, server_command
from pipeparse.clients.bench.procs import machine_info, python_module, split_cpus
from pipeparse.clients.bench.report import PlainProgress, format_table, write_results
from pipeparse.clients.bench.seek import (
    InOrderReceiver,
    SeekSettings,
    copy_receive,
    delivery_order,
    kernel_seeking_unavailable,
    make_message,
    measure_connection,
    receive_with,
    seek_receive,
    seek_row,
    sender_process,
)
from pipeparse.clients.bench.server import (
    LoadShape,
    ServerSettings,
    batching_flags,
    rotated,
    side_by_side,
    summarize_runs,
)
from pipeparse.clients.bench.stats import Row, median, median_of, reduction_pct, safe_ratio

# -- medians -------------------------------------------------------------------------------


def test_median_odd_even_and_empty() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4, 1, 3, 2]) == 2.5
    assert median_of([{"x": 5}, {"x": 1}, {"x": 3}], "x") == 3.0
    with pytest.raises(ValueError, match="no values"):
        median([])


def test_reduction_and_ratio() -> None:
    assert reduction_pct(10.0, 6.0) == pytest.approx(40.0)
    assert reduction_pct(10.0, 15.0) == pytest.approx(-50.0)
    with pytest.raises(ValueError):
        reduction_pct(0.0, 1.0)
    assert safe_ratio(30.0, 1.5) == 20.0
    assert safe_ratio(1.0, 0.0) is None


# -- the seek receivers --------------------------------------------------------------------


class ChunkedSocket:
    """A socket stand-in: hands out `data` in random chunk sizes (fixed seed)."""

    def __init__(self, data: bytes, seed: int, max_chunk: int) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._rng = random.Random(seed)
        self._max = max_chunk

    def recv_into(self, buffer: memoryview, nbytes: int = 0, /) -> int:
        want = min(nbytes or len(buffer), self._rng.randint(1, self._max))
        k = min(want, len(self._data) - self._pos)
        buffer[:k] = self._data[self._pos : self._pos + k]
        self._pos += k
        return k


def _stream(count: int, size: int) -> bytes:
    return b"".join(make_message(i, size) for i in range(count))


def test_delivery_order_groups_of_n_plus_one() -> None:
    assert delivery_order(7, 2) == [2, 0, 1, 5, 3, 4, 6]
    assert delivery_order(4, 16) == [3, 0, 1, 2]
    assert sorted(delivery_order(1000, 16)) == list(range(1000))


def test_make_message_carries_its_sequence_number() -> None:
    m = make_message(258, 10)
    assert len(m) == 10
    assert int.from_bytes(m[:8], "big") == 258
    assert make_message(1, 4096) != make_message(2, 4096)


@pytest.mark.parametrize("n", [2, 4, 16])
@pytest.mark.parametrize("size", [10, 100, 1460, 5000])
@pytest.mark.parametrize("count", [1, 50, 103])
def test_receivers_deliver_the_same_messages_in_the_same_order(
    n: int, size: int, count: int
) -> None:
    data = _stream(count, size)
    expected = [make_message(i, size) for i in delivery_order(count, n)]
    for name, receiver in (("copy", copy_receive), ("seek", seek_receive)):
        for seed, max_chunk in ((1, size // 3 + 1), (2, 3000), (3, 1 << 20)):
            got: list[bytes] = []

            def keep(m: memoryview, got: list[bytes] = got) -> None:
                got.append(bytes(m))

            receiver(ChunkedSocket(data, seed, max_chunk), count, size, n, keep, chunk=4096)
            assert got == expected, (name, seed)


@pytest.mark.parametrize("receiver", [copy_receive, seek_receive])
def test_receivers_compact_a_small_buffer_without_losing_bytes(receiver: Any) -> None:
    count, size, n = 200, 100, 4
    data = _stream(count, size)
    got: list[bytes] = []
    receiver(
        ChunkedSocket(data, 9, 333),
        count,
        size,
        n,
        lambda m: got.append(bytes(m)),
        capacity=600,
        chunk=256,
    )
    assert got == [make_message(i, size) for i in delivery_order(count, n)]


@pytest.mark.parametrize("receiver", [copy_receive, seek_receive])
def test_receivers_report_a_short_stream(receiver: Any) -> None:
    data = _stream(10, 100)[:-1]
    with pytest.raises(EOFError):
        receiver(ChunkedSocket(data, 4, 500), 10, 100, 2, lambda m: None)


def test_seek_receiver_needs_room_for_a_group() -> None:
    with pytest.raises(ValueError, match="cannot hold"):
        seek_receive(ChunkedSocket(b"", 0, 1), 10, 100, 4, lambda m: None, capacity=400)


def test_in_order_receiver_delivers_the_stream_as_sent() -> None:
    data = _stream(37, 300)
    got: list[bytes] = []
    InOrderReceiver(4, 300, capacity=1000, chunk=512).receive(
        ChunkedSocket(data, 5, 700), 37, lambda m: got.append(bytes(m))
    )
    assert got == [make_message(i, 300) for i in range(37)]


def test_receivers_over_loopback_from_the_sender_process() -> None:
    receivers = ["copy", "seek", "inorder"]
    if kernel_seeking_unavailable() is None:
        receivers.append("kernel")
    with sender_process(None) as port:
        for receiver in receivers:
            for size in (10, 1000, 65536):
                # (measure_connection checks the delivery order)
                cpu = measure_connection(port, receiver, 103, size, 4)
                assert cpu >= 0.0


def test_kernel_receiver_needs_a_socket() -> None:
    with pytest.raises(TypeError, match="kernel seeking needs a socket"):
        receive_with("kernel", ChunkedSocket(b"", 0, 1), 1, 100, 2, lambda m: None)


def test_seek_row_shape_and_medians() -> None:
    row = seek_row(4, 1460, [2.0, 1.0, 3.0], [1.5, 1.0, 1.2])
    assert row == {
        "n": 4,
        "size": 1460,
        "copy_cpu_s": 2.0,
        "seek_cpu_s": 1.2,
        "reduction_pct": 40.0,
    }
    with_floor = seek_row(4, 1460, [2.0], [1.2], [1.5, 1.6, 1.4])
    assert with_floor["inorder_cpu_s"] == 1.5 and with_floor["ceiling_pct"] == 25.0
    assert "kernel_cpu_s" not in with_floor
    with_kernel = seek_row(4, 1460, [2.0], [1.2], None, [0.9, 1.0, 5.0])
    assert with_kernel["kernel_cpu_s"] == 1.0 and with_kernel["kernel_reduction_pct"] == 50.0


def test_seek_settings_validate() -> None:
    assert SeekSettings().messages == 1000
    assert SeekSettings.quick().connections < SeekSettings().connections
    with pytest.raises(ValueError, match="at least 8"):
        SeekSettings(sizes=(4,))
    with pytest.raises(ValueError, match="runs"):
        SeekSettings(runs=0)


# -- servers and loads ---------------------------------------------------------------------


def test_parse_listening_line() -> None:
    line = (
        "pipeparse: listening on http://127.0.0.1:40123 (engine h11, interface asgi, workers 1)\n"
    )
    assert parse_listening_line(line) == ("127.0.0.1", 40123)
    with pytest.raises(ValueError, match="listening"):
        parse_listening_line("Traceback (most recent call last):")


def test_processes_started_from_a_source_tree_import_the_installed_package(tmp_path: Path) -> None:
    """A bench run from a clone serves the installed pipeparse (a compiled build, say), not the
    source tree in the working directory."""
    fake = tmp_path / "pipeparse"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise SystemExit('the source tree was imported')\n")
    (fake / "cli.py").write_text("raise SystemExit('the source tree was imported')\n")
    done = subprocess.run(
        [*python_module("pipeparse.cli"), "--version"], cwd=tmp_path, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "source tree" not in done.stdout + done.stderr
    assert server_command(ServerSpec("pipeparse", "native"))[:4] == python_module("pipeparse.cli")


def test_server_specs_and_commands() -> None:
    cmd = server_command(ServerSpec("h11", "asgi", extra=("--flush", "each")), 0)
    assert cmd[cmd.index("serve") + 1 :] == [
        "echo",
        "--engine",
        "h11",
        "--interface",
        "asgi",
        "--port",
        "0",
        "--flush",
        "each",
    ]
    assert "pipeparse.servers.apps:echo" in server_command(ServerSpec("uvicorn", "asgi"), 8000)
    with pytest.raises(ValueError, match="asgi interface only"):
        ServerSpec("uvicorn", "native")
    with pytest.raises(ValueError, match="unknown engine"):
        ServerSpec("nginx")


def test_uvicorn_is_measured_with_httptools_and_uvloop() -> None:
    cmd = server_command(ServerSpec("uvicorn", "asgi", "plaintext"), 8000)
    assert cmd[1:5] == ["-P", "-m", "uvicorn", "pipeparse.servers.apps:plaintext"]
    assert cmd[cmd.index("--http") + 1] == "httptools"
    assert cmd[cmd.index("--loop") + 1] == "uvloop"
    assert cmd[cmd.index("--port") + 1] == "8000"


@pytest.mark.parametrize("engine", ["granian", "granian-flush"])
def test_granian_serves_the_asgi_app_over_http1_with_one_worker(engine: str) -> None:
    cmd = server_command(ServerSpec(engine, "asgi"), 8001)
    assert cmd[1:4] == ["-P", "-m", "granian"]
    assert cmd[-1] == "pipeparse.servers.apps:echo"
    assert cmd[cmd.index("--interface") + 1] == "asgi"
    assert cmd[cmd.index("--http") + 1] == "1"
    assert cmd[cmd.index("--workers") + 1] == "1"
    assert cmd[cmd.index("--port") + 1] == "8001"
    assert ("--http1-pipeline-flush" in cmd) == (engine == "granian-flush")
    with pytest.raises(ValueError, match="asgi interface only"):
        ServerSpec(engine, "native")


def test_a_peer_runs_only_with_all_it_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    present = {"uvicorn", "httptools", "granian"}  # no uvloop, no hypercorn
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: object() if name in present else None
    )
    assert bench_servers.missing_modules("uvicorn") == ["uvloop"]
    assert bench_servers.installed_peers() == ["granian", "granian-flush"]
    full = ServerSettings.full(peers=True)
    assert full.peers == ("granian", "granian-flush")
    assert ServerSettings.full(peers=False).peers == ()


def test_batching_flags() -> None:
    assert batching_flags("adaptive", "adaptive") == ()
    assert batching_flags(4096, "each") == ("--recv-size", "4096", "--flush", "each")
    with pytest.raises(ValueError):
        batching_flags(0, "adaptive")
    with pytest.raises(ValueError):
        batching_flags("adaptive", "sometimes")


def test_rotated_gives_every_position() -> None:
    assert rotated([1, 2, 3], 0) == [1, 2, 3]
    assert rotated([1, 2, 3], 1) == [2, 3, 1]
    assert rotated([1, 2, 3], 5) == [3, 1, 2]


def test_summarize_runs_takes_medians() -> None:
    runs = [
        {"rps": 100.0, "p50_ms": 1.0, "p99_ms": 9.0},
        {"rps": 300.0, "p50_ms": 3.0, "p99_ms": 5.0},
        {"rps": 200.0, "p50_ms": 2.0, "p99_ms": 7.0},
    ]
    assert summarize_runs(runs) == {"rps": 200.0, "p50_ms": 2.0, "p99_ms": 7.0}


class FakeServer:
    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec

    def url(self, path: str = "/") -> str:
        return f"http://{self.spec.engine}.{self.spec.interface}{path}"


def test_side_by_side_alternates_and_reports_errors() -> None:
    servers = [FakeServer(ServerSpec("pipeparse")), FakeServer(ServerSpec("h11"))]
    calls: list[str] = []
    rps = {"pipeparse": [1000.0, 3000.0, 2000.0], "h11": [10.0, 30.0, 20.0]}

    def measure(url: str, shape: LoadShape, settings: ServerSettings) -> Row:
        engine = url.split("//")[1].split(".")[0]
        calls.append(engine)
        value = rps[engine][sum(1 for c in calls if c == engine) - 1]
        return {
            "rps": value,
            "p50_ms": 1.0,
            "p99_ms": 2.0,
            "requests": 5,
            "errors": 1,
            "error_kinds": "unanswered 1",
        }

    warnings: list[str] = []
    out = side_by_side(
        servers,  # type: ignore[arg-type]
        LoadShape("/", 4, 16),
        ServerSettings(repeats=3),
        warnings,
        measure,
    )
    assert calls == ["pipeparse", "h11", "h11", "pipeparse", "pipeparse", "h11"]
    assert out[ServerSpec("pipeparse")]["rps"] == 2000.0
    assert out[ServerSpec("h11")]["rps"] == 20.0
    assert len(warnings) == 6 and "1 errors (unanswered 1) in 5 requests" in warnings[0]


def test_runs_without_latency_give_none_not_zero() -> None:
    runs: list[Row] = [
        {"rps": 0.0, "p50_ms": None, "p99_ms": None},
        {"rps": 10.0, "p50_ms": 4.0, "p99_ms": 8.0},
        {"rps": 20.0, "p50_ms": 2.0, "p99_ms": 6.0},
    ]
    assert summarize_runs(runs) == {"rps": 10.0, "p50_ms": 3.0, "p99_ms": 7.0}
    assert summarize_runs(runs[:1]) == {"rps": 0.0, "p50_ms": None, "p99_ms": None}


@pytest.fixture
def fake_servers(monkeypatch: pytest.MonkeyPatch) -> list[ServerSpec]:
    """Replace server processes and load runs: rps is 100 for pipeparse, 5 for the rest."""
    started: list[ServerSpec] = []

    @contextlib.contextmanager
    def running(specs: list[ServerSpec], cpus: Any = None) -> Iterator[dict[ServerSpec, Any]]:
        started.extend(specs)
        yield {s: FakeServer(s) for s in specs}

    def measure(url: str, shape: LoadShape, settings: ServerSettings) -> dict[str, float]:
        value = 100.0 if "pipeparse" in url else 5.0
        return {"rps": value, "p50_ms": 1.0, "p99_ms": 2.0, "requests": 10, "errors": 0}

    monkeypatch.setattr(bench_server, "running_servers", running)
    monkeypatch.setattr(bench_server, "measure_once", measure)
    return started


SERVER_KEYS = {
    "engine",
    "loop",
    "interface",
    "handler",
    "depth",
    "connections",
    "rps",
    "p50_ms",
    "p99_ms",
}


def test_server_section_rows(fake_servers: list[ServerSpec]) -> None:
    settings = ServerSettings(repeats=1, peers=("uvicorn",), loops=("uvloop",))
    rows = bench_server.run_server_bench(settings, [])
    assert all(set(r) == SERVER_KEYS for r in rows)
    assert {r["handler"] for r in rows} == {"instant", "sleep1ms", "sleep10ms"}
    assert {r["depth"] for r in rows} == {1, 4, 16}
    assert {(r["engine"], r["loop"], r["interface"]) for r in rows} == {
        ("pipeparse", "trio", "native"),
        ("h11", "trio", "native"),
        ("pipeparse", "trio", "asgi"),
        ("h11", "trio", "asgi"),
        ("pipeparse", "uvloop", "native"),
        ("pipeparse", "uvloop", "asgi"),
        ("uvicorn", "uvloop", "asgi"),
    }
    assert len(rows) == 3 * 3 * 7
    assert ("--loop", "uvloop") in {s.extra for s in fake_servers}


def test_quick_server_grid_keeps_the_targets(fake_servers: list[ServerSpec]) -> None:
    rows = bench_server.run_server_bench(ServerSettings.quick(), [])
    for handler, depth in (("instant", 1), ("sleep10ms", 1)):
        for interface in ("native", "asgi"):
            engines = {
                r["engine"]
                for r in rows
                if r["handler"] == handler and r["depth"] == depth and r["interface"] == interface
            }
            assert engines == ({"pipeparse", "h11"} if handler == "instant" else set())
    for handler in ("instant", "sleep10ms"):
        for interface in ("native", "asgi"):
            engines = {
                r["engine"]
                for r in rows
                if r["handler"] == handler and r["depth"] == 16 and r["interface"] == interface
            }
            assert engines == {"pipeparse", "h11"}


def test_server_rows_with_every_peer(fake_servers: list[ServerSpec]) -> None:
    peers = ("uvicorn", "hypercorn", "granian", "granian-flush")
    settings = replace(ServerSettings.quick(), repeats=1, peers=peers)
    rows = bench_server.run_server_bench(settings, [])
    for depth in (1, 16):
        asgi = {
            r["engine"]
            for r in rows
            if r["handler"] == "instant" and r["depth"] == depth and r["interface"] == "asgi"
        }
        assert asgi == {"pipeparse", "h11", *peers}
    native = {r["engine"] for r in rows if r["interface"] == "native"}
    assert native == {"pipeparse", "h11"}  # peers serve ASGI only
    assert {s.engine for s in fake_servers} == {"pipeparse", "h11", *peers}


def test_a_grid_with_an_unknown_handler_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown handler 'bogus'"):
        ServerSettings(grid=(("bogus", 1),))


def test_wall_and_batching_rows(fake_servers: list[ServerSpec]) -> None:
    settings = ServerSettings(repeats=1)
    wall = bench_server.run_wall_bench(settings, [])
    assert all(set(r) == {"engine", "connections", "rps", "p50_ms", "p99_ms"} for r in wall)
    assert sorted({r["connections"] for r in wall}) == [1, 2, 4, 8, 16, 32, 64]
    batching = bench_server.run_batching_bench(settings, [])
    assert len(batching) == len(settings.batching_configs) * len(settings.batching_depths)
    assert batching[0]["recv_size"] == "adaptive" and batching[0]["rps_vs_adaptive"] == 1.0
    assert {r["flush"] for r in batching} == {"adaptive", "each"}
    assert ("--recv-size", "4096") in {s.extra[:2] for s in fake_servers if s.extra}


# -- arguments, tables, results ------------------------------------------------------------


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(argv)


def test_arguments_defaults_and_choices() -> None:
    args = _parse([])
    assert (args.quick, args.out, args.only, args.connections) == (False, "bench-out", None, 1)
    args = _parse(["--quick", "--out", "x", "--only", "seek", "wall"])
    assert (args.quick, args.out, args.only) == (True, "x", ["seek", "wall"])
    for bad in (["--only", "nope"], ["--repeats", "0"], ["--duration", "-1"]):
        with pytest.raises(SystemExit):
            _parse(bad)


def test_settings_follow_the_flags() -> None:
    quick = bench.server_settings(_parse(["--quick"]))
    assert quick.peers == () and quick.duration < ServerSettings().duration
    custom = bench.server_settings(_parse(["--repeats", "7", "--duration", "2.5"]))
    assert (custom.repeats, custom.duration) == (7, 2.5)
    assert bench.seek_settings(_parse(["--quick", "--repeats", "9"])).runs == 9


def test_the_pipeparse_command_has_bench() -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--only", "bogus"])
    assert exc.value.code == 2


def test_format_table_is_markdown() -> None:
    text = format_table([{"engine": "h11", "rps": 1234.5, "p99_ms": 0.5, "x": None}])
    lines = text.splitlines()
    assert lines[0].split("|")[1].strip() == "engine"
    assert "1,234" in lines[2] or "1,235" in lines[2]
    assert lines[1].startswith("|---") and "-" in lines[2]
    assert format_table([]) == "(no rows)"


def test_plain_progress_lines() -> None:
    import io

    out = io.StringIO()
    p = PlainProgress(out)
    p.start("seek", 2)
    p.step("n=2 size=10")
    p.finish()
    text = out.getvalue()
    assert "seek: 2 steps" in text and "[1/2] n=2 size=10" in text and "done" in text


def test_write_results_shape(tmp_path: Path) -> None:
    path = tmp_path / "out" / "results.json"
    write_results(path, machine_info(), {"seek": [{"n": 2}]}, {"quick": True}, {"parse": "no"})
    doc = json.loads(path.read_text())
    assert doc["sections"] == {"seek": [{"n": 2}]}
    assert {"cpu", "cores", "python", "date"} <= set(doc["machine"])
    assert doc["skipped"] == {"parse": "no"}


def test_split_cpus() -> None:
    assert split_cpus([0, 1]) == ({0}, {1})
    assert split_cpus([3]) == ({3}, {3})
    assert split_cpus([0, 1, 2, 3]) == ({0}, {1, 2, 3})


def _server_row(engine: str, handler: str, rps: float) -> dict[str, Any]:
    return {"engine": engine, "interface": "native", "handler": handler, "depth": 16, "rps": rps}


def test_run_writes_results_and_reports_skips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fake_seek(args: argparse.Namespace, progress: Any, warnings: list[str]) -> list[Row]:
        progress.start("seek", 1)
        progress.step("n=2")
        return [seek_row(2, 65536, [2.0], [1.0])]

    def unavailable(args: argparse.Namespace, progress: Any, warnings: list[str]) -> list[Row]:
        raise bench.SectionUnavailable("not here")

    monkeypatch.setitem(bench.RUNNERS, "seek", fake_seek)
    monkeypatch.setitem(bench.RUNNERS, "parse", unavailable)
    code = bench.run(_parse(["--out", str(tmp_path), "--only", "seek", "parse", "--no-plots"]))
    assert code == 1
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["sections"]["seek"][0]["reduction_pct"] == 50.0
    assert doc["skipped"] == {"parse": "not here"}
    assert doc["findings"] == [
        {"section": "seek", "finding": doc["findings"][0]["finding"]},
        {"section": "parse", "finding": "not measured in this run (not here)"},
    ]
    assert (
        "user-space seeking (SeekableBuffer): at best 50.0% less" in doc["findings"][0]["finding"]
    )
    assert "targets" not in doc
    out = capsys.readouterr().out
    assert "reduction_pct" in out
    findings = out.split("## findings\n\n", 1)[1]
    assert findings.startswith("- seek: user-space seeking (SeekableBuffer): at best 50.0% less")
    assert "- parse: not measured in this run (not here)" in findings
    assert "met" not in findings and "## targets" not in out


@pytest.mark.skipif(not bench_plot.have_matplotlib(), reason="matplotlib (the plot extra)")
def test_plots_are_written(tmp_path: Path) -> None:
    sections = {
        "seek": [seek_row(n, s, [2.0], [1.0]) for n in (2, 16) for s in (10, 65536)],
        "wall": [
            {"engine": e, "connections": c, "rps": 100.0 * c, "p50_ms": 1.0, "p99_ms": 2.0 * c}
            for e in ("pipeparse", "h11")
            for c in (1, 2)
        ],
        "server": [
            {**_server_row(e, h, 10.0), "connections": 4, "p50_ms": 1.0, "p99_ms": 2.0}
            for e in ("pipeparse", "h11")
            for h in ("instant", "sleep10ms")
        ],
    }
    written = bench_plot.plot_all(sections, tmp_path)
    assert sorted(p.name for p in written) == ["seek.png", "server.png", "wall.png"]
    for p in written:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- connections ---------------------------------------------------------------------------


def test_connections_section_rows(
    fake_servers: list[ServerSpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every server's RSS at every count, then growing against fixed buffers side by side."""
    from pipeparse.clients.bench import connections as bench_connections

    @contextlib.contextmanager
    def running(specs: list[ServerSpec], cpus: Any = None) -> Iterator[dict[ServerSpec, Any]]:
        fake_servers.extend(specs)
        servers = {}
        for s in specs:
            server: Any = FakeServer(s)
            server.port, server.proc = 1, argparse.Namespace(pid=2)
            servers[s] = server
        yield servers

    def rss(host: str, port: int, pid: int, counts: list[int]) -> Iterator[tuple[int, int, float]]:
        for c in counts:
            yield c, 10 * 2**20 + c * 8 * 1024, 8 * 1024.0

    monkeypatch.setattr(bench_connections, "running_servers", running)
    monkeypatch.setattr(bench_connections, "rss_per_connection", rss)
    monkeypatch.setattr(bench_connections, "LOOPS", ("asyncio",))
    settings = bench_connections.ConnectionSettings(counts=(100, 200), peers=("uvicorn",))
    rows = bench_connections.run_connections_bench(settings, ServerSettings(repeats=1), [])
    idle = [(r["server"], r["connections"], r["kib_per_connection"]) for r in rows[:6]]
    assert idle == [
        ("pipeparse", 100, 8.0),
        ("pipeparse", 200, 8.0),
        ("pipeparse/asyncio", 100, 8.0),
        ("pipeparse/asyncio", 200, 8.0),
        ("uvicorn", 100, 8.0),
        ("uvicorn", 200, 8.0),
    ]
    assert fake_servers[1].extra[-2:] == ("--loop", "asyncio")
    growing, fixed = rows[6:]
    assert (growing["measure"], fixed["measure"]) == ("buffer growing", "buffer fixed 256K")
    assert growing["depth"] == 16 and growing["connections"] == 64
    assert growing["rps_vs_fixed"] == 1.0 and fixed["rps_vs_fixed"] == 1.0
    extras = {s.engine: s.extra for s in fake_servers}
    assert "--timeout-keep-alive" in extras["uvicorn"]
    assert any(s.extra == ("--fixed-buffer",) for s in fake_servers)


def test_quick_connections_stay_small() -> None:
    from pipeparse.clients.bench.connections import ConnectionSettings

    quick = bench.connection_settings(_parse(["--quick"]))
    assert max(quick.counts) <= 1000 and quick.peers == ()
    assert ConnectionSettings.full(peers=False).counts == (1000, 5000, 10000)


@pytest.mark.skipif(not bench_plot.have_matplotlib(), reason="matplotlib (the plot extra)")
def test_connections_plot_is_written(tmp_path: Path) -> None:
    rows = [
        {"measure": "idle rss", "server": s, "connections": c, "rss_mib": 10.0 + c / 100}
        for s in ("pipeparse", "uvicorn")
        for c in (100, 200)
    ] + [{"measure": f"buffer {b}", "server": "pipeparse", "rps": 10.0} for b in ("growing", "x")]
    written = bench_plot.plot_all({"connections": rows}, tmp_path)
    assert [p.name for p in written] == ["connections.png"]
    assert written[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
