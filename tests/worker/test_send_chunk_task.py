"""`sms.send_chunk` and `sms.sweep` in real Celery worker and beat processes, against the simulator."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session

from shared.platform.models import BroadcastStatus, MessageState
from shared.platform.settings import Settings, settings_to_environment
from shared.platform.task_queue import create_celery_app, enqueue_chunks
from tests.conftest import REPOSITORY_ROOT, wait_until
from tests.factories import broadcast_of, create_broadcast, messages_of, numbers, states_of

pytestmark = pytest.mark.e2e


def wait_until_submitted(session: Session, broadcast_id: Any, timeout_seconds: float) -> None:
    wait_until(
        lambda: broadcast_of(session, broadcast_id).status == BroadcastStatus.SUBMITTED,
        timeout_seconds,
        interval=0.5,
        message=f"broadcast submitted (states now {states_of(session, broadcast_id)})",
    )


def test_every_recipient_is_sent_exactly_once_and_recorded(
    db_session: Session, settings: Settings, workers: Any, simulator: Any
) -> None:
    recipients = [*numbers(248), "+15015550001", "+15015550004"]
    broadcast = create_broadcast(db_session, recipients)
    workers.start_worker(concurrency=2)

    app = create_celery_app(settings)
    enqueue_chunks(app, broadcast.id, range(broadcast.chunk_count))
    enqueue_chunks(app, broadcast.id, [1])  # a duplicated task must not send twice

    wait_until_submitted(db_session, broadcast.id, 90)
    messages = messages_of(db_session, broadcast.id)
    assert states_of(db_session, broadcast.id) == {MessageState.ACCEPTED: 248, MessageState.FAILED: 2}
    assert all(message.twilio_sid for message in messages if message.state == MessageState.ACCEPTED)
    assert sorted(message.error_code or 0 for message in messages if message.state == MessageState.FAILED) == [
        21211,
        21610,
    ]
    summary = simulator.summary()
    assert summary["accepted"] == 248 and summary["duplicate_count"] == 0
    assert summary["requests"] == 250  # permanent errors were not retried


def test_a_storm_of_429s_loses_no_recipient_and_sends_none_twice(
    db_session: Session, settings: Settings, workers: Any, simulator: Any
) -> None:
    simulator.configure(max_concurrency=4, latency_ms=20)  # Twilio's own limit far below our cap of 100
    broadcast = create_broadcast(db_session, numbers(300))
    workers.start_worker(concurrency=2)

    enqueue_chunks(create_celery_app(settings), broadcast.id, range(broadcast.chunk_count))

    wait_until_submitted(db_session, broadcast.id, 150)
    assert states_of(db_session, broadcast.id) == {MessageState.ACCEPTED: 300}
    summary = simulator.summary()
    assert summary["rejected_429"] > 0
    assert summary["accepted"] == 300 and summary["duplicate_count"] == 0


def test_beat_and_the_sweeper_send_a_broadcast_whose_enqueue_never_happened(
    db_session: Session, workers: Any, simulator: Any
) -> None:
    broadcast = create_broadcast(db_session, numbers(120), enqueued=False, created_ago=timedelta(seconds=30))
    workers.start_worker(concurrency=2)
    workers.start_beat()

    wait_until_submitted(db_session, broadcast.id, 90)
    assert broadcast_of(db_session, broadcast.id).enqueued_at is not None
    summary = simulator.summary()
    assert summary["accepted"] == 120 and summary["duplicate_count"] == 0


def test_the_worker_refuses_to_start_without_a_setting_it_needs(settings: Settings) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "PUBLIC_BASE_URL"))}
    environment.update(settings_to_environment(settings))
    del environment["TWILIO_MESSAGING_SERVICE_SID"]

    completed = subprocess.run(
        [sys.executable, "-c", "import worker.app"],
        env=environment,
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert completed.returncode != 0
    assert "TWILIO_MESSAGING_SERVICE_SID" in completed.stderr
