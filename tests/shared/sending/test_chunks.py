"""Claiming, sending and recording one chunk, called directly: real PostgreSQL, Redis and simulator."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.orm import Session

from shared.platform.db import create_session_factory, session_scope
from shared.platform.models import BroadcastStatus, MessageState
from shared.platform.settings import Settings
from shared.sending.chunks import SendingResources, send_chunk
from shared.sending.claims import ClaimedMessage, claim_pending_messages, record_send_outcomes
from shared.twilio.gateway import Accepted
from tests.factories import broadcast_of, create_broadcast, messages_of, numbers, states_of


@pytest.fixture
def resources(settings: Settings, engine: Any, redis_client: Any) -> Iterator[SendingResources]:
    resources = SendingResources.create(settings)
    yield resources
    resources.close()


def test_concurrent_claims_of_one_chunk_never_share_a_row(db_session: Session, engine: Any) -> None:
    broadcast = create_broadcast(db_session, numbers(100))
    factory = create_session_factory(engine)
    start = threading.Barrier(8)
    claims: list[list[ClaimedMessage]] = []

    def claim() -> None:
        start.wait()
        with session_scope(factory) as session:
            claims.append(claim_pending_messages(session, broadcast.id, 0, lease_seconds=60))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    claimed_ids = [message.id for claimed in claims for message in claimed]
    assert len(claimed_ids) == 100 == len(set(claimed_ids))
    assert states_of(db_session, broadcast.id) == {MessageState.SENDING: 100}
    assert {message.attempts for message in messages_of(db_session, broadcast.id)} == {1}


def test_a_claim_waiting_on_an_uncommitted_one_gets_nothing(db_session: Session, engine: Any) -> None:
    broadcast = create_broadcast(db_session, numbers(10))
    factory = create_session_factory(engine)
    first = factory()
    try:
        held = claim_pending_messages(first, broadcast.id, 0, lease_seconds=60)  # not committed yet
        second: list[list[ClaimedMessage]] = []

        def claim_again() -> None:
            with session_scope(factory) as session:
                second.append(claim_pending_messages(session, broadcast.id, 0, lease_seconds=60))

        waiter = threading.Thread(target=claim_again)
        waiter.start()
        waiter.join(timeout=0.5)
        assert waiter.is_alive()  # blocked on the first claim's row locks
        first.commit()
        waiter.join(timeout=10)
    finally:
        first.close()

    assert len(held) == 10
    assert second == [[]]


def test_the_first_claim_marks_the_broadcast_sending(db_session: Session) -> None:
    broadcast = create_broadcast(db_session, numbers(150))

    claim_pending_messages(db_session, broadcast.id, 1, lease_seconds=60)
    db_session.commit()

    sending = broadcast_of(db_session, broadcast.id)
    assert sending.status == BroadcastStatus.SENDING
    assert sending.first_send_at is not None
    assert states_of(db_session, broadcast.id) == {MessageState.SENDING: 50, MessageState.PENDING: 100}


def test_send_chunk_sends_each_recipient_once_and_records_every_outcome(
    db_session: Session, resources: SendingResources, simulator: Any
) -> None:
    recipients = [*numbers(148), "+15015550001", "+15015550004"]  # 21211, 21610 in chunk 1
    broadcast = create_broadcast(db_session, recipients)

    results = [send_chunk(resources, broadcast.id, chunk) for chunk in (0, 1)]
    again = send_chunk(resources, broadcast.id, 1)  # a redelivered task

    assert [(r.claimed, r.accepted, r.failed) for r in results] == [(100, 100, 0), (50, 48, 2)]
    assert again.claimed == 0
    messages = {message.to_number: message for message in messages_of(db_session, broadcast.id)}
    accepted = [message for message in messages.values() if message.state == MessageState.ACCEPTED]
    assert len(accepted) == 148
    assert len({message.twilio_sid for message in accepted}) == 148
    assert all(message.sent_at and message.twilio_status == "accepted" for message in accepted)
    assert (messages["+15015550001"].state, messages["+15015550001"].error_code) == ("failed", 21211)
    assert (messages["+15015550004"].state, messages["+15015550004"].error_code) == ("failed", 21610)
    assert all(message.attempts == 1 for message in messages.values())  # permanent errors are not retried
    finished = broadcast_of(db_session, broadcast.id)
    assert finished.status == BroadcastStatus.SUBMITTED
    assert finished.submitted_at is not None and finished.last_send_at is not None
    summary = simulator.summary()
    assert summary["requests"] == 150
    assert summary["accepted"] == 148 and summary["duplicate_count"] == 0


def test_the_cap_on_requests_in_flight_holds_while_sending(
    db_session: Session, settings: Settings, simulator: Any, redis_client: Any, engine: Any
) -> None:
    simulator.configure(latency_ms=50)
    resources = SendingResources.create(settings.replace(twilio_max_concurrency=7))
    try:
        broadcast = create_broadcast(db_session, numbers(100))
        result = send_chunk(resources, broadcast.id, 0)
    finally:
        resources.close()

    summary = simulator.summary()
    assert result.accepted == 100
    assert summary["max_in_flight"] == 7
    assert summary.get("rejected_429", 0) == 0


def test_when_twilio_keeps_answering_429_messages_go_back_to_pending(
    db_session: Session, settings: Settings, simulator: Any, redis_client: Any, engine: Any
) -> None:
    simulator.configure(error_rate_429=1.0)
    resources = SendingResources.create(settings.replace(send_retry_max_attempts=3, send_retry_max_seconds=2))
    try:
        broadcast = create_broadcast(db_session, numbers(20))
        result = send_chunk(resources, broadcast.id, 0)
    finally:
        resources.close()

    assert result.released == 20
    messages = messages_of(db_session, broadcast.id)
    assert {message.state for message in messages} == {MessageState.PENDING}
    assert all(message.claimed_until is None and message.twilio_sid is None for message in messages)
    assert simulator.summary()["requests"] == 60  # three tries each, then released for a later task
    assert broadcast_of(db_session, broadcast.id).status == BroadcastStatus.SENDING


def test_an_answer_that_never_came_leaves_the_message_unknown_and_unsent_again(
    db_session: Session, resources: SendingResources, simulator: Any
) -> None:
    simulator.configure(error_rate_500=1.0)
    broadcast = create_broadcast(db_session, numbers(10))

    result = send_chunk(resources, broadcast.id, 0)

    assert result.unknown == 10
    messages = messages_of(db_session, broadcast.id)
    assert {message.state for message in messages} == {MessageState.UNKNOWN}
    assert all("500" in (message.error_message or "") for message in messages)
    assert simulator.summary()["requests"] == 10  # never retried blindly
    assert broadcast_of(db_session, broadcast.id).status == BroadcastStatus.SENDING  # not submitted yet


def test_an_outcome_is_not_recorded_over_a_newer_claim(db_session: Session) -> None:
    broadcast = create_broadcast(db_session, numbers(1))
    (stale,) = claim_pending_messages(db_session, broadcast.id, 0, lease_seconds=60)
    db_session.commit()
    # Meanwhile the sweeper released it and another task claimed it again (attempt 2).
    record_send_outcomes(db_session, broadcast.id, [])
    messages_of(db_session, broadcast.id)[0].state = MessageState.PENDING
    db_session.commit()
    claim_pending_messages(db_session, broadcast.id, 0, lease_seconds=60)
    db_session.commit()

    written = record_send_outcomes(db_session, broadcast.id, [(stale, Accepted("SM" + "0" * 32, "accepted"))])
    db_session.commit()

    (message,) = messages_of(db_session, broadcast.id)
    assert written == 0
    assert (message.state, message.attempts, message.twilio_sid) == (MessageState.SENDING, 2, None)


def test_an_unknown_broadcast_sends_nothing(resources: SendingResources, simulator: Any, db_session: Session) -> None:
    assert send_chunk(resources, uuid.uuid4(), 0).claimed == 0
    assert simulator.summary()["requests"] == 0
