"""The fault campaign of docs/reliability.md, on real processes: PostgreSQL restarted mid-send and mid-intake, Redis
restarted mid-intake, Twilio answering 500 to one request in five and timing out on one in twenty for a whole
broadcast, a worker SIGKILLed while a completion callback trickles. Each time: nothing lost, nothing sent twice
(counted at the simulator), the broadcast completes, and the maintained counts equal counting the rows. (Redis
restarted mid-send: tests/e2e/test_broadcast_delivery.py.)
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from api.app import create_app
from bulksms_tools.local_services import EmbeddedPostgres, EmbeddedRedis
from bulksms_tools.simulator.magic_numbers import magic_variant
from shared.messages import counts
from shared.platform.api_keys import create_api_key
from shared.platform.db import create_database_engine, create_session_factory
from shared.platform.settings import Settings
from shared.platform.task_queue import CALLBACK_QUEUE, MAINTENANCE_QUEUE, SEND_QUEUE, STATUS_QUEUE
from tests.callback_receiver import TricklingFirstPostReceiver
from tests.conftest import SimulatorControl, WorkerProcesses, wait_until
from tests.e2e.test_broadcast_delivery import distinct_numbers
from tests.worker.conftest import outage_settings  # noqa: F401 - a fixture: a database on a server we may restart

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

INTAKE_RECIPIENTS = 20_000  # a COPY long enough (a few blocks) to be caught in the middle


@pytest.fixture
def settings(base_settings: Settings) -> Settings:
    # Without status callbacks, a submitted broadcast completes after this idle time.
    return base_settings.replace(completion_idle_seconds=2)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def new_key(engine: Engine) -> str:
    with create_session_factory(engine)() as session:
        _, key = create_api_key(session, "faults")
        session.commit()
    return key


def post(client: FlaskClient, key: str, recipients: list[str], idempotency_key: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {key}"}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    return client.post("/v1/broadcasts", json={"message": "fault campaign", "recipients": recipients}, headers=headers)


def query(engine: Engine, sql: str, **parameters: Any) -> list[Any]:
    """Rows of `sql`, or [] while the database is unreachable (a restart in progress)."""
    try:
        with engine.connect() as connection:
            return list(connection.execute(text(sql), parameters))
    except SQLAlchemyError:
        return []


def states(engine: Engine, broadcast_id: str) -> dict[str, int]:
    rows = query(
        engine, "SELECT state, count(*) FROM messages WHERE broadcast_id = :id GROUP BY state", id=broadcast_id
    )
    return {row[0]: row[1] for row in rows}


def status(engine: Engine, broadcast_id: str) -> str | None:
    rows = query(engine, "SELECT status FROM broadcasts WHERE id = :id", id=broadcast_id)
    return str(rows[0][0]) if rows else None


def wait_completed(engine: Engine, broadcast_id: str, timeout_seconds: float) -> None:
    wait_until(
        lambda: status(engine, broadcast_id) == "completed",
        timeout_seconds,
        interval=0.5,
        message=f"broadcast {broadcast_id} completed",
    )


def assert_whole_and_once(engine: Engine, simulator: SimulatorControl, broadcast_id: str, accepted: int) -> None:
    summary = simulator.summary()
    assert summary["duplicate_count"] == 0, summary["duplicate_recipients"]
    assert summary["distinct_recipients"] == accepted
    assert states(engine, broadcast_id).get("accepted") == accepted
    with create_session_factory(engine)() as session:
        maintained = {state: n for state, n in counts.state_counts(session, uuid.UUID(broadcast_id)).items() if n}
    assert maintained == states(engine, broadcast_id)


def assert_nothing_half_stored(engine: Engine) -> None:
    """Every stored broadcast has exactly the messages it says it accepted."""
    rows = query(
        engine,
        "SELECT b.id, b.recipients_accepted, (SELECT count(*) FROM messages m WHERE m.broadcast_id = b.id) AS stored "
        "FROM broadcasts b",
    )
    assert all(row.recipients_accepted == row.stored for row in rows), rows
    orphans = query(engine, "SELECT count(*) FROM messages m WHERE NOT EXISTS (SELECT 1 FROM broadcasts b "
                    "WHERE b.id = m.broadcast_id)")  # fmt: skip
    assert orphans[0][0] == 0


def during_copy(engine: Engine, action: Callable[[], None], request: Callable[[], Any]) -> Any:
    """Run `request` in a thread and `action` as soon as its COPY into `messages` is running; return its answer."""
    answer: list[Any] = []
    thread = threading.Thread(target=lambda: answer.append(request()))
    database = query(engine, "SELECT current_database()")[0][0]
    thread.start()
    wait_until(
        lambda: query(
            engine,
            "SELECT 1 FROM pg_stat_activity WHERE datname = :db AND query ILIKE 'COPY messages%' AND state = 'active'",
            db=database,
        ),
        60,
        interval=0.01,
        message="the intake's COPY to start",
    )
    action()
    thread.join(timeout=120)
    assert answer, "the request never answered"
    return answer[0]


def test_postgres_restarted_mid_send(
    outage_settings: Settings,  # noqa: F811
    embedded_postgres: EmbeddedPostgres,
    simulator: SimulatorControl,
    artifacts_directory: Path,
) -> None:
    engine = create_database_engine(outage_settings)
    client = create_app(outage_settings).test_client()
    simulator.configure(latency_ms=100)
    total = 2000
    response = post(client, new_key(engine), distinct_numbers(total))
    assert response.status_code == 202, response.text
    broadcast_id = response.get_json()["id"]
    processes = WorkerProcesses(outage_settings, artifacts_directory)
    try:
        processes.start_worker("worker-postgres-restart")
        processes.start_beat()
        wait_until(lambda: states(engine, broadcast_id).get("accepted", 0) >= 300, 90, message="sending to start")
        embedded_postgres.stop()
        time.sleep(3)
        embedded_postgres.start()
        assert states(engine, broadcast_id).get("accepted", 0) < total, "finished before the restart"
        wait_completed(engine, broadcast_id, 240)
    finally:
        processes.stop_all()
    assert_whole_and_once(engine, simulator, broadcast_id, total)
    engine.dispose()


def test_postgres_restarted_mid_intake_is_a_503_with_nothing_stored_and_the_retry_is_sent_once(
    outage_settings: Settings,  # noqa: F811
    embedded_postgres: EmbeddedPostgres,
    simulator: SimulatorControl,
    artifacts_directory: Path,
) -> None:
    engine = create_database_engine(outage_settings)
    client = create_app(outage_settings).test_client()
    key = new_key(engine)
    recipients = distinct_numbers(INTAKE_RECIPIENTS)

    def restart() -> None:
        embedded_postgres.stop()
        embedded_postgres.start()

    answer = during_copy(engine, restart, lambda: post(client, key, recipients, idempotency_key="fault-pg-intake"))

    assert answer.status_code == 503, answer.text
    assert query(engine, "SELECT count(*) FROM broadcasts")[0][0] == 0
    assert query(engine, "SELECT count(*) FROM messages")[0][0] == 0
    retried = post(client, key, recipients, idempotency_key="fault-pg-intake")
    assert retried.status_code == 202, retried.text
    assert_nothing_half_stored(engine)
    broadcast_id = retried.get_json()["id"]
    processes = WorkerProcesses(outage_settings, artifacts_directory)
    simulator.configure(latency_ms=0)
    try:
        processes.start_worker("worker-postgres-intake", concurrency=3)
        processes.start_beat()
        wait_completed(engine, broadcast_id, 420)
    finally:
        processes.stop_all()
    assert_whole_and_once(engine, simulator, broadcast_id, INTAKE_RECIPIENTS)
    engine.dispose()


def test_redis_restarted_mid_intake_stores_the_broadcast_whole_and_the_sweeper_sends_it_once(
    settings: Settings,
    engine: Engine,
    private_redis: EmbeddedRedis,
    simulator: SimulatorControl,
    artifacts_directory: Path,
) -> None:
    settings = settings.replace(redis_url=private_redis.url)
    client = create_app(settings).test_client()
    key = new_key(engine)
    recipients = distinct_numbers(INTAKE_RECIPIENTS)

    # Redis goes away after the intake's check and before its enqueue: the broadcast is committed first.
    answer = during_copy(engine, private_redis.stop, lambda: post(client, key, recipients))
    assert answer.status_code == 202, answer.text
    broadcast_id = answer.get_json()["id"]
    assert_nothing_half_stored(engine)
    assert query(engine, "SELECT enqueued_at FROM broadcasts WHERE id = :id", id=broadcast_id)[0][0] is None

    # While it is down, a new broadcast is refused with a 503 and nothing of it is stored.
    refused = post(client, key, distinct_numbers(10, prefix="+1666"))
    assert refused.status_code == 503 and refused.headers["Retry-After"]
    assert query(engine, "SELECT count(*) FROM broadcasts")[0][0] == 1

    private_redis.start()
    simulator.configure(latency_ms=0)
    processes = WorkerProcesses(settings, artifacts_directory)
    try:
        processes.start_worker("worker-redis-intake", concurrency=3)
        processes.start_beat()  # the sweeper enqueues the broadcast whose enqueue failed
        wait_completed(engine, broadcast_id, 420)
    finally:
        processes.stop_all()
    assert_whole_and_once(engine, simulator, broadcast_id, INTAKE_RECIPIENTS)


def test_twilio_answering_500_and_timing_out_for_a_whole_broadcast(
    settings: Settings, engine: Engine, simulator: SimulatorControl, workers: WorkerProcesses
) -> None:
    client = create_app(settings).test_client()
    # One request in five answered 500 after Twilio stored the message, one in twenty answered only after the
    # workers' 3 s timeout, and a few rate-limited: every one is ambiguous or retried, none may be sent twice.
    simulator.configure(latency_ms=20, error_rate_500=0.2, timeout_rate=0.05, slow_ms=5000, error_rate_429=0.05)
    total = 600
    # Refused by Twilio with 21211: failed, final.
    invalid = [magic_variant("+15005550001", index) for index in range(10)]
    response = post(client, new_key(engine), distinct_numbers(total) + invalid)
    assert response.status_code == 202, response.text
    broadcast_id = response.get_json()["id"]

    workers.start_worker(concurrency=3)
    workers.start_beat()  # the sweeper reconciles the ambiguous answers against Twilio's message list
    wait_completed(engine, broadcast_id, 300)

    summary = simulator.summary()
    assert summary["per_status_code"].get("500", 0) >= total // 10, summary["per_status_code"]
    assert summary["rejected_429"] > 0
    assert states(engine, broadcast_id) == {"accepted": total, "failed": len(invalid)}
    assert_whole_and_once(engine, simulator, broadcast_id, total)


def test_a_worker_killed_while_a_completion_callback_trickles(
    settings: Settings, engine: Engine, simulator: SimulatorControl, workers: WorkerProcesses
) -> None:
    # The first POST to the client's callback_url is answered one byte a second; its worker is SIGKILLed mid-POST.
    settings = settings.replace(callback_deadline_seconds=20.0)
    workers.settings = settings
    receiver = TricklingFirstPostReceiver()
    try:
        client = create_app(settings).test_client()
        key = new_key(engine)
        workers.start_worker("sender", queues=f"{SEND_QUEUE},{MAINTENANCE_QUEUE},{STATUS_QUEUE}")
        callback_worker = workers.start_worker("callbacks", concurrency=1, queues=CALLBACK_QUEUE)
        workers.start_beat()
        first = client.post(
            "/v1/broadcasts",
            json={"message": "fault campaign", "recipients": distinct_numbers(5), "callback_url": receiver.url},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert first.status_code == 202, first.text
        first_id = first.get_json()["id"]
        assert receiver.trickling.wait(60), "the completion callback never started"

        # Sending is unaffected while the callback trickles: a second broadcast is sent whole, at once.
        started = time.monotonic()
        second = post(client, key, distinct_numbers(200, prefix="+1556"))
        assert second.status_code == 202, second.text
        second_id = second.get_json()["id"]
        wait_until(lambda: states(engine, second_id) == {"accepted": 200}, 30, message="second broadcast sent")
        sent_in = time.monotonic() - started

        callback_worker.kill()
        workers.start_worker("callbacks-again", concurrency=1, queues=CALLBACK_QUEUE)
        # The killed attempt's lease (deadline 20 s + backoff 10 s) runs out; beat enqueues the callback again.
        wait_until(lambda: receiver.posts, 90, interval=0.5, message="the completion callback delivered")

        [post_received] = receiver.posts
        summary = json.loads(post_received.body)
        assert summary["broadcast"]["id"] == first_id and summary["broadcast"]["status"] == "completed"
        row = query(
            engine, "SELECT callback_attempts, callback_sent_at, callback_due_at FROM broadcasts WHERE id = :id",
            id=first_id,
        )[0]  # fmt: skip
        assert (row.callback_attempts, row.callback_sent_at is not None, row.callback_due_at) == (2, True, None)
        time.sleep(3)  # beat keeps running: a delivered callback is never posted again
        assert len(receiver.posts) == 1
        assert sent_in < 20, f"the second broadcast took {sent_in:.1f}s to send"
        assert simulator.summary()["duplicate_count"] == 0
        assert states(engine, first_id) == {"accepted": 5}
    finally:
        receiver.close()
