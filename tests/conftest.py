"""Test harness: real PostgreSQL, real Redis, the Twilio simulator over HTTP, real Celery worker processes.

With DATABASE_URL / REDIS_URL set, the suite uses those servers (a fresh database `bulksms_test_<pid>` and Redis
database 15, flushed); without them it starts embedded ones under a temporary folder, as a fresh machine would.
Every test starts from empty tables and an empty Redis database.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from bulksms_tools.local_services import EmbeddedPostgres, EmbeddedRedis, ManagedProcess, find_free_port, wait_for_port
from shared.platform.db import create_database_engine, create_session_factory, sqlalchemy_url
from shared.platform.migrate import upgrade_to_head
from shared.platform.settings import Settings, load_settings, settings_to_environment
from shared.platform.task_queue import ALL_QUEUES

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
TEST_ACCOUNT_SID = "AC" + "a1" * 16
TEST_AUTH_TOKEN = "test-auth-token-0123456789abcdef"
TEST_MESSAGING_SERVICE_SID = "MG" + "b2" * 16
TABLES_TO_EMPTY = ("messages", "broadcasts", "api_keys", "status_events", "message_attempts", "opted_out_numbers")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: runs real worker processes against the simulator")


@pytest.fixture(scope="session")
def environment_settings() -> Settings:
    return load_settings(dotenv_path=None)


@pytest.fixture(scope="session")
def artifacts_directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = REPOSITORY_ROOT / ".bulksms" / "test-artifacts"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def server_directory(name: str) -> Path:
    """A data folder for an embedded server, outside pytest's numbered temp folders: pytest deletes the oldest of
    those when other pytest sessions start, which would pull the data out from under a running server."""
    return Path(tempfile.mkdtemp(prefix=f"bulksms-test-{name}-"))


@pytest.fixture(scope="session")
def embedded_postgres() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL server of the suite's own: tests that stop and restart the database use this one."""
    directory = server_directory("postgres")
    server = EmbeddedPostgres(directory)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(environment_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    embedded: EmbeddedPostgres | None = None
    if environment_settings.database_url:
        server_url = environment_settings.database_url
    else:
        embedded = EmbeddedPostgres(server_directory("postgres-main"))
        server_url = embedded.start()
    database_name = f"bulksms_test_{os.getpid()}"
    admin_engine = create_engine(sqlalchemy_url(server_url), isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{database_name}"'))
        connection.execute(text(f'CREATE DATABASE "{database_name}"'))
    url = make_url(sqlalchemy_url(server_url)).set(database=database_name).render_as_string(hide_password=False)
    upgrade_to_head(url)
    yield url
    with admin_engine.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{database_name}" WITH (FORCE)'))
    admin_engine.dispose()
    if embedded is not None:
        embedded.stop()
        shutil.rmtree(embedded.data_directory, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url(environment_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if environment_settings.redis_url:
        parts = urlsplit(environment_settings.redis_url)
        yield urlunsplit((parts.scheme, parts.netloc, "/15", parts.query, parts.fragment))
        return
    server = EmbeddedRedis(server_directory("redis-main"))
    server.start()
    yield server.url
    server.stop()
    shutil.rmtree(server.data_directory, ignore_errors=True)


@pytest.fixture(scope="session")
def simulator_url(artifacts_directory: Path) -> Iterator[str]:
    port = find_free_port()
    process = ManagedProcess(
        "simulator",
        [
            sys.executable,
            "-m",
            "bulksms_tools.simulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--account-sid",
            TEST_ACCOUNT_SID,
            "--auth-token",
            TEST_AUTH_TOKEN,
            "--latency-ms",
            "5",
            "--max-concurrency",
            "100",
        ],
        environment=dict(os.environ),
        log_path=artifacts_directory / "simulator.log",
        working_directory=REPOSITORY_ROOT,
    ).start()
    wait_for_port(port)
    yield f"http://127.0.0.1:{port}"
    process.stop()


@pytest.fixture(scope="session")
def base_settings(database_url: str, redis_url: str, simulator_url: str) -> Settings:
    """Settings every test starts from: the test database, Redis and the simulator, fast maintenance timings."""
    return load_settings(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "TWILIO_ACCOUNT_SID": TEST_ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": TEST_AUTH_TOKEN,
            "TWILIO_MESSAGING_SERVICE_SID": TEST_MESSAGING_SERVICE_SID,
            "TWILIO_API_BASE_URL": simulator_url,
            "PUBLIC_BASE_URL": "http://127.0.0.1:9",  # nothing listens: tests that need callbacks start a webhook
            "TWILIO_REQUEST_TIMEOUT_SECONDS": "3",
            "SEND_RETRY_MAX_SECONDS": "20",
            "CLAIM_LEASE_SECONDS": "8",
            "CONCURRENCY_LEASE_SECONDS": "10",
            "SWEEPER_INTERVAL_SECONDS": "1",
            "SWEEPER_GRACE_SECONDS": "3",
            # Completion callbacks go to receivers on 127.0.0.1; tests of the refusal turn this off.
            "ALLOW_PRIVATE_CALLBACK_URLS": "true",
            # Unpaced unless a test is about pacing: the simulator's default pool transmits at once, and these
            # tests' callbacks go nowhere, so the adaptive default would only slow them down.
            "TWILIO_SEGMENTS_PER_SECOND": "unlimited",
            # No circuit breaker unless a test is about it: fault tests send whole broadcasts into 5xx answers.
            "CIRCUIT_BREAKER_FAILURE_SHARE": "0",
        },
        dotenv_path=None,
    )


@pytest.fixture
def settings(base_settings: Settings) -> Settings:
    return base_settings


@pytest.fixture(scope="session")
def engine(base_settings: Settings) -> Iterator[Any]:
    engine = create_database_engine(base_settings)
    yield engine
    engine.dispose()


@pytest.fixture(autouse=True)
def _empty_state(request: pytest.FixtureRequest) -> Iterator[None]:
    """Empty tables, Redis and the simulator's records before each test that uses any of them."""
    if "engine" in request.fixturenames or "db_session" in request.fixturenames:
        engine = request.getfixturevalue("engine")
        with engine.begin() as connection:
            connection.execute(text(f"TRUNCATE {', '.join(TABLES_TO_EMPTY)} RESTART IDENTITY CASCADE"))
    if "redis_client" in request.fixturenames:
        request.getfixturevalue("redis_client").flushdb()
    if "simulator" in request.fixturenames:
        request.getfixturevalue("simulator").reset()
    yield


@pytest.fixture
def db_session(engine: Any) -> Iterator[Session]:
    session = create_session_factory(engine)()
    yield session
    session.close()


@pytest.fixture(scope="session")
def redis_client(base_settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(str(base_settings.redis_url))
    yield client
    client.close()


class SimulatorControl:
    """The simulator's control endpoints: what it received, and how it should behave next."""

    def __init__(self, url: str) -> None:
        self.url = url

    def reset(self) -> None:
        requests.post(f"{self.url}/_simulator/reset", timeout=10).raise_for_status()

    def configure(self, **options: Any) -> None:
        requests.post(f"{self.url}/_simulator/config", json=options, timeout=10).raise_for_status()

    def summary(self) -> dict[str, Any]:
        response = requests.get(f"{self.url}/_simulator/summary", timeout=30)
        response.raise_for_status()
        return dict(response.json())

    def configure_pool(self, **options: Any) -> dict[str, Any]:
        """Change the Messaging Service's sender pool (docs/simulator.md), e.g.
        `configure_pool(senders=[{"type": "long_code", "count": 10, "segments_per_second": 5}])`."""
        response = requests.post(f"{self.url}/_simulator/pool", json=options, timeout=10)
        response.raise_for_status()
        return dict(response.json())

    def pool(self) -> dict[str, Any]:
        """The pool now: queue lengths and peaks, what was transmitted and when, 30001 / 30036 / ... counts."""
        response = requests.get(f"{self.url}/_simulator/pool", timeout=30)
        response.raise_for_status()
        return dict(response.json())

    def transmissions(self, since: float | None = None, until: float | None = None) -> dict[str, Any]:
        """Messages and segments that left the senders' queues between two simulator-clock times."""
        query = {name: value for name, value in (("since", since), ("until", until)) if value is not None}
        response = requests.get(f"{self.url}/_simulator/transmissions", params=query, timeout=30)
        response.raise_for_status()
        return dict(response.json())

    def received(self, to: str) -> list[dict[str, Any]]:
        """What reached "Twilio" for one number, oldest first (body, status, sender, created and sent times)."""
        response = requests.get(f"{self.url}/_simulator/messages", params={"to": to}, timeout=10)
        response.raise_for_status()
        return list(response.json()["messages"])

    def advance_clock(self, seconds: float) -> float:
        """Move the simulator's clock forward (a day of queues and caps in an instant); returns its new time."""
        response = requests.post(f"{self.url}/_simulator/clock", json={"advance_seconds": seconds}, timeout=10)
        response.raise_for_status()
        return float(response.json()["now"])

    def now(self) -> float:
        response = requests.get(f"{self.url}/_simulator/clock", timeout=10)
        response.raise_for_status()
        return float(response.json()["now"])


@pytest.fixture
def simulator(simulator_url: str) -> SimulatorControl:
    return SimulatorControl(simulator_url)


class WorkerProcesses:
    """Real Celery worker (and optionally beat) processes, started with the test settings."""

    def __init__(self, settings: Settings, log_directory: Path) -> None:
        self.settings = settings
        self.log_directory = log_directory
        self.processes: list[ManagedProcess] = []

    def environment(self) -> dict[str, str]:
        environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        environment.update(settings_to_environment(self.settings))
        return environment

    def start_worker(
        self,
        name: str = "worker",
        concurrency: int = 2,
        queues: str = ",".join(ALL_QUEUES),
    ) -> ManagedProcess:
        process = ManagedProcess(
            name,
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker.app",
                "worker",
                "--queues",
                queues,
                "--concurrency",
                str(concurrency),
                "--hostname",
                f"{name}-{os.getpid()}-{time.monotonic_ns()}@%h",
                "--loglevel",
                "INFO",
                "--without-mingle",
                "--without-gossip",
            ],
            self.environment(),
            log_path=self.log_directory / f"{name}.log",
            working_directory=REPOSITORY_ROOT,
        ).start()
        self.processes.append(process)
        return process

    def start_beat(self) -> ManagedProcess:
        schedule_file = self.log_directory / f"beat-schedule-{time.monotonic_ns()}"
        process = ManagedProcess(
            "beat",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker.app",
                "beat",
                "--schedule",
                str(schedule_file),
                "--loglevel",
                "INFO",
            ],
            self.environment(),
            log_path=self.log_directory / "beat.log",
            working_directory=REPOSITORY_ROOT,
        ).start()
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()


@pytest.fixture
def workers(settings: Settings, artifacts_directory: Path) -> Iterator[WorkerProcesses]:
    processes = WorkerProcesses(settings, artifacts_directory)
    yield processes
    processes.stop_all()


def wait_until(condition: Callable[[], Any], timeout_seconds: float, interval: float = 0.2, message: str = "") -> Any:
    """Poll `condition` until it returns something truthy; fail the test with `message` after the timeout."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_seconds}s waiting for {message or condition}")
        time.sleep(interval)
