"""The whole bulksms stack on one machine, started, watched and stopped in order: what `bulksms up` runs.

PostgreSQL and Redis are embedded (under the data folder) unless DATABASE_URL / REDIS_URL point elsewhere; the
migrations run; then the Twilio simulator (only when no Twilio credentials are configured), the API on PORT
(gunicorn), a Celery worker and beat start as child processes, and Flower with `--flower`, each logging to a file
under the data folder.
Stopping goes in reverse order: SIGTERM, then SIGKILL after a timeout, then the embedded servers.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from bulksms_tools.local_services import (
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedServerUnavailable,
    ManagedProcess,
    find_free_port,
)
from shared.platform.db import sqlalchemy_url
from shared.platform.migrate import upgrade_to_head
from shared.platform.settings import Settings, settings_to_environment
from shared.platform.task_queue import ALL_QUEUES, CALLBACK_QUEUE, MAINTENANCE_QUEUE, SEND_QUEUE, STATUS_QUEUE

STATE_FILE_NAME = "stack.json"  # where a running stack tells other `bulksms` commands how to reach it
LOCK_FILE_NAME = "stack.lock"
SIMULATOR_CREDENTIALS_FILE_NAME = "simulator-credentials.json"
FLOWER_CREDENTIALS_FILE_NAME = "flower-credentials.json"
EMBEDDED_DATABASE_NAME = "bulksms"
WORKER_QUEUES = ",".join(ALL_QUEUES)  # `bulksms worker`: one worker for everything, the simplest deployment
# `bulksms up` gives status callbacks a worker of their own (as docker-compose does), so draining a burst of
# receipts never takes a process that would be sending.
SENDING_QUEUES = ",".join((SEND_QUEUE, MAINTENANCE_QUEUE))
EXIT_CONFIGURATION_ERROR = 2

Say = Callable[[str], None]


class StackError(Exception):
    """The stack cannot start or keep running; the message says why and what to do."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# The simulator's Messaging Service under `bulksms up` and `demo`: 10 short codes of 100 segments/s, so the
# 10,000-recipient demo paced at the pool's 1,000 segments/s takes about as long as it did unpaced.
SIMULATOR_POOL = "10x100:short_code"
SIMULATOR_POOL_RATE = 10 * 100.0


@dataclass(frozen=True)
class StackOptions:
    host: str = "127.0.0.1"
    api_workers: int = 2
    api_threads: int = 8
    worker_concurrency: int | None = None  # None: the worker's own default (worker/app.py)
    use_simulator: bool | None = None  # None: the simulator exactly when no Twilio credentials are configured
    simulator_latency_ms: int = 50
    simulator_max_concurrency: int | None = None  # None: TWILIO_MAX_CONCURRENCY, so the simulator never says 20429
    fresh: bool = False  # start from an empty data folder (the demo): delete what a previous run left there
    ready_timeout_seconds: float = 120.0
    stop_timeout_seconds: float = 20.0
    flower: bool = False  # also start Flower (the `flower` extra) on the stack's broker, behind basic auth
    flower_port: int = 5555


@dataclass(frozen=True)
class FlowerCredentials:
    user: str
    password: str


def flower_credentials(data_dir: Path) -> FlowerCredentials:
    """Flower's basic-auth user and password, generated once and remembered in the data folder."""
    path = data_dir / FLOWER_CREDENTIALS_FILE_NAME
    if path.is_file():
        stored = json.loads(path.read_text())
        return FlowerCredentials(str(stored["user"]), str(stored["password"]))
    credentials = FlowerCredentials("bulksms", secrets.token_urlsafe(16))
    data_dir.mkdir(parents=True, exist_ok=True)
    _write_private_json(path, credentials.__dict__)
    return credentials


@dataclass(frozen=True)
class SimulatorCredentials:
    account_sid: str
    auth_token: str
    messaging_service_sid: str


def data_directory(settings: Settings) -> Path:
    return Path(settings.data_dir).expanduser().resolve()


