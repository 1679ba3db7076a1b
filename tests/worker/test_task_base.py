"""What a PostgreSQL outage means for the tasks of a real Celery worker (worker.task_base): a periodic task logs a
warning and skips its run, `sms.send_chunk` is retried until the database is back. Either way the worker keeps
running, no task fails, and no recipient is lost or sent twice."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, text, update

from bulksms_tools.local_services import EmbeddedPostgres
from shared.platform.db import create_database_engine, create_session_factory
from shared.platform.models import Broadcast, BroadcastStatus
from shared.platform.settings import Settings
from shared.platform.task_queue import RELEASE_SCHEDULED_TASK, SEND_CHUNK_TASK, create_celery_app, enqueue_chunks
from tests.conftest import SimulatorControl, WorkerProcesses, wait_until
from tests.factories import create_broadcast, numbers

pytestmark = pytest.mark.e2e


def log_lines(path: Path) -> list[dict[str, Any]]:
    """The worker's JSON log lines (Celery's start-up banner is plain text and left out)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def warnings_of(path: Path, task_name: str) -> list[str]:
    return [
        line["message"] for line in log_lines(path) if line["level"] == "WARNING" and line.get("task_name") == task_name
    ]


def failed_task_lines(path: Path) -> list[dict[str, Any]]:
    """Errors logged while a task ran: Celery's "raised unexpected" when a task fails, or our own."""
    return [line for line in log_lines(path) if line["level"] in ("ERROR", "CRITICAL") and line.get("task_name")]


def broadcast_status(engine: Engine, broadcast_id: uuid.UUID) -> str:
    with engine.connect() as connection:
        return str(
            connection.execute(text("SELECT status FROM broadcasts WHERE id = :id"), {"id": broadcast_id}).one()[0]
        )


def message_states(engine: Engine, broadcast_id: uuid.UUID) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT state, count(*) FROM messages WHERE broadcast_id = :id GROUP BY state"), {"id": broadcast_id}
        )
        return {str(state): int(count) for state, count in rows}


def test_a_periodic_task_skips_its_runs_while_the_database_is_down_and_does_the_work_once_it_is_back(
    outage_settings: Settings,
    embedded_postgres: EmbeddedPostgres,
    simulator: SimulatorControl,
    artifacts_directory: Path,
) -> None:
    engine = create_database_engine(outage_settings)
    with create_session_factory(engine)() as session:
        broadcast = create_broadcast(session, numbers(30), enqueued=False)
        session.execute(
            update(Broadcast)
            .where(Broadcast.id == broadcast.id)
            .values(status=BroadcastStatus.SCHEDULED, send_at=func.now())
        )
        session.commit()
    engine.dispose()
    log_path = artifacts_directory / "worker-periodic-outage.log"
    log_path.unlink(missing_ok=True)
    workers = WorkerProcesses(outage_settings, artifacts_directory)
    try:
        embedded_postgres.stop()
        worker = workers.start_worker("worker-periodic-outage")
        workers.start_beat()  # sms.release_scheduled every second

        wait_until(
            lambda: len(warnings_of(log_path, RELEASE_SCHEDULED_TASK)) >= 3,
            60,
            message="sms.release_scheduled to skip runs while PostgreSQL is down",
        )
        assert worker.running
        embedded_postgres.start()
        wait_until(
            lambda: broadcast_status(engine, broadcast.id) == BroadcastStatus.SUBMITTED,
            90,
            interval=0.5,
            message="the scheduled broadcast released and sent after the outage",
        )
    finally:
        workers.stop_all()
        engine.dispose()

    warning = warnings_of(log_path, RELEASE_SCHEDULED_TASK)[0]
    assert warning.startswith("scheduled broadcasts not released this run: OperationalError: ")
    assert failed_task_lines(log_path) == []
    summary = simulator.summary()
    assert summary["accepted"] == 30 and summary["duplicate_count"] == 0


def test_a_chunk_whose_database_is_down_is_retried_until_it_is_back_and_sent_once(
    outage_settings: Settings,
    embedded_postgres: EmbeddedPostgres,
    simulator: SimulatorControl,
    artifacts_directory: Path,
) -> None:
    engine = create_database_engine(outage_settings)
    with create_session_factory(engine)() as session:
        broadcast = create_broadcast(session, numbers(150))
    engine.dispose()
    log_path = artifacts_directory / "worker-chunk-outage.log"
    log_path.unlink(missing_ok=True)
    workers = WorkerProcesses(outage_settings, artifacts_directory)
    try:
        embedded_postgres.stop()
        # No beat: the sweeper would re-enqueue idle chunks; here only the task's own retry can bring them back.
        worker = workers.start_worker("worker-chunk-outage")
        enqueue_chunks(create_celery_app(outage_settings), broadcast.id, range(broadcast.chunk_count))

        wait_until(
            lambda: len(warnings_of(log_path, SEND_CHUNK_TASK)) >= 2 * broadcast.chunk_count,
            60,
            message="every chunk retried at least twice while PostgreSQL is down",
        )
        assert worker.running
        embedded_postgres.start()
        wait_until(
            lambda: message_states(engine, broadcast.id) == {"accepted": 150},
            90,
            interval=0.5,
            message="the chunks sent after the outage",
        )
    finally:
        workers.stop_all()
        engine.dispose()

    first_chunk_warnings = [
        message for message in warnings_of(log_path, SEND_CHUNK_TASK) if f"('{broadcast.id}', 0)" in message
    ]
    assert first_chunk_warnings[0].startswith(f"sms.send_chunk('{broadcast.id}', 0): OperationalError: ")
    assert "; retrying in " in first_chunk_warnings[0]
    assert failed_task_lines(log_path) == []
    summary = simulator.summary()
    assert summary["accepted"] == 150 and summary["duplicate_count"] == 0
