"""End to end: broadcasts sending at the same time share the throughput by their windows (shared.sending.windows),
and a deadline stops sending on time, measured at the simulator with real Celery workers.

The workers are the bottleneck here (two processes, 20 requests in flight, Twilio answering in 100 ms: about
150 messages a second), so the share each broadcast gets is the share of chunk tasks it has in the queue.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from shared.broadcasts.intake import enqueue_broadcast
from shared.platform.models import Broadcast
from shared.platform.settings import Settings
from shared.platform.task_queue import create_celery_app
from tests.conftest import SimulatorControl, WorkerProcesses, wait_until
from tests.factories import create_broadcast, numbers

pytestmark = pytest.mark.e2e


@pytest.fixture
def settings(base_settings: Settings) -> Settings:
    return base_settings.replace(twilio_max_concurrency=20, send_window_chunks=4)


@pytest.fixture(autouse=True)
def _empty_redis(redis_client: Any) -> None:
    """Asking for Redis empties it before each test (tests/conftest.py): the chunk tasks and concurrency leases the
    previous test's killed workers left behind would otherwise share this test's capacity and skew its shares."""


def state_counts(engine: Engine, broadcast_id: uuid.UUID) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT state, count(*) AS n FROM messages WHERE broadcast_id = :id GROUP BY state"),
            {"id": broadcast_id},
        )
        return {row.state: int(row.n) for row in rows}


def unsent(engine: Engine, broadcast_id: uuid.UUID) -> int:
    counts = state_counts(engine, broadcast_id)
    return counts.get("pending", 0) + counts.get("sending", 0)


def creation_times(simulator: SimulatorControl, recipients: list[str]) -> list[float]:
    """When each recipient's message reached the simulator (its clock), read back over HTTP."""
    times = []
    with requests.Session() as http:
        for number in recipients:
            response = http.get(f"{simulator.url}/_simulator/messages", params={"to": number}, timeout=10)
            response.raise_for_status()
            times.extend(message["created_at"] for message in response.json()["messages"])
    return times


def shares_while_both_sent(first: list[float], second: list[float]) -> tuple[int, int]:
    """Messages of each broadcast created while both were sending: from the later start to the earlier end, less a
    tenth at each end (the first windows are published one broadcast after the other, the last chunks run alone)."""
    start, end = max(min(first), min(second)), min(max(first), max(second))
    assert end - start > 3, "the broadcasts barely overlapped: nothing to compare"
    start, end = start + (end - start) / 10, end - (end - start) / 10
    return sum(start <= t <= end for t in first), sum(start <= t <= end for t in second)


def start_sending(session: Session, settings: Settings, *broadcast_ids: uuid.UUID) -> None:
    """What the API does after intake: release each broadcast's first window of chunks."""
    app = create_celery_app(settings)
    for broadcast_id in broadcast_ids:
        broadcast = session.get_one(Broadcast, broadcast_id)
        assert enqueue_broadcast(session, app, broadcast, settings.send_window_chunks)


def test_a_small_broadcast_submitted_during_a_large_one_finishes_within_seconds_and_first(
    settings: Settings, db_session: Session, engine: Engine, simulator: SimulatorControl, workers: WorkerProcesses
) -> None:
    simulator.configure(latency_ms=100)
    large = create_broadcast(db_session, numbers(4_000, "+1555100"), enqueued=False)
    workers.start_worker()
    start_sending(db_session, settings, large.id)
    wait_until(lambda: simulator.summary()["accepted"] >= 300, 60, message="the large broadcast under way")

    small = create_broadcast(db_session, numbers(10, "+1555200"), enqueued=False)
    started = time.monotonic()
    start_sending(db_session, settings, small.id)
    wait_until(lambda: unsent(engine, small.id) == 0, 30, message="the small broadcast")
    took = time.monotonic() - started

    assert took < 8, f"the 10-recipient broadcast took {took:.1f}s"
    assert unsent(engine, large.id) > 1_000, "the large broadcast had finished: it was not overtaken"
    assert state_counts(engine, small.id) == {"accepted": 10}


