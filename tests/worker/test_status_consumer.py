"""The status consumer in real Celery worker processes: nothing accepted by the webhook is lost when PostgreSQL
goes away or a consumer is killed mid-batch, and nothing is applied twice."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from flask.testing import FlaskClient
from sqlalchemy import Engine, text, update
from sqlalchemy.orm import Session

from api.webhook_app import create_webhook_app
from bulksms_tools.local_services import EmbeddedPostgres
from shared.platform.db import create_database_engine, create_session_factory
from shared.platform.models import Message
from shared.platform.settings import Settings
from shared.receipts.status_queue import CONSUMER_GROUP, STREAM_KEY, push_callback
from tests.conftest import TEST_AUTH_TOKEN, WorkerProcesses, wait_until
from tests.factories import create_broadcast, messages_of
from tests.status_callbacks import CALLBACK_PATH, callback_parameters, new_sid, twilio_signature

pytestmark = pytest.mark.e2e


def accepted_messages(session: Session, count: int) -> list[Message]:
    broadcast = create_broadcast(session, [f"+1555{index:07d}" for index in range(count)])
    for message in messages_of(session, broadcast.id):
        session.execute(
            update(Message)
            .where(Message.id == message.id)
            .values(state="accepted", attempts=1, twilio_sid=new_sid(), twilio_status="accepted")
        )
    session.commit()
    return messages_of(session, broadcast.id)


def post_signed(client: FlaskClient, settings: Settings, message: Message, status: str) -> int:
    query = f"message_id={message.id}&attempt=1"
    parameters = callback_parameters(message.twilio_sid or "", status, to=message.to_number)
    signature = twilio_signature(TEST_AUTH_TOKEN, f"{settings.public_base_url}{CALLBACK_PATH}?{query}", parameters)
    response = client.post(f"{CALLBACK_PATH}?{query}", data=parameters, headers={"X-Twilio-Signature": signature})
    return response.status_code


def states(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return dict(connection.execute(text("SELECT state, count(*) FROM messages GROUP BY state")).all())  # type: ignore[arg-type]


def stored_events(engine: Engine) -> tuple[int, int, int]:
    """(events stored, distinct (SID, status) among them, not applied)."""
    with engine.connect() as connection:
        return tuple(  # type: ignore[return-value]
            connection.execute(
                text(
                    "SELECT count(*), count(DISTINCT (message_sid, message_status)), "
                    "count(*) FILTER (WHERE applied_at IS NULL) FROM status_events"
                )
            ).one()
        )


def stream_drained(client: redis.Redis) -> bool:
    pending = client.xpending(STREAM_KEY, CONSUMER_GROUP)["pending"] if client.exists(STREAM_KEY) else 0
    return client.xlen(STREAM_KEY) == 0 and pending == 0


def test_callbacks_during_a_postgres_outage_are_applied_after_it_returns(
    outage_settings: Settings,
    embedded_postgres: EmbeddedPostgres,
    redis_client: redis.Redis,
    artifacts_directory: Path,
) -> None:
    engine = create_database_engine(outage_settings)
    session = create_session_factory(engine)()
    messages = accepted_messages(session, 40)
    session.close()
    webhook = create_webhook_app(outage_settings).test_client()
    workers = WorkerProcesses(outage_settings, artifacts_directory)
    try:
        workers.start_worker()
        workers.start_beat()
        assert {post_signed(webhook, outage_settings, message, "sent") for message in messages} == {204}
        wait_until(lambda: states(engine) == {"sent": 40}, 60, message="the consumer applying `sent`")

        embedded_postgres.stop()
        engine.dispose()
        # The webhook never needs PostgreSQL: every callback is still accepted.
        assert {post_signed(webhook, outage_settings, message, "delivered") for message in messages} == {204}
        wait_until(lambda: redis_client.xlen(STREAM_KEY) == 40, 5, message="delivered callbacks queued")
        time.sleep(4)  # several consumer runs fail meanwhile
        assert redis_client.xlen(STREAM_KEY) == 40  # nothing acknowledged without a commit
        embedded_postgres.start()

        wait_until(lambda: states(engine) == {"delivered": 40}, 60, message="callbacks applied after the outage")
        wait_until(lambda: stream_drained(redis_client), 30, message="the stream emptied")
        assert stored_events(engine) == (80, 80, 0)
    finally:
        workers.stop_all()
        engine.dispose()


def test_consumer_killed_mid_batch_loses_nothing_and_applies_once(
    settings: Settings, engine: Engine, db_session: Session, redis_client: redis.Redis, artifacts_directory: Path
) -> None:
    small_batches = settings.replace(status_batch_size=20)
    messages = accepted_messages(db_session, 3000)
    for status in ("sent", "delivered"):
        for message in messages:
            push_callback(redis_client, callback_parameters(message.twilio_sid or "", status), str(message.id), "1")
    total = 2 * len(messages)
    workers = WorkerProcesses(small_batches, artifacts_directory)
    try:
        worker = workers.start_worker("status-worker-1")
        workers.start_beat()
        wait_until(lambda: stored_events(engine)[0] >= 200, 60, interval=0.05, message="the first batches applied")
        worker.kill()  # SIGKILL the whole worker, batches in hand
        applied_before_kill = stored_events(engine)[0]
        assert applied_before_kill < total, "the consumer finished before it could be killed: make the test larger"
        assert redis_client.xlen(STREAM_KEY) > 0

        workers.start_worker("status-worker-2")
        wait_until(lambda: stream_drained(redis_client), 120, interval=0.5, message="the rest applied after restart")
        assert stored_events(engine) == (total, total, 0)  # every callback stored exactly once, all applied
        assert states(engine) == {"delivered": len(messages)}
    finally:
        workers.stop_all()
