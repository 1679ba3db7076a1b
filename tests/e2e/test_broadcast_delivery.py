"""Whole flows: a broadcast submitted over the API is sent by real Celery worker processes to the simulator.

These are the promises a user buys bulksms for: every valid recipient gets exactly one attempt, counted at the
Twilio end; nothing is lost to 20429, to a killed worker, or to a Redis restart.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from api.app import create_app
from bulksms_tools.local_services import EmbeddedRedis
from shared.platform.api_keys import create_api_key
from shared.platform.settings import Settings
from tests.conftest import SimulatorControl, WorkerProcesses, wait_until

pytestmark = pytest.mark.e2e


def distinct_numbers(count: int, prefix: str = "+1555") -> list[str]:
    """`count` distinct North American numbers (ten digits after +1), in the unassigned area code 555."""
    width = len("+12025550100") - len(prefix)
    return [f"{prefix}{index:0{width}d}" for index in range(count)]


@pytest.fixture
def api_client(settings: Settings) -> FlaskClient:
    return create_app(settings).test_client()


@pytest.fixture
def api_key(db_session: Session) -> str:
    _, plaintext = create_api_key(db_session, "e2e")
    db_session.commit()
    return plaintext


def submit(client: FlaskClient, key: str, recipients: list[str], message: str = "Hello from bulksms") -> dict[str, Any]:
    response = client.post(
        "/v1/broadcasts",
        json={"message": message, "recipients": recipients, "on_invalid": "skip"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 202, response.get_data(as_text=True)
    return dict(response.get_json())


def broadcast_view(client: FlaskClient, key: str, broadcast_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/broadcasts/{broadcast_id}", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.get_data(as_text=True)
    return dict(response.get_json())


def wait_until_submitted(client: FlaskClient, key: str, broadcast_id: str, timeout_seconds: float) -> dict[str, Any]:
    def submitted() -> dict[str, Any] | None:
        view = broadcast_view(client, key, broadcast_id)
        return view if view["status"] == "submitted" else None

    return dict(wait_until(submitted, timeout_seconds, interval=0.5, message=f"broadcast {broadcast_id} submitted"))


def message_states(engine: Engine, broadcast_id: str) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT state, count(*) FROM messages WHERE broadcast_id = :id GROUP BY state"), {"id": broadcast_id}
        )
        return {state: count for state, count in rows}


def accepted_count(engine: Engine, broadcast_id: str) -> int:
    return message_states(engine, broadcast_id).get("accepted", 0)


def assert_each_recipient_sent_once(simulator: SimulatorControl, engine: Engine, broadcast_id: str, total: int) -> None:
    summary = simulator.summary()
    assert summary["duplicate_count"] == 0, summary["duplicate_recipients"]
    assert summary["accepted"] == total
    assert summary["distinct_recipients"] == total
    assert message_states(engine, broadcast_id) == {"accepted": total}
    with engine.connect() as connection:
        sids = connection.execute(
            text("SELECT count(DISTINCT twilio_sid) FROM messages WHERE broadcast_id = :id"), {"id": broadcast_id}
        ).scalar_one()
    assert sids == total


def test_thousand_recipients_each_sent_exactly_once(
    api_client: FlaskClient, api_key: str, workers: WorkerProcesses, simulator: SimulatorControl, engine: Engine
) -> None:
    simulator.configure(latency_ms=20)
    recipients = distinct_numbers(1000)
    # The same people written the way people write numbers: collapsed, never sent twice.
    spelled_differently = [f"+1 (555) {n[5:8]}-{n[8:]}" for n in recipients[:50]]
    intake = submit(api_client, api_key, recipients + spelled_differently)
    assert intake["recipients"] == {
        "received": 1050,
        "accepted": 1000,
        "duplicates": 50,
        "invalid": 0,
        "opted_out": 0,
        "deferred": 0,
        "not_valid": 1000,
        "by_country": {"US": 1000},
    }
    assert intake["chunks"] == 10

    workers.start_worker()
    view = wait_until_submitted(api_client, api_key, intake["id"], timeout_seconds=120)

    assert_each_recipient_sent_once(simulator, engine, intake["id"], 1000)
    assert view["first_send_at"] is not None and view["last_send_at"] is not None


def test_permanent_errors_are_recorded_and_never_retried(
    api_client: FlaskClient, api_key: str, workers: WorkerProcesses, simulator: SimulatorControl, engine: Engine
) -> None:
    good = distinct_numbers(40)
    invalid_at_twilio = [f"+15{index:02d}5550001" for index in range(21, 26)]  # simulator: 21211
    opted_out = [f"+15{index:02d}5550004" for index in range(21, 26)]  # simulator: 21610
    intake = submit(api_client, api_key, good + invalid_at_twilio + opted_out)

    workers.start_worker()
    wait_until_submitted(api_client, api_key, intake["id"], timeout_seconds=90)

    with engine.connect() as connection:
        failed = connection.execute(
            text(
                "SELECT to_number, error_code, error_message, attempts FROM messages "
                "WHERE broadcast_id = :id AND state = 'failed' ORDER BY to_number"
            ),
            {"id": intake["id"]},
        ).all()
    assert {row.to_number: row.error_code for row in failed} == {
        **{number: 21211 for number in invalid_at_twilio},
        **{number: 21610 for number in opted_out},
    }
    assert all(row.error_message and row.attempts == 1 for row in failed)
    summary = simulator.summary()
    # One request per failing number: a permanent error is never tried again.
    assert summary["requests"] == 50
    assert accepted_count(engine, intake["id"]) == 40


def test_rate_limit_storm_loses_nothing(
    api_client: FlaskClient, api_key: str, workers: WorkerProcesses, simulator: SimulatorControl, engine: Engine
) -> None:
    # Twilio allows far fewer requests in flight than our workers are configured for: most first tries get 20429.
    simulator.configure(max_concurrency=8, latency_ms=30)
    intake = submit(api_client, api_key, distinct_numbers(600))

    workers.start_worker(concurrency=3)
    wait_until_submitted(api_client, api_key, intake["id"], timeout_seconds=180)

    summary = simulator.summary()
    assert summary["rejected_429"] > 0, "the storm did not happen: the test proves nothing"
    assert_each_recipient_sent_once(simulator, engine, intake["id"], 600)


def test_worker_killed_mid_broadcast_then_restarted_sends_everyone_exactly_once(
    api_client: FlaskClient, api_key: str, workers: WorkerProcesses, simulator: SimulatorControl, engine: Engine
) -> None:
    simulator.configure(latency_ms=150, max_concurrency=100)
    total = 4000
    intake = submit(api_client, api_key, distinct_numbers(total))

    first_worker = workers.start_worker("doomed-worker")
    wait_until(
        lambda: accepted_count(engine, intake["id"]) >= 600,
        timeout_seconds=90,
        message="the first worker to get going",
    )
    first_worker.kill()  # SIGKILL to the whole process group, in the middle of sending
    sent_before_restart = accepted_count(engine, intake["id"])
    assert sent_before_restart < total, "the broadcast finished before the kill: the test proves nothing"

    workers.start_worker("replacement-worker")
    workers.start_beat()  # the sweeper reconciles the dead worker's claims and re-enqueues its chunks
    wait_until_submitted(api_client, api_key, intake["id"], timeout_seconds=240)

    assert_each_recipient_sent_once(simulator, engine, intake["id"], total)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own, so it can be restarted without disturbing the rest of the suite."""
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def test_redis_restarted_mid_broadcast_the_broadcast_still_finishes(
    settings: Settings,
    db_session: Session,
    artifacts_directory: Path,
    simulator: SimulatorControl,
    engine: Engine,
    private_redis: EmbeddedRedis,
) -> None:
    settings = settings.replace(redis_url=private_redis.url)
    client = create_app(settings).test_client()
    _, key = create_api_key(db_session, "redis-restart")
    db_session.commit()
    simulator.configure(latency_ms=100)
    total = 3000
    intake = submit(client, key, distinct_numbers(total))

    processes = WorkerProcesses(settings, artifacts_directory)
    try:
        worker = processes.start_worker("worker-redis-restart")
        processes.start_beat()
        wait_until(lambda: accepted_count(engine, intake["id"]) >= 300, 90, message="sending to start")
        private_redis.restart()
        assert accepted_count(engine, intake["id"]) < total, "finished before the restart: the test proves nothing"

        def submitted_under_a_supervisor() -> bool:
            # Celery's Redis transport can exit the worker with "Unrecoverable error" when the broker goes away
            # while it restores unacknowledged tasks (a race in kombu); production runs workers under a
            # supervisor that starts them again (compose: `restart: unless-stopped`), and so does this test.
            nonlocal worker
            if not worker.running:
                worker = processes.start_worker("worker-redis-restart-again")
            return broadcast_view(client, key, intake["id"])["status"] == "submitted"

        wait_until(submitted_under_a_supervisor, 240, interval=0.5, message="the broadcast submitted")
    finally:
        processes.stop_all()

    assert_each_recipient_sent_once(simulator, engine, intake["id"], total)


def test_chunk_tasks_delivered_twice_send_once(
    api_client: FlaskClient,
    api_key: str,
    workers: WorkerProcesses,
    simulator: SimulatorControl,
    engine: Engine,
    settings: Settings,
    redis_client: Any,
) -> None:
    """At-least-once delivery of tasks (a redelivery, a sweeper re-enqueue) must not become a second SMS."""
    from shared.platform.task_queue import create_celery_app, enqueue_chunks

    intake = submit(api_client, api_key, distinct_numbers(500))
    enqueue_chunks(create_celery_app(settings), intake["id"], range(intake["chunks"]))  # every chunk task twice
    enqueue_chunks(create_celery_app(settings), intake["id"], range(intake["chunks"]))  # and three times

    workers.start_worker(concurrency=3)
    wait_until_submitted(api_client, api_key, intake["id"], timeout_seconds=90)
    # Let the duplicate tasks run out: they must find nothing left to claim.
    wait_until(lambda: redis_client.llen("sms.send") == 0, 60, message="the duplicate tasks to drain")
    time.sleep(1.0)
    assert_each_recipient_sent_once(simulator, engine, intake["id"], 500)