@pytest.mark.parametrize(("first_priority", "expected_ratio"), [("normal", 1.0), ("high", 2.0)])
def test_two_large_broadcasts_share_the_throughput_by_their_priority(
    settings: Settings,
    db_session: Session,
    engine: Engine,
    simulator: SimulatorControl,
    workers: WorkerProcesses,
    first_priority: str,
    expected_ratio: float,
) -> None:
    simulator.configure(latency_ms=100)
    first_numbers, second_numbers = numbers(1_600, "+1555300"), numbers(1_600, "+1555400")
    # Chunks of 20: the share is counted in chunks, so small ones make the measurement fine-grained.
    first = create_broadcast(db_session, first_numbers, enqueued=False, priority=first_priority, chunk_size=20)
    second = create_broadcast(db_session, second_numbers, enqueued=False, priority="normal", chunk_size=20)
    workers.start_worker()
    start_sending(db_session, settings, first.id, second.id)
    wait_until(lambda: unsent(engine, first.id) == 0, 120, message="the first broadcast")

    first_count, second_count = shares_while_both_sent(
        creation_times(simulator, first_numbers), creation_times(simulator, second_numbers)
    )
    ratio = first_count / second_count
    # Within ±20% of the weights: 1:1 for the same priority, 2:1 for high against normal (4:2).
    assert expected_ratio * 0.8 <= ratio <= expected_ratio * 1.2, (first_count, second_count)


class TestDeadline:
    @pytest.fixture
    def settings(self, base_settings: Settings) -> Settings:
        # About 25 messages a second: 1,000 recipients would take 40 s, the deadline allows 10 (a few of them
        # spent while the worker starts).
        return base_settings.replace(twilio_max_concurrency=5)

    def test_what_cannot_be_sent_by_the_deadline_expires_and_never_reaches_twilio(
        self,
        settings: Settings,
        db_session: Session,
        engine: Engine,
        simulator: SimulatorControl,
        workers: WorkerProcesses,
    ) -> None:
        simulator.configure(latency_ms=200)
        # One slow sender: what Twilio still holds queued at the deadline fails there (30036), never leaves.
        simulator.configure_pool(senders=[{"type": "long_code", "count": 1, "segments_per_second": 10}])
        recipients = numbers(1_000, "+1555500")
        clock_offset = simulator.now() - time.time()
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        broadcast = create_broadcast(db_session, recipients, enqueued=False, deadline=deadline)
        workers.start_worker()
        workers.start_beat()
        start_sending(db_session, settings, broadcast.id)

        wait_until(lambda: unsent(engine, broadcast.id) == 0, 60, message="every message sent or expired")
        counts = state_counts(engine, broadcast.id)
        assert counts.get("expired", 0) > 500 and counts.get("accepted", 0) > 20, counts
        assert sum(counts.values()) == len(recipients)

        deadline_on_simulator = deadline.timestamp() + clock_offset
        summary = simulator.summary()
        assert summary["accepted"] == counts["accepted"] and summary["duplicate_count"] == 0
        sent: list[dict[str, Any]] = []
        for number in recipients:
            sent.extend(simulator.received(number))
        assert len(sent) == counts["accepted"]
        for message in sent:
            assert message["created_at"] <= deadline_on_simulator + 0.5
            validity = int(message["parameters"]["ValidityPeriod"])
            # Never valid past the deadline (whole seconds, rounded down when the request was built).
            assert message["created_at"] + validity <= deadline_on_simulator + 1.5
        time.sleep(max(0.0, deadline_on_simulator + 2 - simulator.now()))
        assert simulator.transmissions(since=deadline_on_simulator + 1)["messages"] == 0
        with engine.connect() as connection:
            status = connection.execute(
                text("SELECT status FROM broadcasts WHERE id = :id"), {"id": broadcast.id}
            ).scalar_one()
        assert status in ("submitted", "completed")


def test_a_worker_killed_mid_window_leaves_nobody_unsent_or_sent_twice(
    settings: Settings, db_session: Session, engine: Engine, simulator: SimulatorControl, workers: WorkerProcesses
) -> None:
    simulator.configure(latency_ms=300)
    recipients = numbers(1_500, "+1555600")
    broadcast = create_broadcast(db_session, recipients, enqueued=False)
    doomed = workers.start_worker("doomed-worker")
    start_sending(db_session, settings, broadcast.id)
    wait_until(lambda: simulator.summary()["accepted"] >= 300, 60, message="the broadcast under way")
    doomed.kill()  # SIGKILL: its chunk tasks unacknowledged, their claims open, no top-up for them
    assert unsent(engine, broadcast.id) > 0

    workers.start_worker("replacement-worker")
    workers.start_beat()  # the sweeper reconciles the claims, re-enqueues idle released chunks, tops up the window
    wait_until(lambda: unsent(engine, broadcast.id) == 0, 180, message="every recipient sent")

    summary = simulator.summary()
    assert summary["duplicate_count"] == 0, summary["duplicate_recipients"]
    assert summary["accepted"] == summary["distinct_recipients"] == len(recipients)
    assert state_counts(engine, broadcast.id) == {"accepted": len(recipients)}
