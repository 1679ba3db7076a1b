"""End to end: a real worker sends a broadcast to the simulator, whose signed status callbacks reach a live
webhook service (gunicorn), are queued in Redis and applied to PostgreSQL by the status consumer."""

from __future__ import annotations

import pytest
import redis
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from shared.platform.settings import Settings
from shared.platform.task_queue import create_celery_app, enqueue_chunks
from tests.conftest import SimulatorControl, WorkerProcesses, wait_until
from tests.factories import create_broadcast

pytestmark = pytest.mark.e2e


@pytest.fixture
def settings(base_settings: Settings, webhook_port: int) -> Settings:
    """The worker's callback URLs point at the live webhook below."""
    return base_settings.replace(public_base_url=f"http://127.0.0.1:{webhook_port}")


def message_states(engine: Engine, broadcast_id: object) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT state, count(*) FROM messages WHERE broadcast_id = :id GROUP BY state"), {"id": broadcast_id}
        )
        return {state: count for state, count in rows}


def test_broadcast_callbacks_reach_postgres_through_the_webhook(
    settings: Settings,
    engine: Engine,
    db_session: Session,
    simulator: SimulatorControl,
    workers: WorkerProcesses,
    webhook_service: None,
    redis_client: redis.Redis,  # requested so the test starts from an empty stream, whatever ran before
) -> None:
    ordinary = [f"+1555{index:07d}" for index in range(30)]
    filtered = ["+15015550017", "+15025550017"]  # queued -> sent -> undelivered 30007: final
    unreachable = ["+15015550013"]  # undelivered 30003: a delivery retry is scheduled
    broadcast = create_broadcast(db_session, ordinary + filtered + unreachable, chunk_size=10)
    workers.start_worker()
    workers.start_beat()
    enqueue_chunks(create_celery_app(settings), broadcast.id, range(broadcast.chunk_count))

    expected = {"delivered": 30, "undelivered": 2, "retry_scheduled": 1}
    wait_until(lambda: message_states(engine, broadcast.id) == expected, 90, interval=0.5, message=str(expected))
    assert simulator.summary()["callbacks"]["failed"] == 0
    with engine.connect() as connection:
        delivered_without_sid = connection.execute(
            text("SELECT count(*) FROM messages WHERE state = 'delivered' AND (twilio_sid IS NULL OR final_at IS NULL)")
        ).scalar_one()
        events = dict(
            connection.execute(text("SELECT message_status, count(*) FROM status_events GROUP BY 1")).all()  # type: ignore[arg-type]
        )
        receipt = connection.execute(
            text("SELECT last_receipt_at FROM broadcasts WHERE id = :id"), {"id": broadcast.id}
        ).scalar_one()
    assert delivered_without_sid == 0
    assert events == {"queued": 33, "sent": 33, "delivered": 30, "undelivered": 3}
    assert receipt is not None
