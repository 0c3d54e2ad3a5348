"""`remember`: the bounded memo behind the hot paths' caches."""

from __future__ import annotations

from pipeparse._memo import remember


def test_remember_stores_and_returns_the_value() -> None:
    memo: dict[str, int] = {}
    assert remember(memo, "a", 1, limit=3) == 1
    assert memo == {"a": 1}


def test_a_full_memo_is_emptied_before_the_new_entry() -> None:
    memo: dict[int, int] = {}
    for i in range(3):
        remember(memo, i, i, limit=3)
    assert len(memo) == 3
    remember(memo, 99, 99, limit=3)
    assert memo == {99: 99}  # never more than `limit` entries
