"""KernelSeekableSocket over real loopback TCP sockets, against a model of the stream.

The sender writes a whole stream and closes its side before the receiver starts, so every byte
is in the receiver's kernel queue (the streams are far below loopback's receive buffer) and the
end of the stream is an EOF. Taking the stream's messages in any order gives the bytes of an
in-order read; random sequences of seeks, peeks and receives are checked, call by call, against
a model that keeps the taken bytes as a set and derives the expected hole list from it.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeparse import KernelSeekableSocket


@contextmanager
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        sender = socket.create_connection(listener.getsockname(), timeout=10)
        receiver, _ = listener.accept()
    receiver.settimeout(10)  # a hang is a failure
    with sender, receiver:
        yield sender, receiver


def seekable(sock: socket.socket) -> KernelSeekableSocket:
    try:
        return KernelSeekableSocket(sock)
    except OSError as e:  # pragma: no cover - depends on the kernel
        pytest.skip(f"no kernel seeking here: {e}")


def stream_of(data: bytes) -> Iterator[KernelSeekableSocket]:
    with tcp_pair() as (sender, receiver):
        sender.sendall(data)
        sender.shutdown(socket.SHUT_WR)
        yield seekable(receiver)


def test_messages_taken_in_any_order_read_as_the_stream() -> None:
    rng = random.Random(7)
    for _ in range(20):
        sizes = [rng.choice([1, 10, 100, 1000, 4096]) for _ in range(rng.randint(1, 16))]
        data = rng.randbytes(sum(sizes))
        offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        order = list(range(len(sizes)))
        rng.shuffle(order)
        for ks in stream_of(data):
            got = {}
            for i in order:
                # Offsets are relative to the head, which moves when its hole is discarded.
                got[i] = bytes(ks.seek_recv(offsets[i] - ks.head, sizes[i]))
            assert b"".join(got[i] for i in range(len(sizes))) == data
            assert (ks.head, ks.holes) == (len(data), [])  # every byte was discarded
            assert bytes(ks.recv(10)) == b""  # and the stream is at its end


Op = tuple[str, int, int]
kinds = st.sampled_from(["seek_recv", "peek", "recv"])
ops = st.lists(st.tuples(kinds, st.integers(0, 300), st.integers(0, 120)), max_size=30)


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=600), ops)
def test_random_operations_match_the_model(data: bytes, calls: list[Op]) -> None:
    for ks in stream_of(data):
        taken: set[int] = set()
        head = 0
        for kind, offset, n in calls:
            if kind == "recv":
                end = head + n
                for a in sorted(taken):
                    if a >= head:
                        end = min(end, a)
                        break
                end = min(end, len(data))
                assert bytes(ks.recv(n)) == data[head:end]
                head = end
            else:
                start = head + offset
                wanted = range(start, start + n)
                if taken.intersection(wanted):
                    with pytest.raises(ValueError, match="overlaps taken bytes"):
                        getattr(ks, kind)(offset, n)
                elif n and start + n > len(data):  # (taking 0 bytes reads nothing)
                    with pytest.raises(EOFError):
                        getattr(ks, kind)(offset, n)
                else:
                    assert bytes(getattr(ks, kind)(offset, n)) == data[start : start + n]
                    if kind == "seek_recv":
                        taken.update(wanted)
            while head in taken:  # the head jumps over a hole it reaches
                head += 1
            assert (ks.head, ks.holes) == (head, holes_of(taken, head))


def holes_of(taken: set[int], head: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a in sorted(b for b in taken if b >= head):
        if out and out[-1][1] == a:
            out[-1] = (out[-1][0], a + 1)
        else:
            out.append((a, a + 1))
    return out


def test_recv_stops_at_a_hole_and_skips_it() -> None:
    for ks in stream_of(b"0123456789"):
        assert bytes(ks.seek_recv(4, 2)) == b"45"
        assert ks.holes == [(4, 6)]
        assert bytes(ks.recv(100)) == b"0123"  # up to the hole
        assert bytes(ks.recv(100)) == b"6789"  # the hole was discarded, uncopied
        assert ks.holes == []


def test_non_blocking_seek_takes_nothing_until_all_bytes_arrived() -> None:
    with tcp_pair() as (sender, receiver):
        ks = seekable(receiver)
        receiver.setblocking(False)
        with pytest.raises(BlockingIOError):
            ks.recv(4)
        sender.sendall(b"abcdef")
        receiver.settimeout(10)
        assert bytes(ks.peek(0, 6)) == b"abcdef"  # (waits for all six bytes)
        receiver.setblocking(False)
        with pytest.raises(BlockingIOError):
            ks.seek_recv(4, 4)  # two of its bytes have not arrived
        assert ks.holes == []
        sender.sendall(b"gh")
        receiver.settimeout(10)
        assert bytes(ks.peek(6, 2)) == b"gh"
        receiver.setblocking(False)
        assert bytes(ks.seek_recv(4, 4)) == b"efgh"
        assert bytes(ks.seek_recv(0, 4)) == b"abcd"
        assert (ks.head, ks.holes) == (8, [])


def test_bad_arguments() -> None:
    for ks in stream_of(b"abc"):
        with pytest.raises(ValueError, match="must not be negative"):
            ks.seek_recv(-1, 1)
        with pytest.raises(ValueError, match="must not be negative"):
            ks.recv(-1)


def test_only_stream_sockets_with_so_peek_off() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
        pytest.raises(ValueError, match="a stream socket is needed"),
    ):
        KernelSeekableSocket(udp)

    class NoPeekOff(socket.socket):
        def setsockopt(self, *args: object) -> None:
            raise OSError(95, "Operation not supported")

    with (
        NoPeekOff(socket.AF_INET, socket.SOCK_STREAM) as old_kernel,
        pytest.raises(OSError, match="this kernel has no SO_PEEK_OFF for AF_INET"),
    ):
        KernelSeekableSocket(old_kernel)
