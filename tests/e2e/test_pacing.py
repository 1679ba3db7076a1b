"""End to end: real workers pace a broadcast to a simulated Messaging Service pool of 10 senders x 5 segments/s,
with the simulator's status callbacks reaching a live webhook, so the bound on Twilio's queue sees what drained.

The simulator counts what matters: when each message left its sender's queue, and the deepest the pool's queue
has been (`queue_peak_seconds`, in seconds of the whole pool's throughput).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from shared.broadcasts.control import cancel_broadcast
from shared.platform.settings import Settings
from shared.platform.task_queue import create_celery_app, enqueue_chunks
from tests.conftest import SimulatorControl, WorkerProcesses, wait_until
from tests.factories import create_broadcast

pytestmark = pytest.mark.e2e

POOL = [{"type": "long_code", "count": 10, "segments_per_second": 5}]
POOL_RATE = 50.0
# Paced at 50 segments/s, two workers' chunks of 100 take about 4 s each: the suite's 8 s lease is too short.
LEASE_SECONDS = 60
ONE_SEGMENT = "Pacing test: one segment."
TWO_SEGMENTS = "Pacing test, two segments. " + "x" * 150  # 177 GSM-7 characters


def numbers(prefix: int, count: int) -> list[str]:
    return [f"+1555{prefix:02d}{index:05d}" for index in range(count)]


def states(engine: Engine, broadcast_id: object) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT state, count(*) FROM messages WHERE broadcast_id = :id GROUP BY state"), {"id": broadcast_id}
        )
        return {state: count for state, count in rows}


def paced_rate(pool: dict[str, Any]) -> float:
    """Segments per second from the first departure to the last (the last message's own segments excluded,
    since its departure is when it starts)."""
    span = pool["last_transmitted_at"] - pool["first_transmitted_at"]
    return (pool["transmitted_segments"] - 2) / span


def start(settings: Settings, workers: WorkerProcesses, *broadcasts: Any) -> None:
    # As in production (compose, `bulksms up`): paced chunk tasks wait for their turn, so the status callbacks
    # that tell pacing what drained get a worker of their own.
    workers.start_worker(concurrency=2, queues="sms.send,sms.maintenance")
    workers.start_worker("status-worker", concurrency=1, queues="sms.status")
    workers.start_beat()  # the status consumer: callbacks tell pacing what left Twilio's queue
    celery_app = create_celery_app(settings)
    for broadcast in broadcasts:
        enqueue_chunks(celery_app, broadcast.id, range(broadcast.chunk_count))


def transmitted_everything(simulator: SimulatorControl, messages: int) -> dict[str, Any] | None:
    pool = simulator.pool()
    done = pool["transmitted"] >= messages and pool["queue_length"] == 0
    return pool if done else None


class TestPacedAtThePoolRate:
    @pytest.fixture
    def settings(self, base_settings: Settings, webhook_port: int) -> Settings:
        return base_settings.replace(
            public_base_url=f"http://127.0.0.1:{webhook_port}",
            twilio_segments_per_second=str(POOL_RATE),
            claim_lease_seconds=LEASE_SECONDS,
        )

    def test_one_and_two_segment_messages_go_out_at_the_pool_rate_with_a_short_queue(
        self,
        settings: Settings,
        engine: Engine,
        db_session: Session,
        simulator: SimulatorControl,
        workers: WorkerProcesses,
        webhook_service: None,
        redis_client: redis.Redis,
    ) -> None:
        simulator.configure_pool(senders=POOL)
        short = create_broadcast(db_session, numbers(10, 3000), body=ONE_SEGMENT)
        long = create_broadcast(db_session, numbers(11, 1000), body=TWO_SEGMENTS)
        start(settings, workers, short, long)

        pool = wait_until(lambda: transmitted_everything(simulator, 4000), 240, interval=1, message="every message")
        assert pool["transmitted_segments"] == 5000
        rate = paced_rate(pool)
        assert 0.95 * POOL_RATE <= rate <= 1.0 * POOL_RATE * 1.005, rate
        assert pool["queue_peak_seconds"] <= settings.twilio_queue_max_seconds, pool["queue_peak_seconds"]
        assert pool["failed_by_code"] == {}
        assert simulator.summary()["duplicate_count"] == 0


class TestAdaptive:
    """Configured at 10x what the pool can do: the queue bound alone holds Twilio's queue down."""

    QUEUE_SECONDS = 10.0

    @pytest.fixture
    def settings(self, base_settings: Settings, webhook_port: int) -> Settings:
        return base_settings.replace(
            public_base_url=f"http://127.0.0.1:{webhook_port}",
            twilio_segments_per_second=str(POOL_RATE * 10),
            twilio_queue_max_seconds=self.QUEUE_SECONDS,
            claim_lease_seconds=LEASE_SECONDS,
        )

    def test_the_queue_at_twilio_stays_within_its_bound(
        self,
        settings: Settings,
        engine: Engine,
        db_session: Session,
        simulator: SimulatorControl,
        workers: WorkerProcesses,
        webhook_service: None,
        redis_client: redis.Redis,
    ) -> None:
        simulator.configure_pool(senders=POOL)
        broadcast = create_broadcast(db_session, numbers(12, 2500), body=ONE_SEGMENT)
        start(settings, workers, broadcast)

        pool = wait_until(lambda: transmitted_everything(simulator, 2500), 240, interval=1, message="every message")
        # Four times what the conservative start alone allows: the bound grew with the drain it saw...
        assert pool["queue_peak_segments"] > 4 * self.QUEUE_SECONDS * 10
        # ... and never past the bound, in seconds of what the pool really transmits.
        assert pool["queue_peak_seconds"] <= self.QUEUE_SECONDS, pool["queue_peak_seconds"]
        assert paced_rate(pool) >= 0.9 * POOL_RATE  # the senders were kept busy all along
        assert pool["failed_by_code"] == {}