def simulator_credentials(data_dir: Path) -> SimulatorCredentials:
    """The simulator's account, generated once and remembered in the data folder so restarts keep it."""
    path = data_dir / SIMULATOR_CREDENTIALS_FILE_NAME
    if path.is_file():
        stored = json.loads(path.read_text())
        return SimulatorCredentials(**{f.name: str(stored[f.name]) for f in fields(SimulatorCredentials)})
    credentials = SimulatorCredentials(
        account_sid="AC" + secrets.token_hex(16),
        auth_token=secrets.token_hex(16),
        messaging_service_sid="MG" + secrets.token_hex(16),
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    _write_private_json(path, credentials.__dict__)
    return credentials


def _write_private_json(path: Path, content: dict[str, Any]) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump(content, file, indent=2)


def mask_url(url: str) -> str:
    """`url` with its password replaced by ***, for printing."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return url


class DataDirectoryLock:
    """One stack per data folder: an advisory lock the kernel releases if the holder dies."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE_NAME
        self._file: Any = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_file = open(self.path, "a")  # noqa: SIM115 - held open for as long as the lock is held
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock_file.close()
            return False
        self._file = lock_file
        return True

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold Ctrl-C / SIGTERM until the block ends, so a server is never left half-started and unrecorded."""
    received: list[int] = []

    def remember(signal_number: int, _frame: FrameType | None) -> None:
        received.append(signal_number)

    previous = {number: signal.signal(number, remember) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if received:
            raise KeyboardInterrupt


@contextlib.contextmanager
def _unavailable_as_stack_error() -> Iterator[None]:
    try:
        yield
    except EmbeddedServerUnavailable as error:
        raise StackError(str(error), EXIT_CONFIGURATION_ERROR) from None


def check_database_reachable(database_url: str, variable: str = "DATABASE_URL") -> None:
    engine = create_engine(sqlalchemy_url(database_url), connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as error:
        reason = str(getattr(error, "orig", error)).strip().splitlines()[0]
        raise StackError(
            f"cannot reach PostgreSQL at {variable}={mask_url(database_url)}: {reason}",
            EXIT_CONFIGURATION_ERROR,
        ) from None
    finally:
        engine.dispose()


def check_redis_reachable(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=5)
    try:
        client.ping()
    except (redis.RedisError, ValueError) as error:
        raise StackError(
            f"cannot reach Redis at REDIS_URL={mask_url(redis_url)}: {error}", EXIT_CONFIGURATION_ERROR
        ) from None
    finally:
        client.close()


def _ensure_database(server_url: str, database: str) -> None:
    engine = create_engine(sqlalchemy_url(server_url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            exists = connection.execute(text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": database})
            if exists.first() is None:
                connection.execute(text(f'CREATE DATABASE "{database}"'))
    finally:
        engine.dispose()


def start_embedded_postgres(data_dir: Path) -> tuple[EmbeddedPostgres, str]:
    """Start (or create) the embedded server and return it with the URL of the `bulksms` database."""
    server = EmbeddedPostgres(data_dir / "postgres")
    try:
        server_url = server.start()
    except EmbeddedServerUnavailable as error:
        raise StackError(str(error), EXIT_CONFIGURATION_ERROR) from None
    _ensure_database(server_url, EMBEDDED_DATABASE_NAME)
    return server, server.url_for_database(EMBEDDED_DATABASE_NAME)


def read_stack_state(data_dir: Path) -> dict[str, Any] | None:
    path = data_dir / STATE_FILE_NAME
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def database_for_commands(settings: Settings, say: Say = print) -> Iterator[str]:
    """The database URL a one-off command (`migrate`, `keys ...`) should use.

    DATABASE_URL when set; otherwise the embedded database of the stack running on this data folder, or, when
    none runs, the embedded server started just for this command and stopped after it.
    """
    if settings.database_url:
        check_database_reachable(settings.database_url)
        yield settings.database_url
        return
    data_dir = data_directory(settings)
    lock = DataDirectoryLock(data_dir)
    if not lock.acquire():
        # A stack holds the folder: use its database. It writes its state file moments after taking the lock.
        deadline = time.monotonic() + 60
        while (state := read_stack_state(data_dir)) is None or not state.get("database_url"):
            if time.monotonic() > deadline:
                raise StackError(f"a bulksms stack holds {data_dir} but has not said where its database is")
            time.sleep(0.2)
        yield str(state["database_url"])
        return
    server: EmbeddedPostgres | None = None
    try:
        say(f"DATABASE_URL is unset: using the embedded PostgreSQL in {data_dir / 'postgres'}")
        with deferred_interrupts():
            server, database_url = start_embedded_postgres(data_dir)
        yield database_url
    finally:
        if server is not None:
            server.stop()
        lock.release()


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def log_tail(path: Path | None, lines: int = 15) -> str:
    if path is None or not path.is_file():
        return ""
    with open(path, "rb") as log_file:
        log_file.seek(0, os.SEEK_END)
        log_file.seek(max(0, log_file.tell() - 16_000))
        content = log_file.read().decode("utf-8", errors="replace")
    return "\n".join("    " + line for line in content.splitlines()[-lines:])


class LocalStack:
    """Start with `start()`, watch with `wait_for_exit()`, always `stop()` (also after a failed start)."""

    def __init__(self, settings: Settings, options: StackOptions | None = None, say: Say = print) -> None:
        self.requested_settings = settings
        self.options = options or StackOptions()
        self.say = say
        self.data_dir = data_directory(settings)
        self.log_directory = self.data_dir / "logs"
        self.settings: Settings = settings  # the effective settings, filled in by start()
        self.processes: list[ManagedProcess] = []
        self.simulator_url: str | None = None
        self.simulator_credentials: SimulatorCredentials | None = None
        self.flower_url: str | None = None
        self.flower_credentials: FlowerCredentials | None = None
        self._postgres: EmbeddedPostgres | None = None
        self._redis: EmbeddedRedis | None = None
        self._lock = DataDirectoryLock(self.data_dir)
        self._locked = False

    @property
    def api_url(self) -> str:
        host = "127.0.0.1" if self.options.host in ("0.0.0.0", "") else self.options.host  # noqa: S104
        return f"http://{host}:{self.settings.port}"

    @property
    def uses_simulator(self) -> bool:
        if self.options.use_simulator is not None:
            return self.options.use_simulator
        return not self._any_twilio_setting()

    def _any_twilio_setting(self) -> bool:
        requested = self.requested_settings
        return any(
            (
                requested.twilio_account_sid,
                requested.twilio_auth_token,
                requested.twilio_messaging_service_sid,
                requested.twilio_api_key_sid,
            )
        )

    # --- starting -------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self._lock.acquire():
            raise StackError(
                f"another bulksms stack is already running with its data in {self.data_dir}; stop it first "
                "or choose another folder with BULKSMS_DATA_DIR",
                EXIT_CONFIGURATION_ERROR,
            )
        self._locked = True
        if self.options.fresh:
            self._empty_data_directory()
        settings = self.requested_settings
        if not self.uses_simulator:
            settings.require("twilio_account_sid", "twilio_auth_token", "twilio_messaging_service_sid")
        if not _port_is_free(self.options.host, settings.port):
            raise StackError(
                f"port {settings.port} (PORT) is already in use on {self.options.host}; "
                "set PORT to a free port or stop what is using it",
                EXIT_CONFIGURATION_ERROR,
            )
        self.say(f"data folder: {self.data_dir}  (logs in {self.log_directory})")
        database_url = self._start_database()
        redis_url = self._start_redis()
        self.say("running database migrations ...")
        upgrade_to_head(database_url)
        self.settings = settings.replace(
            database_url=database_url,
            redis_url=redis_url,
            public_base_url=settings.public_base_url or f"http://127.0.0.1:{settings.port}",
            data_dir=str(self.data_dir),
        )
        if self.uses_simulator:
            self._start_simulator()
        environment = self._child_environment()
        self._start_process("api", self._api_command(), environment)
        self._start_process("worker", self._worker_command(), environment)
        self._start_process("status-worker", self._status_worker_command(), environment)
        self._start_process("callback-worker", self._callback_worker_command(), environment)
        self._start_process("beat", self._beat_command(), environment)
        if self.options.flower:
            self._start_flower(environment)
        self._write_state()
        self._wait_until_ready()

    def _empty_data_directory(self) -> None:
        for entry in self.data_dir.iterdir():
            if entry.name == LOCK_FILE_NAME:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def _start_database(self) -> str:
        configured = self.requested_settings.database_url
        if configured:
            check_database_reachable(configured)
            self.say(f"PostgreSQL: {mask_url(configured)}  (DATABASE_URL)")
            return configured
        self.say("PostgreSQL: starting the embedded server ...")
        with deferred_interrupts(), _unavailable_as_stack_error():
            self._postgres = EmbeddedPostgres(self.data_dir / "postgres")
            server_url = self._postgres.start()
        _ensure_database(server_url, EMBEDDED_DATABASE_NAME)
        database_url = self._postgres.url_for_database(EMBEDDED_DATABASE_NAME)
        self.say(f"PostgreSQL: embedded, {database_url}")
        return database_url

    def _start_redis(self) -> str:
        configured = self.requested_settings.redis_url
        if configured:
            check_redis_reachable(configured)
            self.say(f"Redis: {mask_url(configured)}  (REDIS_URL)")
            return configured
        with deferred_interrupts(), _unavailable_as_stack_error():
            redis_server = EmbeddedRedis(self.data_dir / "redis")
            redis_server.start()
            self._redis = redis_server
        self.say(f"Redis: embedded, {self._redis.url}")
        return self._redis.url

    def _start_simulator(self) -> None:
        credentials = simulator_credentials(self.data_dir)
        port = find_free_port()
        max_concurrency = self.options.simulator_max_concurrency or self.settings.twilio_max_concurrency
        command = [
            sys.executable, "-m", "bulksms_tools.simulator",
            "--host", "127.0.0.1",
            "--port", str(port),
            "--account-sid", credentials.account_sid,
            "--auth-token", credentials.auth_token,
            "--latency-ms", str(self.options.simulator_latency_ms),
            "--max-concurrency", str(max_concurrency),
            "--pool", SIMULATOR_POOL,
        ]  # fmt: skip
        process = self._start_process("simulator", command, self._child_environment())
        self._wait_for_port(process, port)
        self.simulator_url = f"http://127.0.0.1:{port}"
        self.simulator_credentials = credentials
        self.settings = self.settings.replace(
            twilio_account_sid=credentials.account_sid,
            twilio_auth_token=credentials.auth_token,
            twilio_messaging_service_sid=credentials.messaging_service_sid,
            twilio_api_base_url=self.simulator_url,
            # A development stack: completion callbacks may go to a receiver on this machine.
            allow_private_callback_urls=True,
            # The stack paces to the simulator's pool, as it would to a real one (unless told otherwise).
            twilio_segments_per_second=self.settings.twilio_segments_per_second or str(SIMULATOR_POOL_RATE),
        )
        self.say(
            f"Twilio simulator: {self.simulator_url}  ({self.options.simulator_latency_ms} ms per request, "
            f"at most {max_concurrency} in flight; no TWILIO_* credentials set, so nothing reaches Twilio; "
            "callback_url may be a local address)"
        )
        self.say(
            f"  sender pool {SIMULATOR_POOL} ({SIMULATOR_POOL_RATE:g} segments/s); paced at "
            f"TWILIO_SEGMENTS_PER_SECOND={self.settings.twilio_segments_per_second}"
        )

    def _start_flower(self, environment: dict[str, str]) -> None:
        if importlib.util.find_spec("flower") is None:
            raise StackError(
                "--flower needs Flower: pip install 'bulksms[flower]' (make installs it)", EXIT_CONFIGURATION_ERROR
            )
        if not _port_is_free("127.0.0.1", self.options.flower_port):
            raise StackError(
                f"port {self.options.flower_port} for Flower is already in use; choose another with --flower-port",
                EXIT_CONFIGURATION_ERROR,
            )
        credentials = flower_credentials(self.data_dir)
        command = [
            sys.executable, "-m", "celery", "-A", "worker.app", "flower",
            "--address=127.0.0.1", f"--port={self.options.flower_port}",
        ]  # fmt: skip
        # Basic auth through the environment, so the password is not in the process list.
        flower_environment = {**environment, "FLOWER_BASIC_AUTH": f"{credentials.user}:{credentials.password}"}
        process = self._start_process("flower", command, flower_environment)
        self._wait_for_port(process, self.options.flower_port, timeout_seconds=60.0)
        self.flower_url = f"http://127.0.0.1:{self.options.flower_port}"
        self.flower_credentials = credentials
        self.say(f"Flower: {self.flower_url}  (user {credentials.user}, password {credentials.password})")

    def _api_command(self) -> list[str]:
        return [
            sys.executable, "-m", "gunicorn", "api.wsgi:app",
            "--bind", f"{self.options.host}:{self.settings.port}",
            "--worker-class", "gthread",
            "--workers", str(self.options.api_workers),
            "--threads", str(self.options.api_threads),
            "--timeout", "120",  # a 1,000,000-recipient POST takes a while to parse and copy in
            "--graceful-timeout", "10",
            "--access-logfile", "-",
            "--logger-class", "api.access_log.MaskedAccessLogger",  # phone numbers and tokens masked
            "--error-logfile", "-",
        ]  # fmt: skip

    def _worker_command(self) -> list[str]:
        command = [
            sys.executable, "-m", "celery", "-A", "worker.app", "worker",
            "--queues", SENDING_QUEUES,
            "--hostname", f"bulksms-{os.getpid()}@%h",
            "--loglevel", self.settings.log_level,
            "--without-mingle", "--without-gossip",  # one worker: nothing to synchronise with, faster start
        ]  # fmt: skip
        if self.options.worker_concurrency:
            command += ["--concurrency", str(self.options.worker_concurrency)]
        return command

    def _status_worker_command(self) -> list[str]:
        return [
            sys.executable, "-m", "celery", "-A", "worker.app", "worker",
            "--queues", STATUS_QUEUE,
            "--concurrency", "1",  # batches of 500 in one process keep up with thousands of callbacks a second
            "--hostname", f"bulksms-status-{os.getpid()}@%h",
            "--loglevel", self.settings.log_level,
            "--without-mingle", "--without-gossip",
        ]  # fmt: skip

    def _callback_worker_command(self) -> list[str]:
        # Completion callbacks wait on client servers (up to CALLBACK_DEADLINE_SECONDS each): never in a process
        # that sends or applies receipts.
        return [
            sys.executable, "-m", "celery", "-A", "worker.app", "worker",
            "--queues", CALLBACK_QUEUE,
            "--concurrency", "2",
            "--hostname", f"bulksms-callbacks-{os.getpid()}@%h",
            "--loglevel", self.settings.log_level,
            "--without-mingle", "--without-gossip",
        ]  # fmt: skip

    def _beat_command(self) -> list[str]:
        return [
            sys.executable, "-m", "celery", "-A", "worker.app", "beat",
            "--schedule", str(self.data_dir / "celerybeat-schedule"),
            "--loglevel", self.settings.log_level,
        ]  # fmt: skip

    def _child_environment(self) -> dict[str, str]:
        # Children inherit the process environment (PATH, HOME, proxies, ...) minus our settings, which come
        # only from the effective settings: embedded URLs, simulator credentials, the default PUBLIC_BASE_URL.
        setting_names = {f.metadata["env"] for f in fields(Settings)}
        environment = {name: value for name, value in os.environ.items() if name not in setting_names}
        environment.update(settings_to_environment(self.settings))
        environment["PYTHONUNBUFFERED"] = "1"
        return environment

    def _start_process(self, name: str, command: list[str], environment: dict[str, str]) -> ManagedProcess:
        process = ManagedProcess(name, command, environment, log_path=self.log_directory / f"{name}.log")
        with deferred_interrupts():
            process.start()
            self.processes.append(process)
        return process

    def _wait_for_port(self, process: ManagedProcess, port: int, timeout_seconds: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_seconds
        while True:
            self._fail_if_exited(process)
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise StackError(
                        f"{process.name} is not listening on port {port} after {timeout_seconds:.0f}s; "
                        f"see {process.log_path}\n{log_tail(process.log_path)}"
                    ) from None
                time.sleep(0.1)

    def _fail_if_exited(self, process: ManagedProcess) -> None:
        if not process.running:
            code = process.process.returncode if process.process is not None else None
            raise StackError(
                f"{process.name} exited during start-up (exit code {code}); see {process.log_path}:\n"
                f"{log_tail(process.log_path)}"
            )

    def _wait_until_ready(self) -> None:
        self.say(f"waiting for {self.api_url}/readyz ...")
        deadline = time.monotonic() + self.options.ready_timeout_seconds
        last_answer = "no answer"
        while True:
            for process in self.processes:
                self._fail_if_exited(process)
            try:
                response = requests.get(f"{self.api_url}/readyz", timeout=2)
                if response.status_code == 200:
                    return
                last_answer = f"HTTP {response.status_code}: {response.text[:200]}"
            except requests.RequestException as error:
                last_answer = type(error).__name__
            if time.monotonic() > deadline:
                raise StackError(
                    f"the API did not become ready within {self.options.ready_timeout_seconds:.0f}s "
                    f"(last /readyz answer: {last_answer}); logs are in {self.log_directory}"
                )
            time.sleep(0.25)

    def _write_state(self) -> None:
        _write_private_json(
            self.data_dir / STATE_FILE_NAME,
            {
                "pid": os.getpid(),
                "api_url": self.api_url,
                "database_url": self.settings.database_url,
                "redis_url": self.settings.redis_url,
                "simulator_url": self.simulator_url,
                "flower_url": self.flower_url,
            },
        )

    # --- running and stopping -------------------------------------------------------------------------------

    def wait_for_exit(self, poll_seconds: float = 0.5) -> ManagedProcess:
        """Block until one child process exits (it should not) and return it."""
        while True:
            for process in self.processes:
                if not process.running:
                    return process
            time.sleep(poll_seconds)

    def describe(self) -> list[tuple[str, str]]:
        """(what, where) lines for the start-up banner."""
        rows = [
            ("API and webhooks", self.api_url),
            ("Readiness", f"{self.api_url}/readyz"),
            ("PUBLIC_BASE_URL", str(self.settings.public_base_url)),
            (
                "Twilio",
                f"simulator at {self.simulator_url}" if self.simulator_url else self.settings.twilio_api_base_url,
            ),
            ("PostgreSQL", mask_url(str(self.settings.database_url))),
            ("Redis", mask_url(str(self.settings.redis_url))),
            ("Logs", str(self.log_directory)),
        ]
        if self.flower_url and self.flower_credentials:
            rows.append(
                (
                    "Flower",
                    f"{self.flower_url}  (user {self.flower_credentials.user}, "
                    f"password in {self.data_dir / FLOWER_CREDENTIALS_FILE_NAME})",
                )
            )
        return rows

    def stop(self) -> None:
        """Stop everything started, newest first; safe to call more than once and after a failed start."""
        previous = {number: signal.signal(number, signal.SIG_IGN) for number in (signal.SIGINT, signal.SIGTERM)}
        try:
            for process in reversed(self.processes):
                if process.running:
                    self.say(f"stopping {process.name} ...")
                process.stop(timeout_seconds=self.options.stop_timeout_seconds)
            self.processes.clear()
            if self._redis is not None:
                self.say("stopping the embedded Redis ...")
                self._redis.stop()
                self._redis = None
            if self._postgres is not None:
                self.say("stopping the embedded PostgreSQL ...")
                self._postgres.stop()
                self._postgres = None
            if self._locked:
                (self.data_dir / STATE_FILE_NAME).unlink(missing_ok=True)
                self._lock.release()
                self._locked = False
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *_exception: object) -> None:
        self.stop()
