"""Request mixes (`pipeparse.clients.load.mix`): the JSON-lines format, its errors, the weighted
cycle.

The same parser serves `pipeparse load --requests FILE` and the Locust user's ``requests``, so
both are tested here through `load_mix` and `parse_mix`.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from pipeparse.clients.load.mix import (
    MAX_CYCLE,
    Mix,
    RequestSpec,
    load_mix,
    parse_mix,
    weighted_cycle,
)
from pipeparse.clients.load.request import parse_url


def write_lines(path: Path, *lines: object) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_a_mix_file_with_every_key(tmp_path: Path) -> None:
    (tmp_path / "payload.bin").write_bytes(b"\x00\x01binary")
    mix = write_lines(
        tmp_path / "mix.jsonl",
        {"target": "/plaintext"},
        "",
        {
            "method": "POST",
            "target": "/echo?x=1",
            "headers": {"Content-Type": "text/plain", "X-A": "1"},
            "body": "héllo",
            "weight": 3,
        },
        {"method": "PUT", "target": "/f", "headers": [["X-B", "2"]], "body_file": "payload.bin"},
    )
    assert load_mix(mix) == [
        RequestSpec("/plaintext"),
        RequestSpec(
            "/echo?x=1",
            "POST",
            (("Content-Type", "text/plain"), ("X-A", "1")),
            "héllo".encode(),
            3,
        ),
        RequestSpec("/f", "PUT", (("X-B", "2"),), b"\x00\x01binary"),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"target": "/", "wieght": 2}', "unknown key 'wieght'"),
        ('{"method": "GET"}', "'target' must be a string starting with '/'"),
        ('{"target": "http://a/"}', "'target' must be a string starting with '/'"),
        ('{"target": "/a b"}', "spaces or non-ASCII"),
        ('{"target": "/", "weight": 0}', "'weight' must be a positive integer"),
        ('{"target": "/", "weight": 1.5}', "'weight' must be a positive integer"),
        ('{"target": "/", "weight": true}', "'weight' must be a positive integer"),
        ('{"target": "/", "method": "G T"}', "invalid method"),
        ('{"target": "/", "headers": {"Bad Name": "x"}}', "invalid header name"),
        ('{"target": "/", "headers": {"X": "a\\nb"}}', "invalid characters"),
        ('{"target": "/", "headers": {"Content-Length": "3"}}', "set by the client"),
        ('{"target": "/", "headers": [["X"]]}', "[name, value] pair"),
        ('{"target": "/", "headers": "X: 1"}', "'headers' must be an object"),
        ('{"target": "/", "body": "a", "body_file": "b"}', "not both"),
        ('{"target": "/", "body": 3}', "'body' must be a string"),
        ('{"target": "/", "body_file": "missing.bin"}', "cannot read body_file 'missing.bin'"),
    ],
)
def test_a_bad_line_is_an_error_naming_its_line(tmp_path: Path, line: str, message: str) -> None:
    path = write_lines(tmp_path / "mix.jsonl", {"target": "/ok"}, "", line)
    with pytest.raises(ValueError) as info:
        load_mix(path)
    assert str(info.value).startswith(f"{path}:3: ")
    assert message in str(info.value)


def test_an_empty_or_unreadable_file_is_an_error(tmp_path: Path) -> None:
    empty = write_lines(tmp_path / "empty.jsonl", "", "  ")
    with pytest.raises(ValueError, match="no requests in the file"):
        load_mix(empty)
    with pytest.raises(ValueError, match="cannot read"):
        load_mix(tmp_path / "absent.jsonl")
    (tmp_path / "latin.jsonl").write_bytes(b'{"target": "/\xe9"}\n')
    with pytest.raises(ValueError, match="not UTF-8"):
        load_mix(tmp_path / "latin.jsonl")


def test_a_python_list_uses_the_same_parser_and_names_the_index() -> None:
    assert parse_mix([{"target": "/a", "weight": 2}, RequestSpec("/b")]) == [
        RequestSpec("/a", weight=2),
        RequestSpec("/b"),
    ]
    with pytest.raises(ValueError, match=r"^requests\[1\]: unknown key 'path'"):
        parse_mix([{"target": "/a"}, {"path": "/b"}])
    with pytest.raises(ValueError, match="requests is empty"):
        parse_mix([])
    with pytest.raises(ValueError, match="must be a list"):
        parse_mix("/a")


def test_the_cycle_sends_each_request_weight_times_spread_out() -> None:
    assert weighted_cycle([1]) == [0]
    assert weighted_cycle([5, 1, 1]) == [0, 0, 1, 0, 2, 0, 0]  # nginx's documented order
    assert weighted_cycle([4, 2]) == [0, 1, 0]  # divided by the common divisor first
    cycle = weighted_cycle([7, 2, 1])
    assert Counter(cycle) == {0: 7, 1: 2, 2: 1}
    with pytest.raises(ValueError, match=f"at most {MAX_CYCLE}"):
        weighted_cycle([MAX_CYCLE, 1])


def test_a_rendered_mix_slices_any_window_of_the_cycle() -> None:
    specs = [RequestSpec("/a", weight=2), RequestSpec("/b", "POST", body=b"xy")]
    mix = Mix(
        specs, parse_url("http://127.0.0.1:8080/ignored"), lookahead=4, extra_headers=[("X", "1")]
    )
    assert len(mix) == 3 and mix.cycle == [0, 1, 0]
    a = b"GET /a HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nX: 1\r\n\r\n"
    b = b"POST /b HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nX: 1\r\nContent-Length: 2\r\n\r\nxy"
    assert mix.rendered == [a, b]
    assert mix.one_method is None
    assert mix.methods == [b"GET", b"POST", b"GET", b"GET", b"POST", b"GET", b"GET"]
    sequence = [a, b, a] * 3
    for pos in range(3):
        for k in range(5):
            window = mix.data[mix.offsets[pos] : mix.offsets[pos + k]]
            assert window == b"".join(sequence[pos : pos + k])
    assert Mix([RequestSpec("/")], parse_url("http://h/"), 2).one_method == b"GET"
