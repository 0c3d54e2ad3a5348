"""Tests of `pipeparse.clients.crosscheck.wrk_paired`: the rounds of pairs, their ratios and
report, and running two wrk at once (a stand-in script plays wrk: no server, no timing)."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from pipeparse.clients.crosscheck import wrk_paired
from pipeparse.clients.crosscheck.wrk_matrix import TARGETS, Contender, Matrix
from pipeparse.clients.crosscheck.wrk_paired import format_pairs, run_pairs, run_wrk_together
from pipeparse.clients.crosscheck.wrk_report import WrkRun

DEPTH1 = [t for t in TARGETS if t.matrix == "plaintext-depth1"][:2]  # native, ASGI vs uvicorn


def test_each_round_measures_each_pair_alternating_who_goes_first() -> None:
    calls: list[tuple[str, str, str]] = []
    rates = {"pipeparse/native": 12_000.0, "pipeparse/asgi": 9_000.0, "uvicorn-httptools": 10_000.0}

    def measure(matrix: Matrix, first: Contender, second: Contender) -> tuple[WrkRun, WrkRun]:
        calls.append((matrix.name, first.label, second.label))
        return WrkRun(rps=rates[first.label]), WrkRun(rps=rates[second.label])

    results = run_pairs(DEPTH1, 3, measure)
    assert calls == [
        ("plaintext-depth1", "pipeparse/native", "uvicorn-httptools"),
        ("plaintext-depth1", "pipeparse/asgi", "uvicorn-httptools"),
        ("plaintext-depth1", "uvicorn-httptools", "pipeparse/native"),
        ("plaintext-depth1", "uvicorn-httptools", "pipeparse/asgi"),
        ("plaintext-depth1", "pipeparse/native", "uvicorn-httptools"),
        ("plaintext-depth1", "pipeparse/asgi", "uvicorn-httptools"),
    ]
    native, asgi = results
    assert native["per_round"] == [1.2, 1.2, 1.2] and native["ratio"] == 1.2
    assert native["status"] == "met"  # (goal 1.2)
    assert asgi["ratio"] == 0.9 and asgi["status"] == "not met"
    assert native["numerator_rps"] == [12_000.0] * 3
    assert native["denominator_rps"] == [10_000.0] * 3


def test_a_round_with_errors_has_no_ratio_and_stays_out_of_the_median() -> None:
    rounds = iter(
        [
            (WrkRun(rps=11_000.0), WrkRun(rps=10_000.0)),
            (WrkRun(rps=10_000.0), WrkRun(rps=20_000.0, non_2xx=5)),  # errors: not clean
            (WrkRun(error="server failed: boom"), WrkRun(error="server failed: boom")),
        ]
    )

    def measure(matrix: Matrix, first: Contender, second: Contender) -> tuple[WrkRun, WrkRun]:
        return next(rounds)

    lines: list[str] = []
    [result] = run_pairs(DEPTH1[:1], 3, measure, lines.append)
    assert result["per_round"] == [1.1, None, None]
    assert result["ratio"] == 1.1
    assert "non-2xx" in lines[1] and "boom" in lines[2]
    table = format_pairs([result])
    assert "1.100" in table and "| -" in table and "not met" in table


def test_no_clean_round_leaves_the_target_unknown() -> None:
    def measure(matrix: Matrix, first: Contender, second: Contender) -> tuple[WrkRun, WrkRun]:
        return WrkRun(error="x"), WrkRun(error="x")

    [result] = run_pairs(DEPTH1[:1], 2, measure)
    assert result["ratio"] is None and result["status"] == "unknown"


FAKE_WRK = """\
#!{python}
import sys
url = sys.argv[-3]
rps = 5000.0 if url.endswith("/a") else 7000.0
if url.endswith("/broken"):
    sys.exit(3)
print("  15000 requests in 3.00s, 1.00MB read")
print(f"Requests/sec: {{rps:.2f}}")
"""


@pytest.fixture
def fake_wrk(tmp_path: Path) -> str:
    path = tmp_path / "wrk"
    path.write_text(FAKE_WRK.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_two_wrk_at_once_give_their_reports_in_order(fake_wrk: str) -> None:
    a, b = run_wrk_together(fake_wrk, ["http://h/a", "http://h/b"], 64, 1, 1, None)
    assert (a.rps, b.rps) == (5000.0, 7000.0) and a.clean and b.clean


def test_a_failing_wrk_is_an_error_not_a_figure(fake_wrk: str) -> None:
    a, b = run_wrk_together(fake_wrk, ["http://h/a", "http://h/broken"], 64, 1, 1, None)
    assert a.clean and b.rps is None and b.error is not None and "exited with 3" in b.error


def test_main_json(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(wrk_paired, "ensure_wrk", lambda: "wrk")
    monkeypatch.setattr(wrk_paired, "unavailable", lambda contender: "")

    def measures(wrk: str, duration: int, wrk_cpus: object, server_cpu: object) -> object:
        def measure(m: Matrix, first: Contender, second: Contender) -> tuple[WrkRun, WrkRun]:
            return WrkRun(rps=2.0), WrkRun(rps=1.0)

        return measure

    monkeypatch.setattr(wrk_paired, "measure_pairs_with", measures)
    assert wrk_paired.main(["--only", "sleep", "plaintext", "--rounds", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [t["target"] for t in report["targets"]] == [  # (not the sleep matrix's)
        t.name for t in TARGETS if t.matrix == "plaintext"
    ]
    assert all(t["per_round"] == [2.0] for t in report["targets"])


def test_main_without_wrk(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(wrk_paired, "ensure_wrk", lambda: None)
    assert wrk_paired.main([]) == 2
    assert "wrk is not installed" in capsys.readouterr().err
