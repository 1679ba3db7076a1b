"""Requests to client URLs (shared.platform.outbound): which addresses are refused, and the POST itself against
real local servers: one deadline for the whole request, no redirects, no proxies, one DNS lookup."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from shared.platform.outbound import (
    UnsafeDestinationError,
    address_problem,
    destination_problem,
    post_with_deadline,
)


@pytest.mark.parametrize(
    ("address", "refused_as"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd12::1", "private"),
        ("169.254.10.1", "link-local"),
        ("fe80::1", "link-local"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "metadata"),
        ("::ffff:10.0.0.1", "private"),
        ("0.0.0.0", "private"),
        ("100.64.0.1", "not a public"),
        ("224.0.0.1", "not a public"),
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_which_addresses_are_refused(address: str, refused_as: str | None) -> None:
    problem = address_problem(ipaddress.ip_address(address))
    if refused_as is None:
        assert problem is None
    else:
        assert problem is not None and refused_as in problem


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9000/done",
        "http://localhost/done",
        "https://[::1]/x",
        "https://[::ffff:127.0.0.1]/x",
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.5/hook",
    ],
)
def test_a_url_into_our_own_network_is_refused_unless_allowed(url: str) -> None:
    assert destination_problem(url, allow_private=False) is not None
    assert destination_problem(url, allow_private=True) is None


def test_a_host_that_does_not_resolve_now_is_let_through_intake_but_never_posted_to() -> None:
    url = "https://does-not-exist.invalid/hook"
    assert destination_problem(url, allow_private=False) is None
    with pytest.raises(UnsafeDestinationError, match="does not resolve"):
        post_with_deadline(url, b"{}", {}, deadline_seconds=2.0, allow_private=False)


class RawServer:
    """A TCP server on 127.0.0.1 that answers every connection with `respond(connection)`; counts connections."""

    def __init__(self, respond: Any) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.paths: list[str] = []
        self.respond = respond
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(connection,), daemon=True).start()

    def _handle(self, connection: socket.socket) -> None:
        with connection:
            request = b""
            while b"\r\n\r\n" not in request:
                data = connection.recv(4096)
                if not data:
                    return
                request += data
            self.paths.append(request.split(b" ", 2)[1].decode())
            with contextlib.suppress(OSError):  # the client gave up: what a cut-off looks like from here
                self.respond(connection)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def servers() -> Iterator[list[RawServer]]:
    started: list[RawServer] = []
    yield started
    for server in started:
        server.close()


def answer(status: str, extra: str = "") -> Any:
    def respond(connection: socket.socket) -> None:
        connection.sendall(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\n{extra}\r\n".encode())

    return respond


def test_a_server_that_trickles_its_answer_is_cut_off_at_the_deadline(servers: list[RawServer]) -> None:
    def trickle(connection: socket.socket) -> None:
        # One byte every 1.5 s: every single read finishes well within any per-read timeout.
        for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":
            connection.sendall(bytes([byte]))
            time.sleep(1.5)

    server = RawServer(trickle)
    servers.append(server)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        post_with_deadline(f"http://127.0.0.1:{server.port}/hook", b"{}", {}, deadline_seconds=2.0, allow_private=True)
    assert time.monotonic() - started < 3.0


def test_a_redirect_is_not_followed(servers: list[RawServer]) -> None:
    target = RawServer(answer("200 OK"))
    redirecting = RawServer(answer("302 Found", f"Location: http://127.0.0.1:{target.port}/internal\r\n"))
    servers.extend([target, redirecting])

    response = post_with_deadline(
        f"http://127.0.0.1:{redirecting.port}/hook?x=1", b"{}", {}, deadline_seconds=5.0, allow_private=True
    )

    assert response.status == 302
    assert redirecting.paths == ["/hook?x=1"]
    assert target.connections == 0


def test_proxy_settings_in_the_environment_are_ignored(
    servers: list[RawServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = RawServer(answer("204 No Content"))
    servers.append(server)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)

    response = post_with_deadline(
        f"http://127.0.0.1:{server.port}/hook", b"{}", {}, deadline_seconds=5.0, allow_private=True
    )

    assert response.status == 204 and server.connections == 1


def test_the_host_is_resolved_once_and_the_checked_address_is_the_one_connected_to(
    servers: list[RawServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = RawServer(answer("200 OK"))
    servers.append(server)
    lookups: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def rebinding_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        # A rebinding DNS server: the first answer is the one checked; any later lookup would get another.
        lookups.append(host)
        if len(lookups) > 1:
            raise AssertionError("resolved a second time")
        return real_getaddrinfo("127.0.0.1", *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_getaddrinfo)
    response = post_with_deadline(
        f"http://callbacks.example.test:{server.port}/hook", b"{}", {}, deadline_seconds=5.0, allow_private=True
    )

    assert response.status == 200 and lookups == ["callbacks.example.test"]


def test_a_forbidden_address_is_refused_at_send_time_before_any_connection(servers: list[RawServer]) -> None:
    server = RawServer(answer("200 OK"))
    servers.append(server)
    with pytest.raises(UnsafeDestinationError):
        post_with_deadline(f"http://127.0.0.1:{server.port}/hook", b"{}", {}, deadline_seconds=5.0, allow_private=False)
    assert server.connections == 0
