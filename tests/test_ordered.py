"""`OrderedResponses` and `DispatchPolicy` (`pipeparse/_ordered.py`), without an engine.

OrderedResponses: bytes leave in request order whatever order handlers write and finish in;
nothing after a closing response leaves. DispatchPolicy: RFC 9112 §9.3.2 under ``safe``, the
in-flight bound under every mode. A hypothesis test drives random interleavings.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeparse import SAFE_METHODS, DispatchPolicy, OrderedResponses


def sent(responses: OrderedResponses) -> bytes:
    """Everything `take()` hands the writer now, joined; checks `out_size` on the way."""
    size = responses.out_size
    parts = responses.take()
    data = b"".join(parts)
    assert size == len(data)
    assert responses.out_size == 0 and not responses.has_output
    return data


# -- OrderedResponses ---------------------------------------------------------------------


def test_emit_with_nothing_pending_goes_straight_out() -> None:
    r = OrderedResponses()
    r.emit(0, b"zero")
    r.emit(1, b"one-", tail=memoryview(b"tail"))
    assert len(r) == 0  # no slot was needed
    assert r.has_output and r.out_size == len(b"zeroone-tail")
    assert sent(r) == b"zeroone-tail"
    assert r.take() == []  # taken once


def test_take_keeps_views_uncopied() -> None:
    r = OrderedResponses()
    body = memoryview(bytearray(b"large body"))
    r.emit(0, b"head", tail=body)
    parts = r.take()
    assert parts[1] is body


def test_head_slot_writes_leave_at_once_later_slots_wait() -> None:
    r = OrderedResponses()
    first, second = r.reserve(0), r.reserve(1)
    assert r.is_head(first) and not r.is_head(second)
    assert r.is_last(second) and not r.is_last(first)
    r.write(second, b"B1")
    assert not r.has_output  # not its turn
    r.write(first, b"A1")
    assert sent(r) == b"A1"
    r.write(first, b"A2")
    r.finish(first)
    assert sent(r) == b"A2B1"  # the next response's early bytes follow at once
    assert r.is_head(second) and len(r) == 1
    r.write(second, b"B2")
    r.finish(second)
    assert sent(r) == b"B2"
    assert len(r) == 0


def test_finishing_out_of_order_releases_a_run_of_complete_responses() -> None:
    r = OrderedResponses()
    slots = [r.reserve(i) for i in range(4)]
    for i in (3, 2, 1):
        r.write(slots[i], b"%d" % i)
        r.finish(slots[i])
    assert not r.has_output  # all wait for response 0
    assert len(r) == 4
    r.write(slots[0], b"0")
    assert sent(r) == b"0"
    r.finish(slots[0])
    assert sent(r) == b"123"
    assert len(r) == 0


def test_emit_behind_a_pending_slot_waits_complete_in_its_own_slot() -> None:
    r = OrderedResponses()
    first = r.reserve(0)
    r.emit(1, b"one", tail=b"!")
    r.emit(2, b"two")
    assert not r.has_output and len(r) == 3
    r.write(first, b"zero")
    r.finish(first)
    assert sent(r) == b"zeroone!two"
    assert len(r) == 0


def test_write_many_keeps_order() -> None:
    r = OrderedResponses()
    first, second = r.reserve(0), r.reserve(1)
    r.write_many(second, [b"b", memoryview(b"c"), bytearray(b"d")])
    r.write_many(first, [b"a"])
    r.finish(first)
    r.finish(second)
    assert sent(r) == b"abcd"


def test_writing_to_a_complete_response_is_an_error() -> None:
    r = OrderedResponses()
    slot = r.reserve(0)
    r.finish(slot)
    with pytest.raises(RuntimeError, match="response 0 is already complete"):
        r.write(slot, b"late")


def test_nothing_after_a_closing_response_leaves() -> None:
    r = OrderedResponses()
    first, closing, after, open_ = r.reserve(0), r.reserve(1), r.reserve(2), r.reserve(3)
    r.write(after, b"never")
    r.finish(after)
    r.write(open_, b"nor")
    r.write(closing, b"bye")
    r.finish(closing, close=True)
    assert not r.closing  # not ready yet: response 0 is pending
    r.write(first, b"hello ")
    r.finish(first)
    assert r.closing
    assert sent(r) == b"hello bye"
    assert len(r) == 0  # the slots after it are dropped
    r.emit(4, b"also never")
    r.write(open_, b"this")  # its slot was dropped: ignored
    assert not r.has_output


@pytest.mark.parametrize("closed_by", ["finish", "emit"])
def test_after_a_closing_response_nothing_more_is_output(closed_by: str) -> None:
    """Once a closing response is ready, a later `emit`, or a slot reserved and written
    after it, outputs nothing: the client would read those bytes as part of the last
    response, or as a response to a request the server said it would not answer."""
    responses = OrderedResponses()
    if closed_by == "finish":
        slot = responses.reserve(0)
        responses.write(slot, b"last")
        responses.finish(slot, close=True)
    else:
        responses.emit(0, b"last", close=True)
    assert responses.closing
    assert sent(responses) == b"last"
    responses.emit(1, b"emitted")
    responses.emit(2, b"emitted", close=True, tail=b"tail")
    late = responses.reserve(3)
    responses.write(late, b"written")
    responses.finish(late)
    responses.emit(4, b"emitted")
    assert not responses.has_output
    assert sent(responses) == b""


def test_a_closing_emit_with_nothing_pending_closes_at_once() -> None:
    r = OrderedResponses()
    r.emit(0, b"last", close=True)
    assert r.closing
    r.emit(1, b"never")
    assert sent(r) == b"last"


def test_a_closing_emit_behind_a_pending_slot_closes_when_it_is_reached() -> None:
    r = OrderedResponses()
    first = r.reserve(0)
    r.emit(1, b"last", close=True)
    later = r.reserve(2)
    r.write(later, b"never")
    r.finish(later)
    assert not r.closing
    r.write(first, b"first ")
    r.finish(first)
    assert r.closing
    assert sent(r) == b"first last"


@st.composite
def interleavings(draw: st.DrawFn) -> tuple[list[list[bytes]], list[tuple[str, int]]]:
    """Responses (each a list of pieces) and an order of operations on their slots: each
    slot's writes in order, its finish after them, slots interleaved at random."""
    n = draw(st.integers(min_value=1, max_value=8))
    pieces = [draw(st.lists(st.binary(min_size=1, max_size=6), max_size=4)) for _ in range(n)]
    pending = {i: len(p) + 1 for i, p in enumerate(pieces)}  # writes, then one finish
    ops: list[tuple[str, int]] = []
    written = dict.fromkeys(range(n), 0)
    while pending:
        i = draw(st.sampled_from(sorted(pending)))
        if written[i] < len(pieces[i]):
            ops.append(("write", i))
            written[i] += 1
        else:
            ops.append(("finish", i))
        pending[i] -= 1
        if not pending[i]:
            del pending[i]
    return pieces, ops


