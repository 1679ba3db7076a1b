"""A broadcast's deadline in the send path: no claim after it, a request with no time left is never made, and the
sweeper expires every unsent message of a broadcast past it (real PostgreSQL, Redis and simulator)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from celery import Celery
from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.platform.settings import Settings
from shared.platform.task_queue import create_celery_app
from shared.sending.chunks import SendingResources, send_chunk
from shared.sending.sweeper import sweep
from tests.factories import broadcast_of, create_broadcast, database_now, numbers, states_of


@pytest.fixture
def resources(settings: Settings, engine: Any, redis_client: Any) -> Iterator[SendingResources]:
    resources = SendingResources.create(settings)
    yield resources
    resources.close()


@pytest.fixture
def celery_app(settings: Settings) -> Celery:
    return create_celery_app(settings)


def move_deadline(session: Session, broadcast_id: object, seconds_from_now: float) -> None:
    session.execute(
        text("UPDATE broadcasts SET deadline = now() + make_interval(secs => :seconds) WHERE id = :id"),
        {"seconds": seconds_from_now, "id": broadcast_id},
    )
    session.commit()


def test_every_request_carries_the_time_left_as_its_validity_period(
    db_session: Session, resources: SendingResources, simulator: Any
) -> None:
    broadcast = create_broadcast(db_session, numbers(5), deadline=database_now(db_session) + timedelta(seconds=600))
    assert send_chunk(resources, broadcast.id, 0).accepted == 5
    for number in numbers(5):
        [message] = simulator.received(number)
        assert 590 <= int(message["parameters"]["ValidityPeriod"]) <= 600


def test_a_chunk_claimed_after_the_deadline_sends_nothing_and_expires_the_broadcasts_unsent_messages(
    db_session: Session, resources: SendingResources, simulator: Any
) -> None:
    broadcast = create_broadcast(db_session, numbers(250))  # three chunks
    move_deadline(db_session, broadcast.id, -1)

    result = send_chunk(resources, broadcast.id, 0)

    assert result.claimed == 0 and simulator.summary()["requests"] == 0
    assert states_of(db_session, broadcast.id) == {"expired": 250}
    assert broadcast_of(db_session, broadcast.id).status == "submitted"


class TestTimeRunningOutMidChunk:
    @pytest.fixture
    def settings(self, base_settings: Settings) -> Settings:
        return base_settings.replace(twilio_max_concurrency=10)

    def test_a_message_whose_time_ran_out_after_its_claim_is_never_sent_and_expires(
        self, db_session: Session, resources: SendingResources, simulator: Any
    ) -> None:
        simulator.configure(latency_ms=1500)
        broadcast = create_broadcast(db_session, numbers(20))
        # The first 10 requests start with 2 s left and take 1.5 s; the next 10 would start with less than
        # Twilio's smallest ValidityPeriod left: none of them is made.
        move_deadline(db_session, broadcast.id, 2.2)

        result = send_chunk(resources, broadcast.id, 0)

        assert (result.claimed, result.accepted, result.released) == (20, 10, 10)
        assert simulator.summary()["requests"] == 10
        assert states_of(db_session, broadcast.id) == {"accepted": 10, "expired": 10}


def test_the_sweeper_expires_pending_deferred_and_retry_scheduled_messages_past_the_deadline(
    db_session: Session, resources: SendingResources, celery_app: Celery
) -> None:
    broadcast = create_broadcast(db_session, numbers(300), chunks_released=1)
    db_session.execute(
        text(
            "UPDATE messages SET state = CASE WHEN chunk_number = 0 THEN 'accepted' ELSE state END, "
            "not_before = CASE WHEN chunk_number = 1 THEN now() + interval '8 hours' END "
            "WHERE broadcast_id = :id"
        ),
        {"id": broadcast.id},
    )
    db_session.execute(
        text(
            "UPDATE messages SET state = 'retry_scheduled', retry_due_at = now() + interval '1 hour' "
            "WHERE id IN (SELECT id FROM messages WHERE broadcast_id = :id AND chunk_number = 0 LIMIT 10)"
        ),
        {"id": broadcast.id},
    )
    db_session.commit()
    assert sweep(resources, celery_app).messages_expired == 0  # before the deadline: nothing

    move_deadline(db_session, broadcast.id, -1)
    report = sweep(resources, celery_app)

    assert report.messages_expired == 210
    assert states_of(db_session, broadcast.id) == {"accepted": 90, "expired": 210}
    assert broadcast_of(db_session, broadcast.id).status == "submitted"
