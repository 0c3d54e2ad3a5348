"""The request deadlines both drivers keep as data (`servers/deadline_queue.DeadlineQueue`).

`due(now)` must take exactly the requests still armed at a deadline no later than `now`, in
deadline order, each once; a disarmed request never fires; a re-armed one counts from its new
deadline; `next_deadline` is the earliest live one, `horizon` the latest ever armed. Checked
against a plain dict of live deadlines over random sequences of arming, disarming and time
passing.
"""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from pipeparse.servers.deadline_queue import DeadlineQueue


def test_due_takes_the_live_deadlines_in_order_and_skips_the_disarmed() -> None:
    queue = DeadlineQueue()
    for seq, deadline in ((0, 10.0), (1, 11.0), (2, 12.0), (3, 13.0)):
        queue.set(seq, deadline)
    queue.set(1, None)  # answered in time
    queue.set(3, 20.0)  # armed again, later
    assert queue.next_deadline() == 10.0
    assert queue.due(9.0) == []
    assert queue.due(12.5) == [0, 2]
    assert queue.next_deadline() == 20.0 and queue.armed
    assert queue.due(30.0) == [3]
    assert queue.next_deadline() is None and not queue.armed
    assert not queue.queue  # nothing stale left behind


def test_a_deadline_earlier_than_the_last_goes_in_its_place() -> None:
    queue = DeadlineQueue()
    queue.set(0, 10.0)
    queue.set(1, 5.0)
    assert queue.next_deadline() == 5.0
    assert queue.due(10.0) == [1, 0]


operations = st.lists(
    st.one_of(
        st.tuples(st.just("arm"), st.integers(0, 5), st.integers(0, 50)),
        st.tuples(st.just("disarm"), st.integers(0, 5), st.just(0)),
        st.tuples(st.just("pass"), st.just(0), st.integers(0, 20)),
    ),
    max_size=60,
)


@given(operations)
def test_it_behaves_as_a_dict_of_live_deadlines(steps: list[tuple[str, int, int]]) -> None:
    queue = DeadlineQueue()
    live: dict[int, float] = {}
    now = 0.0
    horizon = -math.inf
    for op, seq, value in steps:
        if op == "arm":
            queue.set(seq, now + value)
            live[seq] = now + value
            horizon = max(horizon, now + value)
        elif op == "disarm":
            queue.set(seq, None)
            live.pop(seq, None)
        else:
            now += value
            expected = sorted((d, s) for s, d in live.items() if d <= now)
            fired = queue.due(now)
            assert sorted(fired) == sorted(s for _, s in expected)
            assert [live[s] for s in fired] == sorted(live[s] for s in fired)  # in order
            for s in fired:
                del live[s]
        assert queue.next_deadline() == (min(live.values()) if live else None)
        assert queue.armed == bool(live)
        assert queue.horizon == horizon  # the latest deadline ever armed