@settings(max_examples=300, deadline=None)
@given(interleavings(), st.data())
def test_any_interleaving_sends_responses_whole_and_in_order(
    case: tuple[list[list[bytes]], list[tuple[str, int]]], data: st.DataObject
) -> None:
    pieces, ops = case
    r = OrderedResponses()
    slots = [r.reserve(i) for i in range(len(pieces))]
    out = b""
    next_piece = dict.fromkeys(range(len(pieces)), 0)
    for op, i in ops:
        if op == "write":
            r.write(slots[i], pieces[i][next_piece[i]])
            next_piece[i] += 1
        else:
            r.finish(slots[i])
        if data.draw(st.booleans()):  # the writer takes at random moments
            out += sent(r)
    out += sent(r)
    assert out == b"".join(b"".join(p) for p in pieces)
    assert len(r) == 0


# -- DispatchPolicy -----------------------------------------------------------------------


def test_policy_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="pipeline policy must be one of"):
        DispatchPolicy("fast")
    with pytest.raises(ValueError, match="max_in_flight must be at least 1"):
        DispatchPolicy("safe", 0)


def test_safe_methods_are_the_rfc_ones() -> None:
    assert frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE"}) == SAFE_METHODS


def test_safe_requests_run_together_up_to_the_bound() -> None:
    p = DispatchPolicy("safe", 3)
    for method in (b"GET", b"HEAD", b"OPTIONS"):
        assert p.can_start(method)
        p.started(method)
    assert p.in_flight == 3
    assert not p.can_start(b"GET")  # the bound
    p.finished(b"HEAD")
    assert p.can_start(b"TRACE")


@pytest.mark.parametrize("unsafe", [b"POST", b"PUT", b"DELETE", b"PATCH", b"CONNECT"])
def test_an_unsafe_request_waits_for_the_earlier_ones_and_holds_back_the_later(
    unsafe: bytes,
) -> None:
    p = DispatchPolicy("safe", 16)
    p.started(b"GET")
    assert not p.can_start(unsafe)  # waits until everything before it is answered
    p.finished(b"GET")
    assert p.can_start(unsafe)  # nothing in flight: anything starts
    p.started(unsafe)
    assert p.unsafe_in_flight == 1
    assert not p.can_start(b"GET")  # held back until it is answered
    assert not p.can_start(unsafe)
    p.finished(unsafe)
    assert p.unsafe_in_flight == 0 and p.in_flight == 0
    assert p.can_start(b"GET")


def test_all_runs_every_method_together_up_to_the_bound() -> None:
    p = DispatchPolicy("all", 2)
    p.started(b"POST")
    assert p.can_start(b"DELETE")
    p.started(b"DELETE")
    assert not p.can_start(b"GET")  # the bound still holds
    p.finished(b"POST")
    assert p.can_start(b"PUT")


def test_serial_runs_one_at_a_time_whatever_the_bound() -> None:
    p = DispatchPolicy("serial", 16)
    assert p.max_in_flight == 1
    assert p.can_start(b"POST")
    p.started(b"GET")
    assert not p.can_start(b"GET")
    p.finished(b"GET")
    assert p.can_start(b"GET")