class TestCancel:
    QUEUE_SECONDS = 10.0

    @pytest.fixture
    def settings(self, base_settings: Settings, webhook_port: int) -> Settings:
        return base_settings.replace(
            public_base_url=f"http://127.0.0.1:{webhook_port}",
            twilio_segments_per_second=str(POOL_RATE * 10),
            twilio_queue_max_seconds=self.QUEUE_SECONDS,
            claim_lease_seconds=LEASE_SECONDS,
        )

    def test_after_a_cancel_at_most_the_queue_bound_still_goes_out(
        self,
        settings: Settings,
        engine: Engine,
        db_session: Session,
        simulator: SimulatorControl,
        workers: WorkerProcesses,
        webhook_service: None,
        redis_client: redis.Redis,
    ) -> None:
        simulator.configure_pool(senders=POOL)
        broadcast = create_broadcast(db_session, numbers(13, 3000), body=ONE_SEGMENT)
        broadcast_id: uuid.UUID = broadcast.id
        start(settings, workers, broadcast)
        wait_until(lambda: simulator.pool()["transmitted"] > 0, 60, message="the first transmission")
        time.sleep(20)

        canceled_at = simulator.now()
        canceled = cancel_broadcast(db_session, redis_client, broadcast_id)
        queued_when_stopped = canceled.queued_at_twilio_when_stopped
        wait_until(lambda: simulator.pool()["queue_length"] == 0, 120, interval=1, message="Twilio's queue drained")
        time.sleep(3)  # requests in flight at the cancel (at most one per worker) have landed
        wait_until(lambda: simulator.pool()["queue_length"] == 0, 60, interval=1, message="Twilio's queue drained")

        after = simulator.transmissions(since=canceled_at)
        pool = simulator.pool()
        assert pool["transmitted"] < 3000, "everything went out before the cancel: the test proves nothing"
        # What Twilio held at the cancel, plus what was in flight then (up to TWILIO_MAX_CONCURRENCY, a few here).
        assert after["segments"] <= self.QUEUE_SECONDS * POOL_RATE + 20, after
        assert queued_when_stopped is not None
        assert queued_when_stopped == pytest.approx(after["messages"], abs=max(60, after["messages"] * 0.25))
        assert simulator.summary()["duplicate_count"] == 0
        db_session.expire_all()
        assert states(engine, broadcast_id).get("pending", 0) == 0
