"""Bounded body reads: the deadline thread cuts a read that waits too long, and gives a read that starts while
another one waits a shorter deadline (real sockets, real time, short timeouts)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from api.request_body import ReadDeadlines


@pytest.fixture
def socket_pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    pairs: list[tuple[socket.socket, socket.socket]] = []
    yield pairs
    for server, client in pairs:
        server.close()
        client.close()


def blocked_read_seconds(connection: socket.socket) -> float:
    """How long a recv on `connection` blocks before it sees end-of-file (no data is ever sent)."""
    started = time.monotonic()
    assert connection.recv(10) == b""
    return time.monotonic() - started


def test_a_read_that_waits_past_its_deadline_is_cut_and_a_finished_one_is_left_alone(
    socket_pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    deadlines = ReadDeadlines(0.4, congested_timeout_seconds=0.4)
    server, client = socket.socketpair()
    socket_pairs.append((server, client))
    watch = deadlines.watch(server)
    assert 0.3 < blocked_read_seconds(server) < 2.0
    assert deadlines.finish(watch) is True  # the caller learns it was cut: 408

    quick_server, quick_client = socket.socketpair()
    socket_pairs.append((quick_server, quick_client))
    quick = deadlines.watch(quick_server)
    assert deadlines.finish(quick) is False
    time.sleep(0.6)  # past its deadline: still open for the next request on the connection
    quick_client.sendall(b"next request")
    assert quick_server.recv(20) == b"next request"


def test_a_read_that_starts_while_another_waits_gets_the_short_deadline(
    socket_pairs: list[tuple[socket.socket, socket.socket]],
) -> None:
    deadlines = ReadDeadlines(2.0, congested_timeout_seconds=0.2)
    first_server, first_client = socket.socketpair()
    second_server, second_client = socket.socketpair()
    socket_pairs += [(first_server, first_client), (second_server, second_client)]
    first = deadlines.watch(first_server)
    second = deadlines.watch(second_server)
    assert blocked_read_seconds(second_server) < 1.0
    assert deadlines.finish(second) is True
    assert deadlines.finish(first) is False  # the first keeps its full timeout
    # Once nothing waits, a new read gets the full timeout again.
    third_server, third_client = socket.socketpair()
    socket_pairs.append((third_server, third_client))
    third = deadlines.watch(third_server)
    assert 1.5 < blocked_read_seconds(third_server) < 4.0
    assert deadlines.finish(third) is True
