"""End to end: workers die while Twilio holds their messages queued (accepted, no date_sent yet), and recovery
still sends every recipient exactly once, counted at the simulator.

The simulator's sender pool is small on purpose: what Twilio accepted waits in its sender's queue for longer than
the claim lease (8 s in the test settings), so the sweeper has to decide while Twilio still holds the messages
queued, which a DateSent lookup cannot see.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from bulksms_tools.simulator.magic_numbers import magic_variant
from shared.platform.settings import Settings
from shared.platform.task_queue import create_celery_app, enqueue_chunks
from tests.conftest import SimulatorControl, WorkerProcesses, wait_until
from tests.factories import create_broadcast

pytestmark = pytest.mark.e2e


def one_sender(segments_per_second: float) -> list[dict[str, object]]:
    return [{"type": "long_code", "count": 1, "segments_per_second": segments_per_second}]


def rows(engine: Engine, broadcast_id: object) -> dict[str, tuple[str, int, str | None]]:
    """Recipient -> (state, attempts, Twilio SID)."""
    with engine.connect() as connection:
        found = connection.execute(
            text("SELECT to_number, state, attempts, twilio_sid FROM messages WHERE broadcast_id = :id"),
            {"id": broadcast_id},
        )
        return {row.to_number: (row.state, row.attempts, row.twilio_sid) for row in found}


def broadcast_status(engine: Engine, broadcast_id: object) -> str:
    with engine.connect() as connection:
        return str(
            connection.execute(text("SELECT status FROM broadcasts WHERE id = :id"), {"id": broadcast_id}).scalar_one()
        )


class TestKilledWorkers:
    @pytest.fixture
    def settings(self, base_settings: Settings) -> Settings:
        # At most 40 requests in flight: when the worker dies, some claimed messages reached Twilio, others never left.
        return base_settings.replace(twilio_max_concurrency=40)

    def test_workers_killed_while_twilio_holds_their_messages_queued_send_each_recipient_once(
        self,
        settings: Settings,
        db_session: Session,
        engine: Engine,
        simulator: SimulatorControl,
        workers: WorkerProcesses,
    ) -> None:
        simulator.configure_pool(senders=one_sender(2))  # 40 messages take 20 s to leave: longer than the lease
        simulator.configure(latency_ms=1500)  # Twilio stores each message at once and answers late
        recipients = [f"+1555731{index:04d}" for index in range(120)]
        broadcast = create_broadcast(db_session, recipients)  # two chunks
        doomed = workers.start_worker("doomed-worker", concurrency=2)
        enqueue_chunks(create_celery_app(settings), broadcast.id, range(broadcast.chunk_count))

        wait_until(lambda: simulator.summary()["accepted"] >= 40, 60, message="the first requests to reach Twilio")
        doomed.kill()  # SIGKILL the whole worker, its requests in flight and unanswered
        at_twilio = simulator.summary()["accepted"]
        left_behind = [state for state, _, _ in rows(engine, broadcast.id).values() if state == "sending"]
        assert at_twilio < len(recipients) and left_behind, "nothing was left in doubt: the test proves nothing"
        assert simulator.pool()["queue_length"] > 0

        simulator.configure(latency_ms=5)
        workers.start_worker("replacement-worker")
        workers.start_beat()  # the sweeper reconciles the dead worker's claims and re-enqueues what it never sent
        wait_until(lambda: broadcast_status(engine, broadcast.id) == "submitted", 120, message="the broadcast")

        # It was decided while Twilio still held some of the dead worker's messages queued, without a date_sent.
        assert simulator.pool()["transmitted"] < at_twilio
        summary = simulator.summary()
        assert summary["duplicate_count"] == 0, summary["duplicate_recipients"]
        assert summary["accepted"] == summary["distinct_recipients"] == len(recipients)
        final = rows(engine, broadcast.id)
        assert {state for state, _, _ in final.values()} == {"accepted"}
        # Each row holds the SID of the one message Twilio has for its recipient.
        for number in recipients[:60]:
            [at_simulator] = simulator.received(number)
            assert final[number][2] == at_simulator["sid"]


class TestDeliveryRetryEndingUnknown:
    @pytest.fixture
    def settings(self, base_settings: Settings, webhook_port: int) -> Settings:
        """Callbacks reach the live webhook; a 30003 is retried 5 to 7 s later (time to change Twilio's behaviour
        for the second attempt); two attempts at most."""
        return base_settings.replace(
            public_base_url=f"http://127.0.0.1:{webhook_port}",
            delivery_retry_base_seconds=6.0,
            delivery_retry_max_attempts=2,
        )

    def test_a_second_attempt_that_ends_unknown_while_queued_is_found_and_never_mistaken_for_the_first(
        self,
        settings: Settings,
        db_session: Session,
        engine: Engine,
        simulator: SimulatorControl,
        workers: WorkerProcesses,
        webhook_service: None,
    ) -> None:
        # 30003 the first time, then delivered.
        recipients = [magic_variant("+15005550023", index) for index in range(10)]
        simulator.configure(callback_delay_ms=100)
        simulator.configure_pool(senders=one_sender(20))
        broadcast = create_broadcast(db_session, recipients)
        first_worker = workers.start_worker("first-worker")
        workers.start_beat()
        enqueue_chunks(create_celery_app(settings), broadcast.id, range(broadcast.chunk_count))
        wait_until(
            lambda: {state for state, _, _ in rows(engine, broadcast.id).values()} == {"retry_scheduled"},
            60,
            message="every first attempt undelivered (30003) and a retry scheduled",
        )
        first_sids = {number: simulator.received(number)[0]["sid"] for number in recipients}

        # The second attempts: Twilio stores each one but its answer is a 500 (`unknown`), their callbacks are lost
        # (Twilio does not guarantee them), and the one sender is slow: they wait queued for 25 s.
        simulator.configure(error_rate_500=1.0, callbacks_enabled=False)
        simulator.configure_pool(senders=one_sender(0.4))
        assert {state for state, _, _ in rows(engine, broadcast.id).values()} == {"retry_scheduled"}, "too late"
        wait_until(
            lambda: {state for state, _, _ in rows(engine, broadcast.id).values()} == {"unknown"},
            60,
            message="every second attempt unknown",
        )
        first_worker.kill()  # and the worker that sent them is gone too
        assert simulator.summary()["accepted"] == 2 * len(recipients)
        simulator.configure(error_rate_500=0.0)
        workers.start_worker("replacement-worker")

        wait_until(
            lambda: {state for state, _, _ in rows(engine, broadcast.id).values()} == {"accepted"},
            60,
            message="the sweeper to reconcile the second attempts",
        )

        assert simulator.pool()["queue_length"] > 0  # decided while Twilio still held them queued
        final = rows(engine, broadcast.id)
        for number in recipients:
            first, second = simulator.received(number)  # exactly one message per attempt, never a third
            assert first["sid"] == first_sids[number]
            assert final[number] == ("accepted", 2, second["sid"])  # the second attempt's SID, not the first's
        with engine.connect() as connection:
            archived = dict(
                connection.execute(
                    text(
                        "SELECT m.to_number, a.twilio_sid FROM message_attempts a "
                        "JOIN messages m ON m.id = a.message_id WHERE m.broadcast_id = :id AND a.attempt_number = 1"
                    ),
                    {"id": broadcast.id},
                ).all()
            )
        assert archived == first_sids
        assert simulator.summary()["accepted"] == 2 * len(recipients)
