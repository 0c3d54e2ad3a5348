"""Request mixes: several requests with weights, shared by `pipeparse load --requests FILE` and
the Locust user's ``requests = [...]`` (`pipeparse.locust`).

Strategy: one parser for both. A mix file is JSON lines, one request per line; the Locust user
gives the same objects as a Python list. Each object has ``target`` (origin form, ``/path?q``),
and optionally ``method`` (GET), ``headers`` (an object or a list of ``[name, value]`` pairs),
``body`` (text, sent as UTF-8) or ``body_file`` (a path, relative to the mix file), and
``weight`` (a positive integer, default 1). Unknown keys are errors, so a typo is never ignored;
each error names its line (``FILE:LINE: ...``) or its list index.

A mix is sent as a fixed cycle, the smooth weighted round robin (nginx's upstream order): over
one cycle of ``sum(weights)`` requests (after dividing by their common divisor) each request is
sent exactly `weight` times, interleaved as evenly as the weights allow. Every request is
rendered to bytes once (`load_request.render_request`, with all its checks), so sending k
requests of the cycle is one slice of one buffer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeparse.clients.load.request import Target, render_request

__all__ = [
    "MAX_CYCLE",
    "Mix",
    "RequestSpec",
    "load_mix",
    "parse_mix",
    "parse_spec",
    "weighted_cycle",
]

MAX_CYCLE = 10_000  # requests in one cycle (the weights' sum, after dividing by their gcd)
_KEYS = frozenset({"method", "target", "headers", "body", "body_file", "weight"})


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One request of a mix, as given (rendered later, against a server's address)."""

    target: str
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    weight: int = 1


def parse_spec(item: Any, base_dir: Path | None = None) -> RequestSpec:
    """One mix entry from its JSON object (a dict); raises ValueError with the reason.

    `body_file` is read relative to `base_dir` (the current directory when None).
    """
    if not isinstance(item, Mapping):
        raise ValueError(f"expected a JSON object, got {type(item).__name__}")
    unknown = sorted(set(item) - _KEYS)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} (keys: {', '.join(sorted(_KEYS))})")
    target = item.get("target")
    if not isinstance(target, str) or not target.startswith("/"):
        raise ValueError(f"'target' must be a string starting with '/', got {target!r}")
    method = item.get("method", "GET")
    if not isinstance(method, str) or not method:
        raise ValueError(f"'method' must be a non-empty string, got {method!r}")
    weight = item.get("weight", 1)
    if not isinstance(weight, int) or isinstance(weight, bool) or weight < 1:
        raise ValueError(f"'weight' must be a positive integer, got {weight!r}")
    if "body" in item and "body_file" in item:
        raise ValueError("give 'body' or 'body_file', not both")
    body = b""
    if "body" in item:
        text = item["body"]
        if not isinstance(text, str):
            raise ValueError(f"'body' must be a string, got {type(text).__name__}")
        body = text.encode("utf-8")
    elif "body_file" in item:
        name = item["body_file"]
        if not isinstance(name, str) or not name:
            raise ValueError(f"'body_file' must be a file name, got {name!r}")
        path = Path(name)
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        try:
            body = path.read_bytes()
        except OSError as e:
            raise ValueError(f"cannot read body_file {name!r}: {e.strerror or e}") from None
    if any(c <= " " or c > "~" for c in target):
        raise ValueError(f"the target {target!r} has spaces or non-ASCII characters")
    spec = RequestSpec(target, method, _headers(item.get("headers", ())), body, weight)
    # Render once against a placeholder server: every check of a request happens here, where
    # the error can still name its line.
    render_request(method, Target("example", 80, "example", target), list(spec.headers), body)
    return spec


def _headers(value: Any) -> tuple[tuple[str, str], ...]:
    pairs: Iterable[Any]
    if isinstance(value, Mapping):
        pairs = value.items()
    elif isinstance(value, list | tuple):
        pairs = value
    else:
        raise ValueError(f"'headers' must be an object or a list of pairs, got {value!r}")
    out = []
    for pair in pairs:
        if (
            not isinstance(pair, list | tuple)
            or len(pair) != 2
            or not all(isinstance(x, str) for x in pair)
        ):
            raise ValueError(f"a header must be a [name, value] pair of strings, got {pair!r}")
        out.append((pair[0], pair[1]))
    return tuple(out)


def parse_mix(items: Sequence[Any], base_dir: Path | None = None) -> list[RequestSpec]:
    """A Python list of entries (the Locust user's ``requests``); errors name the index."""
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise ValueError("requests must be a list of request objects")
    specs = []
    for i, item in enumerate(items):
        try:
            specs.append(item if isinstance(item, RequestSpec) else parse_spec(item, base_dir))
        except ValueError as e:
            raise ValueError(f"requests[{i}]: {e}") from None
    if not specs:
        raise ValueError("requests is empty")
    return specs


def load_mix(path: Path) -> list[RequestSpec]:
    """A mix file: JSON lines (blank lines skipped); errors name the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    specs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            specs.append(parse_spec(json.loads(line), path.parent))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{number}: not JSON: {e.msg} (column {e.colno})") from None
        except ValueError as e:
            raise ValueError(f"{path}:{number}: {e}") from None
    if not specs:
        raise ValueError(f"{path}: no requests in the file")
    return specs


def weighted_cycle(weights: Sequence[int]) -> list[int]:
    """The order of one cycle: indexes into `weights`, each `weight / gcd` times, spread out
    (smooth weighted round robin); raises ValueError if the cycle exceeds `MAX_CYCLE`."""
    g = math.gcd(*weights)
    w = [x // g for x in weights]
    total = sum(w)
    if total > MAX_CYCLE:
        raise ValueError(
            f"the weights add up to {total} (after dividing by their common divisor {g}); "
            f"at most {MAX_CYCLE}"
        )
    current = [0] * len(w)
    order = []
    for _ in range(total):
        for i, x in enumerate(w):
            current[i] += x
        best = max(range(len(w)), key=current.__getitem__)  # the first of the largest
        current[best] -= total
        order.append(best)
    return order


class Mix:
    """A mix rendered against a server: the cycle's requests as bytes, ready to slice.

    Attributes:
        specs: the requests as given.
        cycle: spec index of each position of the cycle.
        rendered: each spec's bytes.
        methods: each position's method (bytes, for `ResponseIndex.expect`).
        one_method: the method when all are the same, else None.
        data: the cycle's bytes followed by its first `lookahead` requests again, so that any
            `lookahead` consecutive requests are one slice ``data[offsets[p]:offsets[p + k]]``.
        offsets: where each position starts in `data` (``len(cycle) + lookahead + 1`` entries).
    """

    def __init__(
        self,
        specs: Sequence[RequestSpec],
        server: Target,
        lookahead: int,
        extra_headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.specs = list(specs)
        self.cycle = weighted_cycle([s.weight for s in self.specs])
        self.rendered = [
            render_request(
                s.method,
                Target(server.host, server.port, server.authority, s.target),
                [*extra_headers, *s.headers],
                s.body,
            )
            for s in self.specs
        ]
        n = len(self.cycle)
        positions = [self.cycle[p % n] for p in range(n + lookahead)]
        self.methods = [self.specs[i].method.encode("ascii") for i in positions]
        distinct = set(self.methods)
        self.one_method = self.methods[0] if len(distinct) == 1 else None
        self.data = b"".join(self.rendered[i] for i in positions)
        self.offsets = [0]
        for i in positions:
            self.offsets.append(self.offsets[-1] + len(self.rendered[i]))

    def __len__(self) -> int:
        return len(self.cycle)
