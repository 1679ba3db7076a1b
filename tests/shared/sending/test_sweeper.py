"""The sweeper's recoveries, called directly: real PostgreSQL, Redis (the Celery queue) and simulator."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
import requests
from celery import Celery
from sqlalchemy import func, text
from sqlalchemy.orm import Session

from shared.platform.models import BroadcastStatus, MessageState
from shared.platform.settings import Settings
from shared.platform.task_queue import SEND_QUEUE, create_celery_app
from shared.sending.chunks import SendingResources, send_chunk
from shared.sending.sweeper import SWEEP_LOCK_KEY, sweep
from shared.twilio.gateway import LOOKUP_PAGE_SIZE, Accepted
from tests.factories import broadcast_of, create_broadcast, messages_of, numbers, set_messages


@pytest.fixture
def resources(settings: Settings, engine: Any, redis_client: redis.Redis) -> Iterator[SendingResources]:
    resources = SendingResources.create(settings)
    yield resources
    resources.close()


@pytest.fixture
def celery_app(settings: Settings) -> Celery:
    return create_celery_app(settings)


def queued_chunks(redis_client: redis.Redis) -> int:
    return int(redis_client.llen(SEND_QUEUE))


def test_a_broadcast_whose_enqueue_never_happened_is_enqueued(
    db_session: Session, resources: SendingResources, celery_app: Celery, redis_client: redis.Redis
) -> None:
    forgotten = create_broadcast(db_session, numbers(250), enqueued=False, created_ago=timedelta(seconds=30))
    just_created = create_broadcast(db_session, numbers(10), enqueued=False)  # the API may be enqueueing it

    report = sweep(resources, celery_app)

    assert report.broadcasts_enqueued == 1
    assert queued_chunks(redis_client) == 3
    assert broadcast_of(db_session, forgotten.id).enqueued_at is not None
    assert broadcast_of(db_session, just_created.id).enqueued_at is None


def test_idle_pending_chunks_are_enqueued_again_only_when_the_queue_is_empty(
    db_session: Session, resources: SendingResources, celery_app: Celery, redis_client: redis.Redis
) -> None:
    create_broadcast(db_session, numbers(150), created_ago=timedelta(minutes=5))  # tasks lost with a worker
    redis_client.rpush(SEND_QUEUE, "a task still waiting")

    assert sweep(resources, celery_app).chunks_requeued == 0

    redis_client.delete(SEND_QUEUE)
    report = sweep(resources, celery_app)

    assert report.chunks_requeued == 2
    assert queued_chunks(redis_client) == 2


def test_an_expired_claim_that_twilio_has_becomes_accepted_with_its_sid(
    db_session: Session, resources: SendingResources, celery_app: Celery, simulator: Any
) -> None:
    broadcast = create_broadcast(db_session, ["+15557770001"], body="reconcile me")
    # The worker sent it, then died before recording: Twilio has it, our row still says `sending`.
    sent = resources.run(resources.gateway.send("+15557770001", "reconcile me"))
    assert isinstance(sent, Accepted)
    set_messages(
        db_session,
        broadcast.id,
        state=MessageState.SENDING,
        attempts=1,
        claimed_until=func.now() - timedelta(seconds=30),
    )

    report = sweep(resources, celery_app)

    (message,) = messages_of(db_session, broadcast.id)
    assert (message.state, message.twilio_sid) == (MessageState.ACCEPTED, sent.sid)
    assert report.expired_claims == 1 and report.reconciled_accepted == 1
    assert broadcast_of(db_session, broadcast.id).status == BroadcastStatus.SUBMITTED
    assert simulator.summary()["accepted"] == 1  # found, not sent again


def test_an_expired_claim_that_twilio_lacks_goes_back_to_pending_and_is_enqueued(
    db_session: Session,
    resources: SendingResources,
    celery_app: Celery,
    simulator: Any,
    redis_client: redis.Redis,
) -> None:
    broadcast = create_broadcast(db_session, numbers(3))
    set_messages(
        db_session,
        broadcast.id,
        state=MessageState.SENDING,
        attempts=1,
        claimed_until=func.now() - timedelta(seconds=30),
    )

    report = sweep(resources, celery_app)

    assert {message.state for message in messages_of(db_session, broadcast.id)} == {MessageState.PENDING}
    assert report.reconciled_pending == 3
    assert queued_chunks(redis_client) == 1  # its chunk, to be claimed and sent again
    assert simulator.summary()["accepted"] == 0


def test_a_claim_still_within_its_lease_is_left_alone(
    db_session: Session, resources: SendingResources, celery_app: Celery, simulator: Any
) -> None:
    broadcast = create_broadcast(db_session, numbers(2))
    set_messages(
        db_session,
        broadcast.id,
        state=MessageState.SENDING,
        attempts=1,
        claimed_until=func.now() + timedelta(minutes=1),
    )

    sweep(resources, celery_app)

    assert {message.state for message in messages_of(db_session, broadcast.id)} == {MessageState.SENDING}
    assert simulator.summary()["requests"] == 0


def test_unknown_sends_that_twilio_stored_are_reconciled_and_the_broadcast_submitted(
    db_session: Session, resources: SendingResources, celery_app: Celery, simulator: Any
) -> None:
    broadcast = create_broadcast(db_session, ["+15015550050", "+15557770002"])  # the first answers 500
    assert send_chunk(resources, broadcast.id, 0).unknown == 1
    set_messages(db_session, broadcast.id, claimed_until=func.now() - timedelta(seconds=30))

    sweep(resources, celery_app)

    messages = {message.to_number: message for message in messages_of(db_session, broadcast.id)}
    assert messages["+15015550050"].state == MessageState.ACCEPTED
    assert messages["+15015550050"].twilio_sid is not None
    assert broadcast_of(db_session, broadcast.id).status == BroadcastStatus.SUBMITTED
    assert simulator.summary()["requests"] == 2  # no resend


def test_a_sweep_already_running_elsewhere_is_not_repeated(
    db_session: Session, resources: SendingResources, celery_app: Celery, redis_client: redis.Redis
) -> None:
    create_broadcast(db_session, numbers(10), enqueued=False, created_ago=timedelta(minutes=1))
    redis_client.set(SWEEP_LOCK_KEY, "another sweep", ex=60)

    report = sweep(resources, celery_app)

    assert report.skipped and queued_chunks(redis_client) == 0


# --- reconciliation sees what Twilio holds: queued messages, every page, never an earlier attempt's SID


def slow_sender(simulator: Any, segments_per_second: float) -> None:
    simulator.configure_pool(senders=[{"type": "long_code", "count": 1, "segments_per_second": segments_per_second}])


def expire_claim(db_session: Session, broadcast_id: Any, attempts: int = 1) -> None:
    """The worker sent, then died before recording: the row is still `sending` and its lease ran out."""
    set_messages(
        db_session,
        broadcast_id,
        state=MessageState.SENDING,
        attempts=attempts,
        claimed_until=func.now() - timedelta(seconds=30),
    )


def test_an_expired_claim_whose_message_twilio_holds_queued_is_found_and_not_sent_again(
    db_session: Session, resources: SendingResources, celery_app: Celery, simulator: Any
) -> None:
    slow_sender(simulator, 0.05)  # 20 s per message
    broadcast = create_broadcast(db_session, ["+15557770011"], body="wait in line")
    assert isinstance(resources.run(resources.gateway.send("+15557770010", "ahead in the queue")), Accepted)
    sent = resources.run(resources.gateway.send("+15557770011", "wait in line"))
    assert isinstance(sent, Accepted)
    expire_claim(db_session, broadcast.id)
    assert simulator.received("+15557770011")[0]["sent_at"] is None  # queued at Twilio: no date_sent

    report = sweep(resources, celery_app)

    (message,) = messages_of(db_session, broadcast.id)
    assert (message.state, message.twilio_sid) == (MessageState.ACCEPTED, sent.sid)
    assert report.reconciled_accepted == 1 and report.reconciled_pending == 0
    assert simulator.received("+15557770011")[0]["sent_at"] is None  # found while still queued
    assert simulator.summary()["accepted"] == 2  # nothing sent again


def test_an_earlier_attempts_sid_never_satisfies_the_current_attempt(
    db_session: Session, resources: SendingResources, celery_app: Celery, simulator: Any, redis_client: redis.Redis
) -> None:
    broadcast = create_broadcast(db_session, ["+15557770012"], body="second try")
    first = resources.run(resources.gateway.send("+15557770012", "second try"))
    assert isinstance(first, Accepted)
    (message,) = messages_of(db_session, broadcast.id)
    # Attempt 1 was undelivered and archived; attempt 2 was claimed and its worker died before sending.
    db_session.execute(
        text("INSERT INTO message_attempts (message_id, attempt_number, twilio_sid) VALUES (:id, 1, :sid)"),
        {"id": message.id, "sid": first.sid},
    )
    db_session.commit()
    expire_claim(db_session, broadcast.id, attempts=2)

    report = sweep(resources, celery_app)

    (message,) = messages_of(db_session, broadcast.id)
    assert (message.state, message.twilio_sid) == (MessageState.PENDING, None)  # attempt 2 is sent, not adopted
    assert report.reconciled_pending == 1
    assert queued_chunks(redis_client) == 1


def test_a_lost_claim_is_found_beyond_the_first_page_of_the_numbers_messages(
    db_session: Session, resources: SendingResources, celery_app: Celery, simulator: Any
) -> None:
    simulator.configure(latency_ms=0, callbacks_enabled=False)
    broadcast = create_broadcast(db_session, ["+15557770013"], body="find me")
    sent = resources.run(resources.gateway.send("+15557770013", "find me"))
    assert isinstance(sent, Accepted)

    async def newer_messages() -> None:  # 1,000 newer messages to the same number fill the first page
        gate = asyncio.Semaphore(50)

        async def one(index: int) -> None:
            async with gate:
                assert isinstance(await resources.gateway.send("+15557770013", f"noise {index}"), Accepted)

        await asyncio.gather(*(one(index) for index in range(LOOKUP_PAGE_SIZE)))

    resources.run(newer_messages())
    expire_claim(db_session, broadcast.id)

    sweep(resources, celery_app)

    (message,) = messages_of(db_session, broadcast.id)
    assert (message.state, message.twilio_sid) == (MessageState.ACCEPTED, sent.sid)
    assert simulator.summary()["accepted"] == LOOKUP_PAGE_SIZE + 1


def test_a_message_twilio_stored_smart_encoded_is_recognised(
    db_session: Session, resources: SendingResources, celery_app: Celery, simulator: Any
) -> None:
    body = "Don\u2019t forget \u2014 vote today\u2026"
    broadcast = create_broadcast(db_session, ["+15557770014"], body=body)
    # Smart Encoding switched on for the Messaging Service (not by us): Twilio keeps the rewritten text.
    sent = resources.run(resources.gateway.send("+15557770014", body, smart_encoded=True))
    assert isinstance(sent, Accepted)
    assert simulator.received("+15557770014")[0]["stored_body"] == "Don't forget - vote today..."
    expire_claim(db_session, broadcast.id)

    sweep(resources, celery_app)

    (message,) = messages_of(db_session, broadcast.id)
    assert (message.state, message.twilio_sid) == (MessageState.ACCEPTED, sent.sid)
    assert simulator.summary()["accepted"] == 1


def test_a_same_text_message_created_before_the_claim_is_not_taken_for_it(
    db_session: Session, resources: SendingResources, celery_app: Celery, simulator: Any, settings: Settings
) -> None:
    # Ten minutes ago (Twilio's clock), something outside bulksms sent the same text to the same number.
    requests.post(f"{settings.twilio_api_base_url}/_simulator/clock", json={"offset_seconds": -600}, timeout=10)
    earlier = resources.run(resources.gateway.send("+15557770015", "same words"))
    assert isinstance(earlier, Accepted)
    requests.post(f"{settings.twilio_api_base_url}/_simulator/clock", json={"offset_seconds": 0}, timeout=10)
    broadcast = create_broadcast(db_session, ["+15557770015"], body="same words")
    expire_claim(db_session, broadcast.id)  # our claim, 30 s ago, never reached Twilio

    report = sweep(resources, celery_app)

    (message,) = messages_of(db_session, broadcast.id)
    assert (message.state, message.twilio_sid) == (MessageState.PENDING, None)
    assert report.reconciled_pending == 1
