"""HDR interval logs (`pipeparse.clients.load.hdr`): written per second, read back with the
`hdrhistogram`
package's own `HistogramLogReader`, merged exactly.

The round trip: record latencies in two "machines" (two `LoadStats`) over several seconds, write
one log each, read them back and merge: the merged histogram has exactly the counts, hence the
percentiles, of the histogram that `LoadResult.merge` builds from the same results.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hdrh.log import HistogramLogReader

from pipeparse.clients.load.hdr import format_merged, merge_hdr_logs, write_hdr_log
from pipeparse.clients.load.result import LoadResult, LoadStats, latency_ms, new_histogram

PERCENTILES = [0.0, 1.0, 10.0, 25.0, 50.0, 75.0, 90.0, 99.0, 99.9, 99.99, 100.0]


def recorded(seed: int, seconds: int = 4) -> LoadResult:
    """A result with latencies recorded in each of `seconds` seconds, the way the engine does."""
    rng = random.Random(seed)
    stats = LoadStats(100.0)
    for i in range(seconds * 50):
        now = 100.0 + i / 50
        n = rng.randint(1, 16)
        stats.received(now, 100 * n)
        stats.completed(now, n)
        stats.record_latency(rng.lognormvariate(-7, 1.5), n)
    return stats.result(100.0 + seconds - 0.5, 1, 16)


def test_a_run_keeps_one_histogram_per_second_adding_up_to_the_whole() -> None:
    result = recorded(1)
    assert len(result.intervals) == 4
    total = new_histogram()
    for i, h in enumerate(result.intervals):
        assert h is not None
        assert h.get_total_count() == result.timeline_requests[i]
        total.add(h)
    assert total.get_total_count() == result.histogram.get_total_count() == result.requests
    assert latency_ms(total) == result.latency_ms()


def test_the_log_reads_back_interval_by_interval(tmp_path: Path) -> None:
    result = recorded(2)
    path = tmp_path / "run.hlog"
    write_hdr_log(result, path, "pipeparse load http://test/")
    text = path.read_text()
    assert text.startswith("#[pipeparse load http://test/]\n#[Histogram log format version 1.2]\n")
    assert "#[BaseTime: " in text and '"StartTimestamp","Interval_Length"' in text
    reader = HistogramLogReader(str(path), new_histogram())
    try:
        for i, h in enumerate(result.intervals):
            assert h is not None
            back = reader.get_next_interval_histogram()
            assert back is not None
            assert back.get_start_time_stamp() == pytest.approx((result.start_epoch + i) * 1000)
            assert back.get_total_count() == h.get_total_count()
            assert [back.get_value_at_percentile(p) for p in PERCENTILES] == [
                h.get_value_at_percentile(p) for p in PERCENTILES
            ]
        assert reader.get_next_interval_histogram() is None
    finally:
        reader.close()


def test_logs_of_several_machines_merge_to_identical_percentiles(tmp_path: Path) -> None:
    results = [recorded(seed) for seed in (3, 4, 5)]
    paths = []
    for i, r in enumerate(results):
        paths.append(tmp_path / f"machine{i}.hlog")
        write_hdr_log(r, paths[-1], f"machine {i}")
    merged = merge_hdr_logs(paths)
    expected = LoadResult.merge([r.to_wire() for r in results], depth=16)
    assert merged.get_total_count() == expected.requests == sum(r.requests for r in results)
    assert [merged.get_value_at_percentile(p) for p in PERCENTILES] == [
        expected.histogram.get_value_at_percentile(p) for p in PERCENTILES
    ]
    assert merged.encode() == expected.histogram.encode()  # every count, not just percentiles
    text = format_merged(paths, merged)
    assert "3 logs" in text and f"requests     {merged.get_total_count():,}" in text


def test_processes_merge_their_intervals_second_by_second() -> None:
    a, b = recorded(6, seconds=3), recorded(7, seconds=5)
    merged = LoadResult.merge([a.to_wire(), b.to_wire()], depth=16)
    assert len(merged.intervals) == 5
    for i, h in enumerate(merged.intervals):
        assert h is not None
        assert h.get_total_count() == merged.timeline_requests[i]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "no interval histograms"),
        ("# just a comment\n", "no interval histograms"),
        ("0.000,1.000,5.000,HISTFAAAAnotbase64!!\n", "not an HDR histogram log"),
    ],
)
def test_a_file_that_is_not_a_log_is_an_error_naming_it(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "bad.hlog"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        merge_hdr_logs([path])
    assert str(info.value).startswith(f"{path}: ")
    with pytest.raises(ValueError, match="no such file"):
        merge_hdr_logs([tmp_path / "absent.hlog"])


@pytest.mark.parametrize("fraction", [0.0, 0.0004, 0.1234567, 0.5959625, 0.99999])
def test_a_start_within_a_millisecond_keeps_the_first_interval(
    tmp_path: Path, fraction: float
) -> None:
    # StartTime and BaseTime are both printed with six decimals, BaseTime from the start in
    # milliseconds divided back: for some starts (0.5959625 here) the round trip printed one
    # digit lower, and the reader skipped the first interval as before the start.
    histogram = new_histogram()
    histogram.record_value(250)
    result = LoadResult(
        1, 1, {}, 0.5, 0, 1, 1, intervals=[histogram], start_epoch=1764540000 + fraction
    )
    write_hdr_log(result, tmp_path / "run.hlog", "test")
    assert merge_hdr_logs([tmp_path / "run.hlog"]).get_total_count() == 1
