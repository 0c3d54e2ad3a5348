"""`OrderedResponses` and `DispatchPolicy` on their own (sans-I/O): order, early bytes, closing."""

from __future__ import annotations

import pytest

from pipeparse import DispatchPolicy, OrderedResponses


def output(responses: OrderedResponses) -> bytes:
    return b"".join(responses.take())


def test_responses_leave_in_request_order_whatever_order_they_finish_in() -> None:
    responses = OrderedResponses()
    a, b, c = (responses.reserve(seq) for seq in range(3))
    responses.write(c, b"c")
    responses.finish(c)
    responses.write(b, b"b1")
    assert output(responses) == b""  # nothing before a's turn
    responses.write(a, b"a")
    assert output(responses) == b"a"  # the head's bytes leave at once
    responses.finish(a)
    assert output(responses) == b"b1"  # b's early bytes, now that it is b's turn
    responses.write(b, b"b2")
    responses.finish(b)
    assert output(responses) == b"b2c"
    assert len(responses) == 0 and not responses.closing


def test_emit_goes_straight_out_or_waits_behind_the_reserved_slots() -> None:
    responses = OrderedResponses()
    responses.emit(0, b"zero")
    assert output(responses) == b"zero"
    slot = responses.reserve(1)
    responses.emit(2, b"two", tail=b"-tail")
    assert output(responses) == b""
    responses.write(slot, b"one")
    responses.finish(slot)
    assert output(responses) == b"onetwo-tail"


def test_nothing_after_a_closing_slot_is_sent() -> None:
    responses = OrderedResponses()
    first, later = responses.reserve(0), responses.reserve(1)
    responses.write(later, b"later")
    responses.finish(later)
    responses.write(first, b"last")
    responses.finish(first, close=True)
    assert responses.closing
    assert output(responses) == b"last"
    assert len(responses) == 0


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
    assert output(responses) == b"last"
    responses.emit(1, b"emitted")
    responses.emit(2, b"emitted", close=True, tail=b"tail")
    late = responses.reserve(3)
    responses.write(late, b"written")
    responses.finish(late)
    responses.emit(4, b"emitted")
    assert not responses.has_output
    assert output(responses) == b""


def test_dispatch_policy_safe_all_serial() -> None:
    safe = DispatchPolicy("safe", max_in_flight=2)
    assert safe.can_start(b"POST")  # alone it may start
    safe.started(b"GET")
    assert safe.can_start(b"GET") and not safe.can_start(b"POST")
    safe.started(b"GET")
    assert not safe.can_start(b"GET")  # the bound
    safe.finished(b"GET")
    safe.finished(b"GET")
    safe.started(b"POST")
    assert not safe.can_start(b"GET")  # an unsafe one holds everything after it back
    every = DispatchPolicy("all", max_in_flight=2)
    every.started(b"POST")
    assert every.can_start(b"DELETE")
    serial = DispatchPolicy("serial", max_in_flight=8)
    serial.started(b"GET")
    assert serial.max_in_flight == 1 and not serial.can_start(b"GET")
    with pytest.raises(ValueError, match="pipeline policy"):
        DispatchPolicy("fast")
    with pytest.raises(ValueError, match="max_in_flight"):
        DispatchPolicy("safe", max_in_flight=0)
