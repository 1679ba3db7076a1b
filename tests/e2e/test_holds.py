"""End to end: a daily cap holds every sending broadcast and sending resumes by itself at the reset (the clock is
moved at the simulator and for beat); a surge of carrier filtering holds one broadcast until an operator resumes it.
None of these answers counts as a delivery attempt, and no recipient is sent twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from shared.broadcasts.control import resume_broadcast
from shared.platform.settings import Settings
from shared.platform.task_queue import create_celery_app, enqueue_chunks
from tests.conftest import SimulatorControl, WorkerProcesses, wait_until
from tests.factories import create_broadcast

pytestmark = pytest.mark.e2e


def broadcast_row(engine: Engine, broadcast_id: object) -> Any:
    with engine.connect() as connection:
        return connection.execute(
            text("SELECT status, held_reason, held_until FROM broadcasts WHERE id = :id"), {"id": broadcast_id}
        ).one()


def states(engine: Engine, broadcast_id: object) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT state, count(*) FROM messages WHERE broadcast_id = :id GROUP BY state"), {"id": broadcast_id}
        )
        return {state: count for state, count in rows}


def start(settings: Settings, workers: WorkerProcesses, *broadcasts: Any) -> None:
    workers.start_worker(concurrency=2, queues="sms.send,sms.maintenance")
    workers.start_worker("status-worker", concurrency=1, queues="sms.status")
    workers.start_beat()
    celery_app = create_celery_app(settings)
    # Chunks of the broadcasts taken in turn, so they send at the same time.
    for chunk in range(max((broadcast.chunk_count for broadcast in broadcasts), default=0)):
        for broadcast in broadcasts:
            if chunk < broadcast.chunk_count:
                enqueue_chunks(celery_app, broadcast.id, [chunk])


class TestDailyCap:
    @pytest.fixture
    def settings(self, base_settings: Settings, webhook_port: int) -> Settings:
        return base_settings.replace(
            public_base_url=f"http://127.0.0.1:{webhook_port}",
            twilio_segments_per_second="100",
            claim_lease_seconds=60,
            delivery_retry_max_attempts=1,  # a cap answer must not use up the only attempt
        )

    def test_a_daily_cap_holds_all_sending_until_it_resets_then_sending_resumes_by_itself(
        self,
        settings: Settings,
        engine: Engine,
        db_session: Session,
        simulator: SimulatorControl,
        workers: WorkerProcesses,
        webhook_service: None,
        redis_client: redis.Redis,
    ) -> None:
        simulator.configure_pool(
            senders=[{"type": "long_code", "count": 10, "segments_per_second": 10}],
            daily_cap={"code": 30023, "limit": 500},
        )
        first = create_broadcast(db_session, [f"+1555700{index:04d}" for index in range(400)])
        second = create_broadcast(db_session, [f"+1555710{index:04d}" for index in range(400)])
        start(settings, workers, first, second)

        def both_held() -> bool:
            return all(broadcast_row(engine, b.id).status == "held" for b in (first, second))

        wait_until(both_held, 120, interval=0.5, message="both broadcasts held by the cap")
        held = broadcast_row(engine, first.id)
        assert "30023" in held.held_reason
        # 30023 resets at midnight Pacific time.
        reset: datetime = held.held_until
        pacific_midnight = reset.astimezone(ZoneInfo("America/Los_Angeles"))
        assert (pacific_midnight.hour, pacific_midnight.minute) == (0, 0)
        assert timedelta(0) < reset - datetime.now(UTC) <= timedelta(days=1)
        assert broadcast_row(engine, second.id).held_until == reset

        wait_until(lambda: simulator.pool()["queue_length"] == 0, 60, message="Twilio's queue drained")
        sent_while_held = simulator.summary()["accepted"]
        wait_until(lambda: simulator.summary()["accepted"] == sent_while_held, 10, message="nothing more sent")
        assert sum(states(engine, first.id).values()) == 400

        # The night passes: at the simulator (its cap resets) and for beat, restarted with its clock moved.
        jump = (reset - datetime.now(UTC)).total_seconds() + 60
        simulator.advance_clock(jump)
        workers.stop_all()
        workers.settings = settings.replace(clock_offset_seconds=jump)
        start(workers.settings, workers)

        for broadcast in (first, second):
            wait_until(
                lambda broadcast=broadcast: states(engine, broadcast.id).get("delivered", 0) == 400,
                180,
                interval=1,
                message="every recipient delivered after the reset",
            )
        # Twilio accepted a capped message, then failed it with 30023 without transmitting it: each one was sent
        # again after the reset, and that is the only second record any recipient has.
        summary = simulator.summary()
        capped_at_twilio = simulator.pool()["failed_by_code"].get("30023", 0)
        assert capped_at_twilio > 0 and summary["duplicate_count"] == capped_at_twilio
        for number in summary["duplicate_recipients"]:
            records = simulator.received(number)
            assert [record["status"] for record in records] == ["failed", "delivered"], records
        with engine.connect() as connection:
            capped = connection.execute(text("SELECT count(*) FROM messages WHERE uncounted_attempts > 0")).scalar_one()
        assert capped > 0  # some were answered 30023, sent again, and delivered despite one delivery attempt


class TestCircuitBreaker:
    @pytest.fixture
    def settings(self, base_settings: Settings, webhook_port: int) -> Settings:
        return base_settings.replace(
            public_base_url=f"http://127.0.0.1:{webhook_port}",
            twilio_segments_per_second="25",
            claim_lease_seconds=60,
            circuit_breaker_failure_share=0.2,
            circuit_breaker_min_outcomes=50,
        )

    def test_a_surge_of_carrier_filtering_holds_the_broadcast_until_an_operator_resumes_it(
        self,
        settings: Settings,
        engine: Engine,
        db_session: Session,
        simulator: SimulatorControl,
        workers: WorkerProcesses,
        webhook_service: None,
        redis_client: redis.Redis,
    ) -> None:
        # The simulator's magic number +1 5XX 555 0017 (any area code 500-599) is filtered by the carrier (30007).
        # Sent first (pacing admits a chunk's messages in order): all of them are out before their receipts trip the
        # breaker, so after the resume only ordinary numbers are left and the breaker stays closed.
        filtered = [f"+1{area}5550017" for area in range(500, 530)]
        ordinary = [f"+1555720{index:04d}" for index in range(970)]
        broadcast = create_broadcast(db_session, filtered + ordinary)
        start(settings, workers, broadcast)

        wait_until(lambda: broadcast_row(engine, broadcast.id).status == "held", 120, message="the breaker tripped")
        held = broadcast_row(engine, broadcast.id)
        assert "circuit breaker" in held.held_reason and "30007" in held.held_reason
        assert held.held_until is None  # waits for an operator
        accepted_at_trip = simulator.summary()["accepted"]
        assert accepted_at_trip < 1000
        wait_until(lambda: simulator.summary()["accepted"] == accepted_at_trip, 15, message="sending stopped")

        # The operator looks before resuming: by then the receipts of what went out before the trip are in (those
        # arriving after a resume count in the fresh window, and would trip it again).
        def filtered_receipts_in() -> bool:
            with engine.connect() as connection:
                waiting = connection.execute(
                    text(
                        "SELECT count(*) FROM messages WHERE broadcast_id = :id AND to_number = ANY(:numbers) "
                        "AND state IN ('sending', 'accepted', 'sent')"
                    ),
                    {"id": broadcast.id, "numbers": filtered},
                ).scalar_one()
            return bool(waiting == 0)

        wait_until(filtered_receipts_in, 60, interval=0.5, message="the receipts of the filtered messages sent")
        resume_broadcast(db_session, redis_client, create_celery_app(settings), broadcast.id)
        wait_until(
            lambda: states(engine, broadcast.id).get("pending", 0) == 0 and simulator.summary()["accepted"] == 1000,
            180,
            interval=1,
            message="the rest sent after the resume",
        )
        assert simulator.summary()["duplicate_count"] == 0
