"""The sweeper's recoveries, called directly: real PostgreSQL, Redis (the Celery queue) and simulator."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from celery import Celery
from sqlalchemy import func
from sqlalchemy.orm import Session

from shared.platform.models import BroadcastStatus, MessageState
from shared.platform.settings import Settings
from shared.platform.task_queue import SEND_QUEUE, create_celery_app
from shared.sending.chunks import SendingResources, send_chunk
from shared.sending.sweeper import SWEEP_LOCK_KEY, sweep
from shared.twilio.gateway import Accepted
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
    broadcast = create_broadcast(db_session, ["+150055500501234", "+15557770002"])  # the first answers 500
    assert send_chunk(resources, broadcast.id, 0).unknown == 1
    set_messages(db_session, broadcast.id, claimed_until=func.now() - timedelta(seconds=30))

    sweep(resources, celery_app)

    messages = {message.to_number: message for message in messages_of(db_session, broadcast.id)}
    assert messages["+150055500501234"].state == MessageState.ACCEPTED
    assert messages["+150055500501234"].twilio_sid is not None
    assert broadcast_of(db_session, broadcast.id).status == BroadcastStatus.SUBMITTED
    assert simulator.summary()["requests"] == 2  # no resend


def test_a_sweep_already_running_elsewhere_is_not_repeated(
    db_session: Session, resources: SendingResources, celery_app: Celery, redis_client: redis.Redis
) -> None:
    create_broadcast(db_session, numbers(10), enqueued=False, created_ago=timedelta(minutes=1))
    redis_client.set(SWEEP_LOCK_KEY, "another sweep", ex=60)

    report = sweep(resources, celery_app)

    assert report.skipped and queued_chunks(redis_client) == 0
