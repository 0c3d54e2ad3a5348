"""`render_head`: framing decisions, field checks, and its memo never changing an answer."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from pipeparse import render_head
from pipeparse._serialize import render_error

DATE = b"Mon, 23 Nov 2026 21:00:00 GMT"
FIELDS = [(b"content-type", b"text/plain")]


def render(**overrides: Any) -> tuple[bytes, bool, int | None, bool, bool]:
    args: dict[str, Any] = dict(
        method=b"GET", http11=True, keep_alive=True, body_length=5, date=DATE, server=b"pp"
    )
    args.update(overrides)
    status = args.pop("status", 200)
    headers = args.pop("headers", FIELDS)
    head, framing = render_head(status, headers, **args)
    return head, framing.send_body, framing.content_length, framing.chunked, framing.close


def test_whole_head() -> None:
    head, send_body, length, chunked, close = render()
    assert head == (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ndate: " + DATE
        + b"\r\nserver: pp\r\ncontent-length: 5\r\n\r\n"
    )  # fmt: skip
    assert (send_body, length, chunked, close) == (True, 5, False, False)


@pytest.mark.parametrize("repeat", [1, 2, 3])
def test_every_argument_changes_the_answer_even_when_memoised(repeat: int) -> None:
    """The memo is keyed on every argument: each variation renders as if rendered afresh."""
    variations: list[dict[str, Any]] = [
        {},
        {"method": b"HEAD"},
        {"http11": False},
        {"keep_alive": False},
        {"body_length": 6},
        {"body_length": None},
        {"date": b"Tue, 24 Nov 2026 00:00:00 GMT"},
        {"server": b"other"},
        {"status": 204},
        {"status": 404},
        {"headers": [(b"content-type", b"text/html")]},
        {"headers": [(b"x-app", b"1"), (b"connection", b"close")]},  # the app asks to close
    ]
    results = [render(**v) for v in variations]
    for _ in range(repeat):  # again, now from the memo
        assert [render(**v) for v in variations] == results
    assert len(set(results)) == len(results)  # every variation answers differently
    assert results[1][1] is False  # HEAD: no body
    assert b"connection: keep-alive" in results[2][0]
    assert results[3][4] is True and b"connection: close" in results[3][0]
    assert results[5][3] is True and b"transfer-encoding: chunked" in results[5][0]
    assert results[11][4] is True


def test_fields_given_as_a_one_shot_iterable_are_all_rendered() -> None:
    fields = ((b"x-a", b"1"), (b"x-b", b"2"))
    head, *_ = render(headers=iter(fields))
    assert b"x-a: 1\r\nx-b: 2\r\n" in head
    head2, *_ = render(headers=(f for f in fields))
    assert head2 == head


def test_unhashable_fields_are_rendered_without_the_memo() -> None:
    head, *_ = render(headers=[[b"x-a", b"1"]])  # lists, not tuples: cannot be a memo key
    assert b"x-a: 1\r\n" in head


@pytest.mark.parametrize(
    "field", [(b"bad name", b"v"), (b"x", b"a\r\nb"), (b"x", b"a\x00"), (b"x", b" lead")]
)
def test_bad_fields_raise_every_time(field: tuple[bytes, bytes]) -> None:
    for _ in itertools.repeat(None, 2):  # a failure is never memoised as a success
        with pytest.raises(ValueError):
            render(headers=[field])


def test_render_error_is_a_complete_closing_text_response() -> None:
    response = render_error(400, "bad framing", date=DATE, server=b"pp")
    assert response == (
        b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"date: " + DATE + b"\r\nserver: pp\r\ncontent-length: 12\r\nconnection: close\r\n\r\n"
        b"bad framing\n"
    )
    head_only = render_error(400, "bad framing", date=DATE, server=b"pp", head_only=True)
    assert head_only == response[: -len(b"bad framing\n")]  # a HEAD's: the length, no body
