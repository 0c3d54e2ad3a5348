"""Tests of `pipeparse.clients.crosscheck.wrk_servers`' pure parts: arguments, wrk's output,
commands, the round
order, medians and targets.

Nothing here runs wrk or a server, and no timing is asserted: measurements are replaced by
fakes returning given numbers.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from pipeparse.clients.bench.peers import ServerSpec, server_command
from pipeparse.clients.crosscheck import wrk_matrix
from pipeparse.clients.crosscheck import wrk_servers as ws
from pipeparse.clients.crosscheck.wrk_servers import (
    MATRICES,
    Contender,
    Matrix,
    WrkRun,
    evaluate_targets,
    medians,
    parse_args,
    parse_wrk_output,
    round_order,
    wrk_command,
)

CLEAN = """\
Running 3s test @ http://127.0.0.1:40000/plaintext
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    10.21ms    3.02ms  40.11ms   80.00%
    Req/Sec    95.12k     5.01k  101.00k    70.00%
  284512 requests in 3.00s, 35.00MB read
Requests/sec:  94837.33
Transfer/sec:     11.67MB
"""

ERRORS = """\
Running 3s test @ http://127.0.0.1:40000/plaintext
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    10.21ms    3.02ms  40.11ms   80.00%
    Req/Sec    95.12k     5.01k  101.00k    70.00%
  300000 requests in 3.00s, 35.00MB read
  Socket errors: connect 0, read 12, write 3, timeout 7
  Non-2xx or 3xx responses: 299000
