"""Bounded memos for the hot paths: a plain dict, emptied whole when it reaches its limit.

Pipelined traffic repeats a handful of heads, targets and responses, so a dict lookup saves
parsing or rendering them again. Emptying the whole dict when full (instead of evicting the
oldest entry) keeps the hit path a single ``dict.get`` and the memory bounded; the few hot keys
come back at once.
"""

from __future__ import annotations

from typing import TypeVar

__all__ = ["remember"]

K = TypeVar("K")
V = TypeVar("V")


def remember(memo: dict[K, V], key: K, value: V, limit: int) -> V:
    """Store `value` under `key` in `memo`, emptied first when it holds `limit` entries;
    returns `value` (call it on a miss, after computing the value)."""
    if len(memo) >= limit:
        memo.clear()
    memo[key] = value
    return value
