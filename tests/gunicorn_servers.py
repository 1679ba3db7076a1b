"""Real gunicorn processes for tests that need a real HTTP server (bodies that never arrive, trickle in or are too
big), a client that speaks raw HTTP/1.1 over a socket, and the resident memory of a server's processes."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import requests

from bulksms_tools.local_services import ManagedProcess
from shared.platform.settings import Settings, settings_to_environment
from tests.conftest import REPOSITORY_ROOT

ACCESS_LOGGER = "api.access_log.MaskedAccessLogger"


def start_gunicorn(
    name: str,
    target: str,
    settings: Settings,
    port: int,
    log_path: Path,
    *,
    workers: int,
    threads: int,
    access_log: bool = False,
) -> ManagedProcess:
    """gunicorn with gthread workers, as docker-compose and `bulksms up` run it; returns once it answers."""
    environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    environment.update(settings_to_environment(settings))
    environment["LOG_FORMAT"] = "json"
    command = [
        sys.executable, "-m", "gunicorn", target,
        "--bind", f"127.0.0.1:{port}",
        "--worker-class", "gthread", "--workers", str(workers), "--threads", str(threads),
        "--keep-alive", "30", "--timeout", "120",
        "--logger-class", ACCESS_LOGGER,
    ]  # fmt: skip
    if access_log:
        command += ["--access-logfile", "-"]
    process = ManagedProcess(name, command, environment, log_path=log_path, working_directory=REPOSITORY_ROOT)
    process.start()
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return process
        except requests.RequestException:
            pass
        if not process.running or time.monotonic() > deadline:
            process.stop()
            raise RuntimeError(f"{name} did not start; see {log_path}")
        time.sleep(0.2)


def request_head(path: str, headers: dict[str, str], port: int) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"] + [
        f"{name}: {value}" for name, value in headers.items()
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def open_request(port: int, path: str, headers: dict[str, str], timeout: float = 30.0) -> socket.socket:
    """A connection with the request line and headers sent, and no body yet."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    connection.sendall(request_head(path, headers, port))
    return connection


def read_status(connection: socket.socket) -> int | None:
    """The status code of the answer, or None when the server closed or reset without one."""
    received = b""
    try:
        while b"\r\n" not in received:
            chunk = connection.recv(4096)
            if not chunk:
                break
            received += chunk
    except (ConnectionResetError, TimeoutError, OSError):
        pass
    if not received.startswith(b"HTTP/1.1 "):
        return None
    return int(received.split(b" ", 2)[1])


def closed_by_server(connection: socket.socket, timeout: float = 5.0) -> bool:
    """Whether the server closed the connection (end-of-file or reset) within `timeout` after answering."""
    connection.settimeout(timeout)
    try:
        while connection.recv(4096):
            pass
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return True


def process_tree(root_pid: int) -> list[int]:
    """`root_pid` and its children (a gunicorn master and its workers)."""
    children: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == root_pid:
            children.append(int(entry))
    return [root_pid, *children]


def resident_mebibytes(pid: int) -> float:
    """VmRSS of a process, in MiB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
