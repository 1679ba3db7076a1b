"""Reading a small request body under a size limit and a total deadline, from a plain WSGI callable.

The webhooks face the internet, so a body is read only after the cheap checks passed, never beyond
`WEBHOOK_MAX_BODY_BYTES` (a `Content-Length` above it is refused unread; a chunked body is cut at the limit) and
never for longer than `WEBHOOK_READ_TIMEOUT_SECONDS` in all (less while another read waits: `ReadDeadlines`).
A socket timeout cannot give that total deadline: gunicorn's body reader loops over `recv` until it has what it
was asked for, and each `recv` gets the whole timeout again, so a client sending a byte a second would hold a
thread for hours. Instead `ReadDeadlines` keeps
one thread per process that shuts the read side of a socket whose deadline passed: the blocked `recv` then
returns end-of-file at once and the request is answered 408.

Under gunicorn the socket is `environ["gunicorn.socket"]`; other servers (the Flask test client) give none, and
only the size limit applies there.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

WSGIEnvironment = dict[str, Any]
GUNICORN_SOCKET_KEY = "gunicorn.socket"
READ_STEP_BYTES = 4096
# The deadline of a read that starts while another read of this process is already waiting (see ReadDeadlines).
CONGESTED_TIMEOUT_SECONDS = 0.5


class BodyRefused(Exception):
    """The body was not (fully) read: its HTTP status and why."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class _Watch:
    __slots__ = ("connection", "deadline", "done", "expired")

    def __init__(self, connection: socket.socket, deadline: float) -> None:
        self.connection = connection
        self.deadline = deadline
        self.done = False  # the reader finished (or gave up) before the deadline
        self.expired = False  # the deadline passed first: the read side was shut

    def __lt__(self, other: _Watch) -> bool:
        return self.deadline < other.deadline


class ReadDeadlines:
    """Shuts the read side of a socket whose body is not in by its deadline (one thread per process).

    A read gets `timeout_seconds` when it is the only one waiting in this process, and
    `CONGESTED_TIMEOUT_SECONDS` when another is already waiting. A genuine body is in the socket with its headers,
    so its read never waits at all; slow clients are what make reads wait, and gunicorn queues every connection
    a process accepted behind that process's few threads. Without the shorter deadline, twenty slow clients that
    land on one process of two threads would hold it for ten rounds of the full timeout while genuine callbacks
    queue behind them; with it, only one of them at a time gets the full timeout.
    A finished read is only marked done (constant time) and dropped when its deadline comes up.
    """

    def __init__(
        self,
        timeout_seconds: float,
        congested_timeout_seconds: float = CONGESTED_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout_seconds = timeout_seconds
        self.congested_timeout_seconds = min(timeout_seconds, congested_timeout_seconds)
        self._clock = clock
        self._condition = threading.Condition()
        self._deadlines: list[_Watch] = []  # a heap, earliest deadline first
        self._waiting = 0  # reads in progress in this process
        self._owner_pid: int | None = None

    def watch(self, connection: socket.socket) -> _Watch:
        with self._condition:
            if self._owner_pid != os.getpid():  # first use, or in a forked child: its own thread
                self._owner_pid = os.getpid()
                self._deadlines.clear()
                self._waiting = 0
                threading.Thread(target=self._run, name="webhook-read-deadlines", daemon=True).start()
            timeout = self.timeout_seconds if self._waiting == 0 else self.congested_timeout_seconds
            watch = _Watch(connection, self._clock() + timeout)
            self._waiting += 1
            heapq.heappush(self._deadlines, watch)
            if self._deadlines[0] is watch:
                self._condition.notify()
        return watch

    def finish(self, watch: _Watch) -> bool:
        """Stop watching; True when the deadline had already cut the read."""
        with self._condition:
            if not watch.done:
                watch.done = True
                self._waiting -= 1
            return watch.expired

    def _run(self) -> None:
        with self._condition:
            while True:
                while self._deadlines and self._deadlines[0].done:
                    heapq.heappop(self._deadlines)
                if not self._deadlines:
                    self._condition.wait()
                    continue
                head = self._deadlines[0]
                remaining = head.deadline - self._clock()
                if remaining > 0:
                    self._condition.wait(remaining)
                    continue
                heapq.heappop(self._deadlines)
                # Under the lock, so a reader that called finish() never has its socket (or a reused one) cut.
                head.expired = True
                stop_reading_socket(head.connection)


def stop_reading_socket(connection: socket.socket) -> None:
    """Shut the read side: a blocked `recv` returns end-of-file, and so does every later one once the data
    already buffered is gone; the answer can still be written, then the server closes the connection."""
    with contextlib.suppress(OSError):  # already closed by the client
        connection.shutdown(socket.SHUT_RD)


def stop_reading(environ: WSGIEnvironment) -> None:
    """After a refusal: read nothing more of this request. Without this gunicorn would drain up to 64 KiB of the
    unread body (waiting up to 5 s for it) to keep the connection alive."""
    connection = environ.get(GUNICORN_SOCKET_KEY)
    if isinstance(connection, socket.socket) and str(environ.get("SERVER_PROTOCOL", "")).startswith("HTTP/1"):
        stop_reading_socket(connection)


def declared_length(environ: WSGIEnvironment) -> int | None:
    """The Content-Length, None when absent (chunked); raises BodyRefused when it is not a number."""
    raw = str(environ.get("CONTENT_LENGTH") or "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise BodyRefused(400, "The Content-Length header is not a number.")
    return int(raw)


def read_bounded_body(environ: WSGIEnvironment, limit: int, deadlines: ReadDeadlines) -> bytes:
    """The whole body, at most `limit` bytes, read within the deadline; raises BodyRefused (413, 408, 400)."""
    length = declared_length(environ)
    if length is not None and length > limit:
        raise BodyRefused(413, f"A Twilio webhook body is at most {limit} bytes.")
    if length is None and not environ.get("wsgi.input_terminated"):
        return b""  # no Content-Length and a server that does not frame the body: WSGI says there is none
    wanted = limit + 1 if length is None else length
    stream = environ["wsgi.input"]
    connection = environ.get(GUNICORN_SOCKET_KEY)
    watch = deadlines.watch(connection) if isinstance(connection, socket.socket) else None
    chunks: list[bytes] = []
    received = 0
    try:
        while received < wanted:
            chunk = stream.read(min(READ_STEP_BYTES, wanted - received))
            if not chunk:
                break
            chunks.append(chunk)
            received += len(chunk)
    except (OSError, ValueError) as error:  # gunicorn: a malformed chunk, or the connection cut under it
        if watch is None or not deadlines.finish(watch):
            raise BodyRefused(400, "The request body could not be read.") from error
    finally:
        expired = watch is not None and deadlines.finish(watch)
    if expired:
        raise BodyRefused(408, "The request body did not arrive in time.")
    if received > limit:
        raise BodyRefused(413, f"A Twilio webhook body is at most {limit} bytes.")
    if length is not None and received < length:
        raise BodyRefused(400, "The request body ended before its Content-Length.")
    return b"".join(chunks)
