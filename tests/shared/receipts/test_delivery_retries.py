"""Releasing due delivery retries, called directly: real PostgreSQL, Redis (the Celery queue) and simulator."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
import requests
from celery import Celery
from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.platform.db import create_session_factory, session_scope
from shared.platform.models import MessageState
from shared.platform.settings import Settings
from shared.platform.task_queue import SEND_QUEUE, create_celery_app
from shared.receipts.delivery_retries import release_and_enqueue_due_retries, release_due_retries
from shared.receipts.events import apply_status_events
from shared.sending.chunks import SendingResources, send_chunk
from tests.conftest import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN
from tests.factories import create_broadcast, database_now, messages_of, numbers
from tests.status_callbacks import queued

FAILS_ONCE = "+15005550023"  # simulator: the first message to the number is undelivered (30003), later delivered


@pytest.fixture
def resources(settings: Settings, engine: Any, redis_client: redis.Redis) -> Iterator[SendingResources]:
    resources = SendingResources.create(settings)
    yield resources
    resources.close()


@pytest.fixture
def celery_app(settings: Settings) -> Celery:
    return create_celery_app(settings)


def simulator_sids(simulator_url: str, to: str) -> list[str]:
    response = requests.get(
        f"{simulator_url}/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Messages.json",
        params={"To": to},
        auth=(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN),
        timeout=10,
    )
    response.raise_for_status()
    return [message["sid"] for message in response.json()["messages"]]


def attempts_archived(session: Session, message_id: int) -> list[Any]:
    return list(
        session.execute(
            text(
                "SELECT attempt_number, twilio_sid, twilio_status, error_code, sent_at, final_at "
                "FROM message_attempts WHERE message_id = :id ORDER BY attempt_number"
            ),
            {"id": message_id},
        )
    )


def schedule_retries(session: Session, broadcast_id: uuid.UUID, due_in: timedelta = timedelta(seconds=-1)) -> None:
    """Put every message in `retry_scheduled` after an undelivered (30003) first attempt, due `due_in` from now."""
    now = database_now(session)
    for message in messages_of(session, broadcast_id):
        session.execute(
            text(
                "UPDATE messages SET state = :state, attempts = 1, twilio_sid = :sid, twilio_status = 'undelivered', "
                "error_code = 30003, error_message = 'Twilio reported undelivered', sent_at = :sent, "
                "last_receipt_at = :now, retry_due_at = :due WHERE id = :id"
            ),
            {
                "state": MessageState.RETRY_SCHEDULED,
                "sid": "SM" + uuid.uuid4().hex,
                "sent": now - timedelta(minutes=1),
                "now": now,
                "due": now + due_in,
                "id": message.id,
            },
        )
    session.commit()


def test_a_due_retry_is_sent_again_as_a_new_twilio_message_and_the_late_callback_never_reopens_it(
    db_session: Session, resources: SendingResources, settings: Settings, simulator: Any, simulator_url: str
) -> None:
    recipient = "+15035550023"  # FAILS_ONCE with another area code: a number no other test sends to
    broadcast = create_broadcast(db_session, [recipient])
    send_chunk(resources, broadcast.id, 0)
    [first] = messages_of(db_session, broadcast.id)
    assert first.state == MessageState.ACCEPTED and first.attempts == 1
    first_sid = first.twilio_sid
    assert first_sid is not None
    # The carrier's receipt for attempt 1 arrives (as the webhook would queue it): 30003 schedules a retry.
    apply_status_events(
        db_session, [queued(first_sid, "undelivered", message_id=first.id, attempt=1, error_code=30003)], settings
    )
    db_session.commit()
    [scheduled] = messages_of(db_session, broadcast.id)
    assert scheduled.state == MessageState.RETRY_SCHEDULED and scheduled.retry_due_at is not None

    released = release_due_retries(db_session, now=scheduled.retry_due_at + timedelta(seconds=1))
    db_session.commit()
    assert [(m.id, m.archived_attempt, m.chunk_number) for m in released] == [(first.id, 1, 0)]
    [archived] = attempts_archived(db_session, first.id)
    assert (archived.attempt_number, archived.twilio_sid, archived.twilio_status, archived.error_code) == (
        1,
        first_sid,
        "undelivered",
        30003,
    )
    assert archived.sent_at is not None and archived.final_at is not None
    [reset] = messages_of(db_session, broadcast.id)
    assert (reset.state, reset.twilio_sid, reset.error_code, reset.retry_due_at, reset.final_at) == (
        MessageState.PENDING,
        None,
        None,
        None,
        None,
    )

    send_chunk(resources, broadcast.id, 0)
    [second] = messages_of(db_session, broadcast.id)
    assert second.state == MessageState.ACCEPTED and second.attempts == 2
    assert second.twilio_sid not in (None, first_sid)
    # Twilio's end: two messages to that number, with two different SIDs.
    assert sorted(simulator_sids(simulator_url, recipient)) == sorted([first_sid, second.twilio_sid])

    # A late (duplicate) callback of attempt 1 lands on its archive row, never on the message.
    apply_status_events(
        db_session, [queued(first_sid, "undelivered", message_id=first.id, attempt=1, error_code=30003)], settings
    )
    apply_status_events(db_session, [queued(first_sid, "delivered", message_id=first.id, attempt=1)], settings)
    db_session.commit()
    [after] = messages_of(db_session, broadcast.id)
    assert (after.state, after.twilio_sid, after.attempts) == (MessageState.ACCEPTED, second.twilio_sid, 2)
    assert len(attempts_archived(db_session, first.id)) == 1


def test_a_retry_is_not_released_before_it_is_due(
    db_session: Session, celery_app: Celery, redis_client: redis.Redis, engine: Any
) -> None:
    broadcast = create_broadcast(db_session, numbers(3))
    schedule_retries(db_session, broadcast.id, due_in=timedelta(minutes=4))

    report = release_and_enqueue_due_retries(create_session_factory(engine), celery_app)

    assert report.released == 0
    assert redis_client.llen(SEND_QUEUE) == 0
    assert {m.state for m in messages_of(db_session, broadcast.id)} == {MessageState.RETRY_SCHEDULED}
    assert attempts_archived(db_session, messages_of(db_session, broadcast.id)[0].id) == []


def test_released_retries_enqueue_each_chunk_once(
    db_session: Session, celery_app: Celery, redis_client: redis.Redis, engine: Any
) -> None:
    broadcast = create_broadcast(db_session, numbers(250))
    schedule_retries(db_session, broadcast.id)

    report = release_and_enqueue_due_retries(create_session_factory(engine), celery_app)

    assert (report.released, report.chunks_enqueued) == (250, 3)
    assert redis_client.llen(SEND_QUEUE) == 3
    assert {m.state for m in messages_of(db_session, broadcast.id)} == {MessageState.PENDING}
    archived = db_session.execute(text("SELECT count(*), min(attempt_number) FROM message_attempts")).one()
    assert tuple(archived) == (250, 1)


def test_a_retry_due_after_its_broadcast_was_canceled_is_canceled_not_sent(
    db_session: Session, celery_app: Celery, redis_client: redis.Redis, engine: Any
) -> None:
    # A late 30003 callback scheduled these retries after the broadcast had been canceled.
    broadcast = create_broadcast(db_session, numbers(4))
    schedule_retries(db_session, broadcast.id)
    db_session.execute(text("UPDATE broadcasts SET status = 'canceled' WHERE id = :id"), {"id": broadcast.id})
    db_session.commit()

    report = release_and_enqueue_due_retries(create_session_factory(engine), celery_app)

    assert report.released == 0
    assert redis_client.llen(SEND_QUEUE) == 0
    db_session.expire_all()
    assert {m.state for m in messages_of(db_session, broadcast.id)} == {MessageState.CANCELED}


def test_a_release_holding_the_rows_makes_a_concurrent_one_skip_them(db_session: Session, engine: Any) -> None:
    broadcast = create_broadcast(db_session, numbers(5))
    schedule_retries(db_session, broadcast.id)
    factory = create_session_factory(engine)

    with session_scope(factory) as first, session_scope(factory) as second:
        taken = release_due_retries(first)
        skipped = release_due_retries(second)  # does not wait: SKIP LOCKED
        first.commit()
        after_commit = release_due_retries(second)  # the rows are pending now: state guard

    assert (len(taken), skipped, after_commit) == (5, [], [])
    assert db_session.execute(text("SELECT count(*) FROM message_attempts")).scalar_one() == 5


def test_two_concurrent_releases_produce_one_new_attempt_per_retry(
    db_session: Session, resources: SendingResources, celery_app: Celery, engine: Any, simulator: Any
) -> None:
    broadcast = create_broadcast(db_session, numbers(200, prefix="+1555123"))
    schedule_retries(db_session, broadcast.id)
    factory = create_session_factory(engine)
    start = threading.Barrier(2)
    released: list[int] = []

    def release() -> None:
        start.wait()
        released.append(release_and_enqueue_due_retries(factory, celery_app, batch_size=20).released)

    threads = [threading.Thread(target=release) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for chunk_number in range(2):
        send_chunk(resources, broadcast.id, chunk_number)
        send_chunk(resources, broadcast.id, chunk_number)  # a duplicated chunk task claims nothing

    assert sum(released) == 200
    assert db_session.execute(text("SELECT count(*) FROM message_attempts")).scalar_one() == 200
    assert {(m.state, m.attempts) for m in messages_of(db_session, broadcast.id)} == {(MessageState.ACCEPTED, 2)}
    summary = simulator.summary()
    assert (summary["accepted"], summary["duplicate_count"]) == (200, 0)


def test_a_21610_refusal_at_send_time_opts_the_number_out(
    db_session: Session, resources: SendingResources, simulator: Any
) -> None:
    stopped, ordinary = "+15015550004", "+15551230001"
    broadcast = create_broadcast(db_session, [stopped, ordinary])

    send_chunk(resources, broadcast.id, 0)

    states = {m.to_number: (m.state, m.error_code) for m in messages_of(db_session, broadcast.id)}
    assert states == {stopped: (MessageState.FAILED, 21610), ordinary: (MessageState.ACCEPTED, None)}
    opted_out = db_session.execute(text("SELECT phone_number, source FROM opted_out_numbers")).all()
    assert [tuple(row) for row in opted_out] == [(stopped, "send_21610")]

    # Refused again in a later broadcast: still one row, the first reason kept.
    again = create_broadcast(db_session, [stopped])
    send_chunk(resources, again.id, 0)
    assert db_session.execute(text("SELECT count(*) FROM opted_out_numbers")).scalar_one() == 1
