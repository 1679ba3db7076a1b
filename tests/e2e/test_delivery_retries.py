"""End to end: delivery retries and completion through real processes. The simulator's callbacks reach a live
webhook (gunicorn), the status consumer schedules retries, beat releases them, a worker sends the new attempts,
the broadcast completes and the client's callback_url receives one signed summary."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from shared.platform.models import ApiKey
from shared.platform.settings import Settings
from shared.platform.task_queue import create_celery_app, enqueue_chunks
from shared.receipts.completion import SIGNATURE_HEADER, verify_callback_signature
from tests.callback_receiver import CompletionCallbackReceiver
from tests.conftest import SimulatorControl, WorkerProcesses, wait_until
from tests.factories import create_broadcast

pytestmark = pytest.mark.e2e


@pytest.fixture
def settings(base_settings: Settings, webhook_port: int) -> Settings:
    """Callbacks reach the live webhook; retries are due after about a second; two attempts at most."""
    return base_settings.replace(
        public_base_url=f"http://127.0.0.1:{webhook_port}",
        delivery_retry_base_seconds=1.0,
        delivery_retry_max_attempts=2,
    )


@pytest.fixture
def completion_receiver() -> Iterator[CompletionCallbackReceiver]:
    receiver = CompletionCallbackReceiver()
    yield receiver
    receiver.close()


def outcomes(engine: Engine, broadcast_id: object) -> dict[str, tuple[str, int, int | None]]:
    """Recipient -> (state, attempts, error code)."""
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT to_number, state, attempts, error_code FROM messages WHERE broadcast_id = :id"),
            {"id": broadcast_id},
        )
        return {row.to_number: (row.state, row.attempts, row.error_code) for row in rows}


def test_30003_is_retried_until_delivered_or_the_cap_and_the_completion_callback_arrives_once(
    settings: Settings,
    engine: Engine,
    db_session: Session,
    simulator: SimulatorControl,
    workers: WorkerProcesses,
    webhook_service: None,
    completion_receiver: CompletionCallbackReceiver,
) -> None:
    fails_once = [f"+15{index:02d}5550023" for index in range(11, 14)]  # 30003 on attempt 1, delivered on attempt 2
    filtered = ["+15115550017"]  # 30007: never retried
    always_unreachable = ["+15115550013", "+15125550013"]  # 30003 every time: cap of 2 attempts
    ordinary = [f"+1555{index:07d}" for index in range(4)]
    broadcast = create_broadcast(db_session, fails_once + filtered + always_unreachable + ordinary, chunk_size=5)
    db_session.execute(
        text("UPDATE broadcasts SET callback_url = :url WHERE id = :id"),
        {"url": completion_receiver.url + "/bulksms/done", "id": broadcast.id},
    )
    db_session.commit()
    workers.start_worker()
    workers.start_beat()
    enqueue_chunks(create_celery_app(settings), broadcast.id, range(broadcast.chunk_count))

    wait_until(lambda: completion_receiver.posts, 120, interval=0.5, message="the completion callback")

    final = outcomes(engine, broadcast.id)
    assert {number: final[number] for number in fails_once} == dict.fromkeys(fails_once, ("delivered", 2, None))
    assert final[filtered[0]] == ("undelivered", 1, 30007)
    assert {number: final[number] for number in always_unreachable} == dict.fromkeys(
        always_unreachable, ("undelivered", 2, 30003)
    )
    assert {number: final[number][:2] for number in ordinary} == dict.fromkeys(ordinary, ("delivered", 1))

    # Twilio's end: one message per attempt, each with its own SID; archived attempts keep the first ones.
    summary = simulator.summary()
    assert summary["accepted"] == len(final) + len(fails_once) + len(always_unreachable)
    with engine.connect() as connection:
        archived = connection.execute(
            text(
                "SELECT a.attempt_number, a.twilio_sid, a.twilio_status, a.error_code, m.twilio_sid AS current_sid "
                "FROM message_attempts a JOIN messages m ON m.id = a.message_id WHERE m.broadcast_id = :id"
            ),
            {"id": broadcast.id},
        ).all()
    assert len(archived) == len(fails_once) + len(always_unreachable)
    for attempt in archived:
        assert (attempt.attempt_number, attempt.twilio_status, attempt.error_code) == (1, "undelivered", 30003)
        assert attempt.twilio_sid and attempt.twilio_sid != attempt.current_sid

    # The client's end: one signed summary saying how it went.
    [post] = completion_receiver.posts
    signing_secret = db_session.get(ApiKey, broadcast.api_key_id).signing_secret  # type: ignore[union-attr]
    assert signing_secret and verify_callback_signature(signing_secret, post.body, post.headers[SIGNATURE_HEADER])
    document = json.loads(post.body)["broadcast"]
    assert document["status"] == "completed" and document["completion"] == "all_final"
    assert document["messages"]["delivered"] == 7 and document["messages"]["undelivered"] == 3
    assert document["progress"]["delivery_rate_percent"] == 70.0
    assert document["error_codes"] == [{"error_code": 30003, "count": 2}, {"error_code": 30007, "count": 1}]
    time.sleep(3)  # several more beats: still exactly one POST
    assert len(completion_receiver.posts) == 1