Requests/sec: 100000.00
Transfer/sec:     11.67MB
"""


def _plaintext() -> Matrix:
    return next(m for m in MATRICES if m.name == "plaintext")


def _sleep() -> Matrix:
    return next(m for m in MATRICES if m.name == "sleep")


def _runs(*rps: float | None) -> list[WrkRun]:
    return [WrkRun(rps=r) if r is not None else WrkRun(error="failed") for r in rps]


# -- arguments ---------------------------------------------------------------------------------


def test_defaults() -> None:
    a = parse_args([])
    assert (a.rounds, a.duration, a.json) == (3, 5, False)
    assert a.only == ["plaintext", "plaintext-depth1", "sleep"]


def test_arguments() -> None:
    a = parse_args(["--rounds", "1", "--duration", "3", "--json", "--only", "sleep"])
    assert (a.rounds, a.duration, a.json, a.only) == (1, 3, True, ["sleep"])
    assert parse_args(["--only", "plaintext", "sleep"]).only == ["plaintext", "sleep"]
    assert parse_args(["--only", "sleep", "--only", "plaintext"]).only == ["sleep", "plaintext"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--rounds", "0"],
        ["--duration", "0"],
        ["--duration", "2.5"],
        ["--only", "nginx"],
        ["--only"],
    ],
)
def test_bad_arguments(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


# -- wrk's output ------------------------------------------------------------------------------


def test_parse_clean_output() -> None:
    run = parse_wrk_output(CLEAN)
    assert run.rps == 94837.33
    assert run.requests == 284512
    assert run.non_2xx == 0
    assert run.socket_errors == {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    assert run.clean
    assert run.problems() == ""


def test_parse_errors() -> None:
    run = parse_wrk_output(ERRORS)
    assert run.rps == 100000.0
    assert run.non_2xx == 299000
    assert run.socket_errors == {"connect": 0, "read": 12, "write": 3, "timeout": 7}
    assert not run.clean
    assert run.problems() == (
        "299000 non-2xx/3xx responses; socket errors read 12, write 3, timeout 7"
    )


def test_non_2xx_alone_is_not_clean() -> None:
    run = parse_wrk_output(
        CLEAN.replace("Requests/sec", "  Non-2xx or 3xx responses: 1\nRequests/sec")
    )
    assert run.non_2xx == 1
    assert not run.clean


def test_socket_errors_alone_are_not_clean() -> None:
    text = CLEAN.replace(
        "Requests/sec", "  Socket errors: connect 5, read 0, write 0, timeout 0\nRequests/sec"
    )
    run = parse_wrk_output(text)
    assert run.socket_errors["connect"] == 5
    assert not run.clean


def test_unreadable_output() -> None:
    run = parse_wrk_output("unable to connect to 127.0.0.1:1 Connection refused\n")
    assert run.rps is None
    assert not run.clean
    assert run.error is not None and "Connection refused" in run.error


# -- commands ----------------------------------------------------------------------------------


def test_wrk_command() -> None:
    cmd = wrk_command("/usr/bin/wrk", "http://127.0.0.1:9/plaintext", 64, 5)
    assert cmd[:5] == ["/usr/bin/wrk", "-t1", "-c64", "-d5s", "-s"]
    assert Path(cmd[5]).name == "wrk_pipeline.lua" and Path(cmd[5]).is_file()
    assert cmd[6:] == ["http://127.0.0.1:9/plaintext", "--", "16"]


def test_uvicorn_serves_the_plaintext_app_with_httptools_and_uvloop() -> None:
    assert wrk_matrix.UVICORN_HTTPTOOLS.engine == "uvicorn"
    cmd = server_command(wrk_matrix.UVICORN_HTTPTOOLS, 8123)
    assert cmd[:5] == [sys.executable, "-P", "-m", "uvicorn", "pipeparse.servers.apps:plaintext"]
    assert cmd[cmd.index("--port") + 1] == "8123"
    assert cmd[cmd.index("--http") + 1] == "httptools"
    assert cmd[cmd.index("--loop") + 1] == "uvloop"


def test_granian_serves_the_plaintext_app_with_and_without_pipeline_flush() -> None:
    plain = server_command(wrk_matrix.GRANIAN_ASGI, 8124)
    flush = server_command(wrk_matrix.GRANIAN_ASGI_FLUSH, 8124)
    for cmd in (plain, flush):
        assert cmd[:4] == [sys.executable, "-P", "-m", "granian"]
        assert cmd[-1] == "pipeparse.servers.apps:plaintext"
        assert cmd[cmd.index("--interface") + 1] == "asgi"
    assert "--http1-pipeline-flush" not in plain
    assert "--http1-pipeline-flush" in flush


def test_matrices() -> None:
    plain, sleep = _plaintext(), _sleep()
    depth1 = next(m for m in MATRICES if m.name == "plaintext-depth1")
    assert (plain.path, plain.connections, plain.depth) == ("/plaintext", 64, 16)
    assert (depth1.path, depth1.connections, depth1.depth) == ("/plaintext", 64, 1)
    assert (sleep.path, sleep.connections, sleep.depth) == ("/?sleep_ms=10", 16, 16)
    assert [c.label for c in plain.contenders] == [
        "pipeparse/native",
        "h11/native",
        "pipeparse/asgi",
        "pipeparse/native/uvloop",
        "pipeparse/asgi/uvloop",
        "uvicorn-httptools",
        "granian-asgi",
        "granian-asgi-flush",
        "nginx-1-worker",
    ]
    assert [c.label for c in depth1.contenders] == [
        "pipeparse/native",
        "h11/native",
        "pipeparse/asgi",
        "pipeparse/native/uvloop",
        "pipeparse/asgi/uvloop",
        "uvicorn-httptools",
        "granian-asgi",
        "nginx-1-worker",
    ]
    loops = {c.label: c.loop for c in depth1.contenders}
    assert loops["pipeparse/native"] == "trio" and loops["pipeparse/asgi/uvloop"] == "uvloop"
    assert loops["uvicorn-httptools"] == "uvloop" and loops["nginx-1-worker"] == "epoll"
    assert [c.label for c in sleep.contenders] == [
        "pipeparse/native",
        "h11/native",
        "pipeparse/asgi/uvloop",
        "uvicorn-httptools",
        "trio-sleeps-ceiling",
    ]
    uvicorn = sleep.contenders[-2].spec
    assert uvicorn is not None and uvicorn.app == "echo"
    ceiling = sleep.contenders[-1]
    assert ceiling.kind == "ceiling" and ceiling.loop == "trio"
    assert ws.describe(ceiling) == (
        "python -P -m pipeparse.clients.crosscheck.trio_ceiling sleeps --port P"
    )


@pytest.mark.parametrize(
    ("matrix", "label", "expected"),
    [
        (
            "plaintext",
            "pipeparse/native",
            "plaintext --engine pipeparse --interface native --port 0",
        ),
        ("plaintext", "h11/native", "plaintext --engine h11 --interface native --port 0"),
        ("plaintext", "pipeparse/asgi", "plaintext --engine pipeparse --interface asgi --port 0"),
        (
            "plaintext-depth1",
            "pipeparse/native/uvloop",
            "plaintext --engine pipeparse --interface native --port 0 --loop uvloop",
        ),
        ("sleep", "pipeparse/native", "echo --engine pipeparse --interface native --port 0"),
        ("sleep", "h11/native", "echo --engine h11 --interface native --port 0"),
    ],
)
def test_pipeparse_server_commands(matrix: str, label: str, expected: str) -> None:
    m = next(x for x in MATRICES if x.name == matrix)
    c = next(x for x in m.contenders if x.label == label)
    assert c.spec is not None
    cmd = server_command(c.spec, 0)
    assert cmd[1:5] == ["-P", "-m", "pipeparse.cli", "serve"]
    assert " ".join(cmd[5:]) == expected
    assert ws.describe(c) == "python -P -m pipeparse.cli serve " + expected


def test_describe_peers() -> None:
    plain = _plaintext()
    uv = next(c for c in plain.contenders if c.kind == "uvicorn")
    assert ws.describe(uv).startswith("python -P -m uvicorn pipeparse.servers.apps:plaintext ")
    assert " --http httptools --loop uvloop " in ws.describe(uv)
    assert "--port P" in ws.describe(uv)
    flush = next(c for c in plain.contenders if c.label == "granian-asgi-flush")
    assert ws.describe(flush).startswith("python -P -m granian --interface asgi ")
    assert "--port P" in ws.describe(flush)
    assert ws.describe(flush).endswith(" --http1-pipeline-flush pipeparse.servers.apps:plaintext")
    nginx = next(c for c in plain.contenders if c.kind == "nginx")
    assert "worker_processes 1" in ws.describe(nginx)


def test_contender_spec_for_started_servers_only() -> None:
    with pytest.raises(ValueError):
        Contender("x", "pipeparse")
    with pytest.raises(ValueError):
        Contender("x", "uvicorn")
    with pytest.raises(ValueError):
        Contender("x", "nginx", ServerSpec("h11"))


def test_unavailable_nginx(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wrk_matrix, "ensure_nginx", lambda: None)
    nginx = next(c for c in _plaintext().contenders if c.kind == "nginx")
    reason = ws.unavailable(nginx)
    assert reason is not None and "nginx" in reason


def test_unavailable_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "httptools" else real(name)
    )
    uv = next(c for c in _plaintext().contenders if c.kind == "uvicorn")
    reason = ws.unavailable(uv)
    assert reason is not None and "httptools" in reason


# -- order -------------------------------------------------------------------------------------


def test_round_order_rotates_and_covers_each_round() -> None:
    a, b, c = Contender("a", "nginx"), Contender("b", "nginx"), Contender("c", "nginx")
    m1 = Matrix("m1", "/", 1, (a, b, c))
    m2 = Matrix("m2", "/", 1, (a, b))
    order = [(r, m.name, x.label) for r, m, x in round_order([m1, m2], 3)]
    assert order == [
        (0, "m1", "a"), (0, "m1", "b"), (0, "m1", "c"), (0, "m2", "a"), (0, "m2", "b"),
        (1, "m1", "b"), (1, "m1", "c"), (1, "m1", "a"), (1, "m2", "b"), (1, "m2", "a"),
        (2, "m1", "c"), (2, "m1", "a"), (2, "m1", "b"), (2, "m2", "a"), (2, "m2", "b"),
    ]  # fmt: skip


def test_run_rounds_one_at_a_time_and_skips() -> None:
    plain = _plaintext()
    calls: list[tuple[str, str]] = []

    def fake(matrix: Matrix, contender: Contender) -> WrkRun:
        calls.append((matrix.name, contender.label))
        return WrkRun(rps=float(len(calls)))

    skipped = {"plaintext": {"nginx-1-worker": "skipped: no nginx"}}
    lines: list[str] = []
    results = ws.run_rounds([plain], 2, fake, skipped, lines.append)
    assert ("plaintext", "nginx-1-worker") not in calls
    ran = [c.label for c in plain.contenders if c.label != "nginx-1-worker"]
    assert len(calls) == 2 * len(ran) and len(lines) == len(calls)
    assert calls[: len(ran)] == [("plaintext", label) for label in ran]
    assert calls[len(ran)] == ("plaintext", "h11/native")  # round 2 starts one further
    assert set(results["plaintext"]) == set(ran)
    assert all(len(runs) == 2 for runs in results["plaintext"].values())
    # round 2 starts at h11/native: pipeparse/native (first in the list) comes last
    assert [r.rps for r in results["plaintext"]["pipeparse/native"]] == [1.0, 2 * len(ran)]


# -- medians and targets -----------------------------------------------------------------------


def test_medians_leave_out_runs_with_errors() -> None:
    bad = parse_wrk_output(ERRORS)  # 100,000 req/s, but errors: must not count
    results = {"plaintext": {"x": [*_runs(10.0, 30.0, 20.0), bad], "y": _runs(None, None)}}
    assert medians(results) == {"plaintext": {"x": 20.0, "y": None}}


def _plain_results(
    native: list[float | None], h11: list[float | None]
) -> dict[str, dict[str, list[WrkRun]]]:
    return {
        "plaintext": {
            "pipeparse/native": _runs(*native),
            "h11/native": _runs(*h11),
            "pipeparse/asgi": _runs(900.0, 800.0, 1000.0),
            "uvicorn-httptools": _runs(100.0, 100.0, 100.0),
            "granian-asgi": _runs(700.0, 700.0, 700.0),
            "granian-asgi-flush": _runs(800.0, 800.0, 800.0),
            "nginx-1-worker": _runs(2000.0, 1000.0, 1500.0),
        }
    }


def test_targets_from_given_numbers() -> None:
    results = _plain_results([1000.0, 3000.0, 2000.0], [100.0, 100.0, 50.0])
    results["sleep"] = {
        "pipeparse/native": _runs(1200.0, 1300.0, 1100.0),
        "h11/native": _runs(100.0, 100.0, 100.0),
    }
    results["plaintext-depth1"] = {
        "pipeparse/native": _runs(1100.0, 1300.0, 1200.0),
        "pipeparse/asgi": _runs(900.0, 950.0, 1000.0),
        "uvicorn-httptools": _runs(1000.0, 1000.0, 1000.0),
    }
    targets = {t["target"]: t for t in evaluate_targets(results)}
    assert list(targets) == [
        "plaintext: pipeparse/native / h11/native",
        "plaintext: pipeparse/native / nginx-1-worker",
        "plaintext: pipeparse/asgi / granian-asgi-flush",
        "plaintext-depth1: pipeparse/native / uvicorn-httptools",
        "plaintext-depth1: pipeparse/asgi / uvicorn-httptools",
        "sleep: pipeparse/native / h11/native",
        "plaintext-depth1: pipeparse/native/uvloop / uvicorn-httptools",
        "plaintext-depth1: pipeparse/asgi/uvloop / granian-asgi",
        "plaintext: pipeparse/asgi/uvloop / granian-asgi-flush",
        "sleep: pipeparse/asgi/uvloop / uvicorn-httptools",
    ]
    t = targets["plaintext: pipeparse/asgi / granian-asgi-flush"]
    assert (t["goal"], t["ratio"], t["status"]) == (1.1, 900.0 / 800.0, "met")
    t = targets["plaintext-depth1: pipeparse/native / uvicorn-httptools"]
    assert (t["goal"], t["ratio"], t["status"]) == (1.2, 1.2, "met")
    t = targets["plaintext-depth1: pipeparse/asgi / uvicorn-httptools"]
    assert (t["goal"], t["ratio"], t["status"]) == (1.0, 0.95, "not met")
    t = targets["plaintext: pipeparse/native / h11/native"]
    assert (t["goal"], t["ratio"], t["status"]) == (15.0, 20.0, "met")
    assert t["per_round"] == [10.0, 30.0, 40.0]
    t = targets["plaintext: pipeparse/native / nginx-1-worker"]
    assert (t["goal"], t["ratio"], t["status"]) == (1.0, 2000.0 / 1500.0, "met")
    assert t["per_round"] == [0.5, 3.0, 2000.0 / 1500.0]
    t = targets["sleep: pipeparse/native / h11/native"]
    assert (t["goal"], t["ratio"], t["status"]) == (12.0, 12.0, "met")


def test_target_not_met() -> None:
    results = _plain_results([1000.0, 1000.0, 1000.0], [100.0, 100.0, 100.0])
    t = evaluate_targets(results)[0]
    assert (t["ratio"], t["status"]) == (10.0, "not met")


def test_only_targets_of_matrices_that_ran() -> None:
    results = {"sleep": {"pipeparse/native": _runs(1.0), "h11/native": _runs(1.0)}}
    assert [t["matrix"] for t in evaluate_targets(results)] == ["sleep", "sleep"]


def test_errors_on_the_pipeparse_side_do_not_meet_a_target() -> None:
    results = _plain_results([1000.0, 1000.0, 1000.0], [100.0, 100.0, 100.0])
    results["plaintext"]["pipeparse/native"] = [parse_wrk_output(ERRORS)] * 3
    t = evaluate_targets(results)[0]
    assert t["ratio"] is None
    assert t["per_round"] == [None, None, None]
    assert t["status"] == "not met"


def test_a_skipped_baseline_leaves_the_target_unknown() -> None:
    results = _plain_results([1000.0, 1000.0, 1000.0], [100.0, 100.0, 100.0])
    del results["plaintext"]["granian-asgi-flush"]
    skipped = {"plaintext": {"granian-asgi-flush": "skipped: granian not installed"}}
    t = evaluate_targets(results, skipped)[2]
    assert t["target"] == "plaintext: pipeparse/asgi / granian-asgi-flush"
    assert (t["ratio"], t["per_round"], t["status"]) == (None, [], "unknown")
    assert t["note"] == "skipped: granian not installed"


# -- main, with fakes --------------------------------------------------------------------------


def test_main_without_wrk(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(ws, "ensure_wrk", lambda: None)
    assert ws.main(["--rounds", "1"]) == 2
    assert "wrk" in capsys.readouterr().err


def _fake_main(monkeypatch: pytest.MonkeyPatch) -> None:
    figures = {
        "pipeparse/native": 2000.0,
        "h11/native": 100.0,
        "pipeparse/asgi": 900.0,
        "pipeparse/native/uvloop": 3000.0,
        "pipeparse/asgi/uvloop": 2500.0,
    }

    def measure_with(*_: object) -> ws.Measure:
        def measure(matrix: Matrix, contender: Contender) -> WrkRun:
            if contender.label == "pipeparse/asgi":
                return parse_wrk_output(ERRORS)
            return WrkRun(rps=figures[contender.label], requests=1, socket_errors={})

        return measure

    monkeypatch.setattr(ws, "ensure_wrk", lambda: "wrk")
    monkeypatch.setattr(ws, "measure_with", measure_with)
    monkeypatch.setattr(
        ws, "unavailable", lambda c: "skipped: not here" if c.kind != "pipeparse" else None
    )


def test_main_json(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _fake_main(monkeypatch)
    assert ws.main(["--rounds", "2", "--duration", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["settings"]["rounds"] == 2
    plain = report["matrices"]["plaintext"]["servers"]
    assert plain["pipeparse/native"]["median"] == 2000.0
    assert [r["rps"] for r in plain["h11/native"]["runs"]] == [100.0, 100.0]
    assert plain["pipeparse/asgi"]["median"] is None
    assert plain["pipeparse/asgi"]["runs"][0]["non_2xx"] == 299000
    assert plain["nginx-1-worker"]["skipped"] == "skipped: not here"
    status = {t["target"]: t["status"] for t in report["targets"]}
    assert status == {
        "plaintext: pipeparse/native / h11/native": "met",
        "plaintext: pipeparse/native / nginx-1-worker": "unknown",  # skipped
        "plaintext: pipeparse/asgi / granian-asgi-flush": "not met",  # its runs all erred
        "plaintext-depth1: pipeparse/native / uvicorn-httptools": "unknown",
        "plaintext-depth1: pipeparse/asgi / uvicorn-httptools": "not met",
        "sleep: pipeparse/native / h11/native": "met",
        "plaintext-depth1: pipeparse/native/uvloop / uvicorn-httptools": "unknown",
        "plaintext-depth1: pipeparse/asgi/uvloop / granian-asgi": "unknown",
        "plaintext: pipeparse/asgi/uvloop / granian-asgi-flush": "unknown",
        "sleep: pipeparse/asgi/uvloop / uvicorn-httptools": "unknown",
    }


def test_main_text(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _fake_main(monkeypatch)
    assert ws.main(["--rounds", "1", "--only", "plaintext"]) == 0
    out = capsys.readouterr().out
    assert "## plaintext" in out and "## sleep" not in out
    assert "pipeparse/asgi, round 1: 299000 non-2xx/3xx responses" in out
    assert "nginx-1-worker: skipped: not here" in out
    assert "| plaintext: pipeparse/native / h11/native" in out
    assert "20.00" in out and "met" in out
