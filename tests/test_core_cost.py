"""The in-process cost measure runs every case and reports a positive time per request."""

from __future__ import annotations

import pytest

from pipeparse.clients.crosscheck.core_cost import CASES, main, measure


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("depth", [1, 16])
def test_each_case_measures_a_cost_per_request(case: str, depth: int) -> None:
    assert measure(case, depth, requests=64, rounds=2) > 0


def test_an_unknown_case_is_refused() -> None:
    with pytest.raises(ValueError, match="case must be one of"):
        measure("uvloop", 1)


def test_the_command_prints_a_line_per_case_and_depth(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--rounds", "1", "--requests", "32"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(CASES) * 2
    assert all("us of CPU per request" in line for line in lines)


def test_bad_settings_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--rounds", "0"])
    assert "at least 1" in capsys.readouterr().err
