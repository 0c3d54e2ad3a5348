"""pipeparse.servers.heap: freed receive memory is handed back to the system in steps."""

from __future__ import annotations

import pytest

from pipeparse.servers import heap


def test_the_heap_is_trimmed_each_time_enough_was_given_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []

    def malloc_trim(pad: int) -> int:
        calls.append(pad)
        return 1

    monkeypatch.setattr(heap, "_malloc_trim", malloc_trim)
    monkeypatch.setattr(heap, "_pending", 0)
    block = 16 * 1024
    for _ in range(2):
        for _ in range(heap.TRIM_AT // block - 1):
            assert not heap.gave_back(block)
        assert heap.gave_back(block)  # the mark: trimmed now, and counting starts over
    assert calls == [0, 0]
    assert not heap.gave_back(0)


def test_nothing_happens_without_malloc_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "_malloc_trim", None)
    assert not heap.gave_back(heap.TRIM_AT * 2)
