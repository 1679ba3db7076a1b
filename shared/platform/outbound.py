"""Requests we make to URLs a client gave us (completion callbacks), and the destination check behind them.

A client's URL must not turn bulksms into a probe of our own network (blind SSRF): its host is resolved and every
address must be public, unless ALLOW_PRIVATE_CALLBACK_URLS (development). The same check runs at intake (a 400)
and again before each POST, and the request then connects to the very address that was checked, so a DNS answer that
changes in between (rebinding) cannot redirect it. No proxy from the environment is used (http.client reads none),
redirects are not followed, and the whole request (connect, TLS, request, response head) has one deadline: a
server trickling a byte every few seconds is cut off when it passes, not after each read.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

# Instance metadata services answer on these (AWS, GCP, Azure, ...): named so the refusal says what it is.
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
# What the response may carry that we read: the status line and headers; the body is not needed.
MAX_RESPONSE_HEAD_BYTES = 64 * 1024

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeDestinationError(ValueError):
    """The URL's host is not one we may send to; the message says why, for the client."""


class UnresolvableHostError(UnsafeDestinationError):
    """The URL's host has no address (now)."""


def address_problem(address: IPAddress) -> str | None:
    """Why requests must not go to `address` (loopback, private, link-local, metadata, ...), or None when public."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # ::ffff:127.0.0.1 reaches 127.0.0.1: judge the IPv4 address it stands for.
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return f"{address} is a cloud metadata address"
    if address.is_loopback:
        return f"{address} is a loopback address"
    if address.is_link_local:
        return f"{address} is a link-local address"
    if address.is_private:
        return f"{address} is a private address"
    if address.is_multicast or address.is_unspecified or address.is_reserved or not address.is_global:
        return f"{address} is not a public address"
    return None


def resolve_destination(url: str, *, allow_private: bool) -> tuple[str, int, list[IPAddress]]:
    """(host, port, addresses) of `url`, every address checked; raises UnsafeDestinationError.

    One DNS lookup: the caller connects to these addresses and never resolves the host again.
    """
    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        raise UnsafeDestinationError("Must be an http(s) URL with a host.")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        raise UnresolvableHostError(f"The host {host} does not resolve.") from None
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise UnresolvableHostError(f"The host {host} does not resolve.")
    if not allow_private:
        for address in addresses:
            problem = address_problem(address)
            if problem is not None:
                raise UnsafeDestinationError(f"The host {host} resolves to {problem}; only public hosts are allowed.")
    return host, port, addresses


def destination_problem(url: str, *, allow_private: bool) -> str | None:
    """Why `url` may not be requested by us (resolved now), or None.

    A host that does not resolve now is no way into our network: it is let through (DNS may be failing for a
    moment), and the check before each POST refuses whatever it resolves to later if that is not public.
    """
    try:
        resolve_destination(url, allow_private=allow_private)
    except UnresolvableHostError:
        return None
    except UnsafeDestinationError as error:
        return str(error)
    return None


@dataclass(frozen=True, slots=True)
class OutboundResponse:
    status: int


class _PinnedConnection(http.client.HTTPSConnection):
    """An HTTP(S) connection to checked addresses only (tried in order, never looked up again); TLS still
    verifies the certificate for the URL's host name."""

    def __init__(
        self,
        host: str,
        port: int,
        addresses: list[IPAddress],
        *,
        use_tls: bool,
        timeout: float,
        context: ssl.SSLContext,
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._addresses = addresses
        self._use_tls = use_tls
        self._tls_context = context

    def connect(self) -> None:
        last_error: OSError | None = None
        for address in self._addresses:
            family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            self.sock = sock  # visible to the deadline's cut-off while connecting
            try:
                sock.connect((str(address), self.port))
            except OSError as error:
                sock.close()
                last_error = error
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = self._tls_context.wrap_socket(sock, server_hostname=self.host) if self._use_tls else sock
            return
        raise last_error or OSError("no address to connect to")


def post_with_deadline(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    deadline_seconds: float,
    allow_private: bool,
) -> OutboundResponse:
    """POST `body` to `url`, checked and pinned to the resolved address, within `deadline_seconds` in all.

    Raises UnsafeDestinationError (the host now resolves somewhere forbidden), TimeoutError (the deadline passed)
    or OSError / http.client.HTTPException (the connection failed). A 3xx is returned as it is, never followed.
    """
    started = time.monotonic()
    host, port, addresses = resolve_destination(url, allow_private=allow_private)
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection = _PinnedConnection(
        host,
        port,
        addresses,
        use_tls=parts.scheme == "https",
        timeout=max(0.1, deadline_seconds - (time.monotonic() - started)),
        context=ssl.create_default_context(),
    )
    expired = threading.Event()

    def cut_off() -> None:
        # Socket timeouts are per read; this closes the socket under a request still running at the deadline.
        expired.set()
        sock = connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(max(0.0, deadline_seconds - (time.monotonic() - started)), cut_off)
    timer.daemon = True
    timer.start()
    try:
        connection.request("POST", path, body=body, headers={**headers, "Host": _host_header(host, port, parts)})
        response = connection.getresponse()
        status = response.status
        response.read(MAX_RESPONSE_HEAD_BYTES)  # a short body is read so the connection ends cleanly; no more
    except (OSError, http.client.HTTPException):
        if expired.is_set():
            raise TimeoutError(f"no complete response within {deadline_seconds:g}s") from None
        raise
    finally:
        timer.cancel()
        connection.close()
    if expired.is_set():
        raise TimeoutError(f"no complete response within {deadline_seconds:g}s")
    return OutboundResponse(status)


def _host_header(host: str, port: int, parts: SplitResult) -> str:
    default_port = 443 if parts.scheme == "https" else 80
    shown = f"[{host}]" if ":" in host else host
    return shown if port == default_port else f"{shown}:{port}"
