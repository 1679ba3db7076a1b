"""Completing broadcasts and the signed completion callback, called directly on real PostgreSQL and HTTP."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.broadcasts import intake
from shared.broadcasts.intake import BroadcastRequest
from shared.platform.api_keys import create_api_key
from shared.platform.db import create_session_factory
from shared.platform.models import ApiKey, BroadcastStatus, MessageState
from shared.platform.urls import callback_url_problem
from shared.receipts.completion import (
    SIGNATURE_HEADER,
    callback_retry_delay,
    complete_broadcasts,
    completion_summary,
    deliver_completion_callback,
    due_completion_callbacks,
    sign_callback,
    verify_callback_signature,
)
from tests.callback_receiver import CompletionCallbackReceiver
from tests.factories import broadcast_of, create_broadcast, messages_of, numbers

IDLE_SECONDS = 3600


def deliver(factory: Any, broadcast_id: uuid.UUID, max_attempts: int = 7) -> Any:
    return deliver_completion_callback(
        factory, broadcast_id, deadline_seconds=5.0, allow_private=True, max_attempts=max_attempts
    )


def make_due(session: Session, broadcast_id: uuid.UUID) -> None:
    """Move the callback's due time to now, as the wait passing would (only if one is scheduled)."""
    session.execute(
        text("UPDATE broadcasts SET callback_due_at = now() WHERE id = :id AND callback_due_at IS NOT NULL"),
        {"id": broadcast_id},
    )
    session.commit()


@pytest.fixture
def completion_receiver() -> Iterator[CompletionCallbackReceiver]:
    receiver = CompletionCallbackReceiver()
    yield receiver
    receiver.close()


def put_in_states(session: Session, broadcast_id: uuid.UUID, states: list[tuple[str, int | None]]) -> None:
    """Give the broadcast's messages, in id order, these (state, error_code) pairs, and mark it submitted."""
    for message, (state, error_code) in zip(messages_of(session, broadcast_id), states, strict=True):
        session.execute(
            text("UPDATE messages SET state = :state, error_code = :code, attempts = 1 WHERE id = :id"),
            {"state": state, "code": error_code, "id": message.id},
        )
    session.execute(
        text(
            "UPDATE broadcasts SET status = 'submitted', submitted_at = now(), first_send_at = now(), "
            "last_send_at = now() WHERE id = :id"
        ),
        {"id": broadcast_id},
    )
    session.commit()


def age_broadcast(session: Session, broadcast_id: uuid.UUID, seconds: float) -> None:
    """Pretend the last send and the last receipt happened `seconds` ago."""
    session.execute(
        text(
            "UPDATE broadcasts SET submitted_at = now() - make_interval(secs => :s), "
            "last_send_at = now() - make_interval(secs => :s), last_receipt_at = now() - make_interval(secs => :s) "
            "WHERE id = :id"
        ),
        {"s": seconds, "id": broadcast_id},
    )
    session.commit()


ALL_FINAL = [
    (MessageState.DELIVERED, None),
    (MessageState.DELIVERED, None),
    (MessageState.UNDELIVERED, 30007),
    (MessageState.FAILED, 21211),
]


def test_a_broadcast_whose_messages_are_all_final_is_completed_once(db_session: Session) -> None:
    done = create_broadcast(db_session, numbers(4))
    put_in_states(db_session, done.id, ALL_FINAL)
    waiting = create_broadcast(db_session, numbers(4, prefix="+1556"))
    put_in_states(db_session, waiting.id, [*ALL_FINAL[:3], (MessageState.SENT, None)])

    completed = complete_broadcasts(db_session, IDLE_SECONDS)
    db_session.commit()

    assert [broadcast.id for broadcast in completed] == [done.id]
    finished = broadcast_of(db_session, done.id)
    assert finished.status == BroadcastStatus.COMPLETED and finished.completed_at is not None
    assert broadcast_of(db_session, waiting.id).status == BroadcastStatus.SUBMITTED
    assert complete_broadcasts(db_session, IDLE_SECONDS) == []  # never twice


@pytest.mark.parametrize(
    "unfinished", [MessageState.PENDING, MessageState.SENDING, MessageState.UNKNOWN, MessageState.RETRY_SCHEDULED]
)
def test_work_left_keeps_a_broadcast_open_even_when_idle(db_session: Session, unfinished: str) -> None:
    broadcast = create_broadcast(db_session, numbers(4))
    put_in_states(db_session, broadcast.id, [*ALL_FINAL[:3], (unfinished, None)])
    age_broadcast(db_session, broadcast.id, IDLE_SECONDS * 2)

    assert complete_broadcasts(db_session, IDLE_SECONDS) == []


def test_a_submitted_broadcast_without_receipts_for_the_idle_time_completes_with_sent_no_receipt(
    db_session: Session, engine: Any
) -> None:
    broadcast = create_broadcast(db_session, numbers(5))
    put_in_states(db_session, broadcast.id, [*ALL_FINAL, (MessageState.ACCEPTED, None)])
    age_broadcast(db_session, broadcast.id, IDLE_SECONDS - 60)
    assert complete_broadcasts(db_session, IDLE_SECONDS) == []  # a receipt came less than an hour ago

    age_broadcast(db_session, broadcast.id, IDLE_SECONDS + 60)
    completed = complete_broadcasts(db_session, IDLE_SECONDS)
    db_session.commit()

    assert [b.id for b in completed] == [broadcast.id]
    summary = completion_summary(db_session, broadcast.id)
    assert summary is not None
    assert summary["broadcast"]["completion"] == "no_receipt_timeout"
    assert summary["broadcast"]["sent_no_receipt"] == 1
    assert summary["broadcast"]["messages"]["delivered"] == 2


def _completed_with_callback(session: Session, url: str) -> tuple[uuid.UUID, str]:
    broadcast = create_broadcast(session, numbers(4))
    put_in_states(session, broadcast.id, ALL_FINAL)
    session.execute(text("UPDATE broadcasts SET callback_url = :url WHERE id = :id"), {"url": url, "id": broadcast.id})
    session.commit()
    complete_broadcasts(session, IDLE_SECONDS)
    session.commit()
    secret = session.get(ApiKey, broadcast.api_key_id)
    assert secret is not None and secret.signing_secret is not None
    return broadcast.id, secret.signing_secret


def test_the_completion_callback_is_posted_once_signed_with_the_keys_secret(
    db_session: Session, engine: Any, completion_receiver: CompletionCallbackReceiver
) -> None:
    broadcast_id, secret = _completed_with_callback(db_session, completion_receiver.url + "/hooks/bulksms")
    factory = create_session_factory(engine)

    assert due_completion_callbacks(db_session) == [broadcast_id]
    first = deliver(factory, broadcast_id)
    make_due(db_session, broadcast_id)
    second = deliver(factory, broadcast_id)  # a redelivered task

    assert (first.outcome, first.attempt, second.outcome) == ("sent", 1, "nothing_to_do")
    [post] = completion_receiver.posts
    assert post.path == "/hooks/bulksms"
    assert post.headers["Content-Type"] == "application/json"
    assert verify_callback_signature(secret, post.body, post.headers[SIGNATURE_HEADER])
    assert not verify_callback_signature("another-secret", post.body, post.headers[SIGNATURE_HEADER])
    summary = json.loads(post.body)
    assert summary["event"] == "broadcast.completed"
    assert summary["broadcast"]["id"] == str(broadcast_id)
    assert summary["broadcast"]["status"] == "completed"
    assert summary["broadcast"]["completion"] == "all_final"
    assert summary["broadcast"]["progress"]["final_percent"] == 100.0
    assert summary["broadcast"]["progress"]["delivery_rate_percent"] == 50.0
    assert summary["broadcast"]["error_codes"] == [
        {"error_code": 21211, "count": 1},
        {"error_code": 30007, "count": 1},
    ]
    assert summary["broadcast"]["client_reference"] is None  # none was given
    broadcast = broadcast_of(db_session, broadcast_id)
    assert broadcast.callback_sent_at is not None and broadcast.callback_attempts == 1
    assert due_completion_callbacks(db_session) == []


def test_the_completion_summary_carries_the_client_reference_given_at_intake(db_session: Session) -> None:
    api_key, _ = create_api_key(db_session, "crm")
    request = BroadcastRequest("hi", numbers(4), options={"client_reference": "crm-campaign-7"})
    broadcast = intake.create_broadcast(db_session, api_key_id=api_key.id, request=request, chunk_size=100).broadcast
    put_in_states(db_session, broadcast.id, ALL_FINAL)
    complete_broadcasts(db_session, IDLE_SECONDS)
    db_session.commit()

    summary = completion_summary(db_session, broadcast.id)

    assert summary is not None
    assert summary["broadcast"]["client_reference"] == "crm-campaign-7"
    assert summary["broadcast"]["status"] == "completed"


def test_a_failing_callback_url_is_tried_up_to_the_limit_then_given_up(
    db_session: Session, engine: Any, completion_receiver: CompletionCallbackReceiver
) -> None:
    broadcast_id, _ = _completed_with_callback(db_session, completion_receiver.url + "/down")
    completion_receiver.answer_status = 503
    factory = create_session_factory(engine)

    outcomes = []
    for _ in range(4):
        outcomes.append(deliver(factory, broadcast_id, max_attempts=3).outcome)
        # A failed attempt is due again only after its backoff: a duplicate task finds nothing to do meanwhile.
        assert deliver(factory, broadcast_id, max_attempts=3).outcome == "nothing_to_do"
        make_due(db_session, broadcast_id)

    assert outcomes == ["failed", "failed", "given_up", "nothing_to_do"]
    assert len(completion_receiver.posts) == 3
    broadcast = broadcast_of(db_session, broadcast_id)
    assert broadcast.callback_sent_at is None and broadcast.callback_attempts == 3
    assert broadcast.callback_due_at is None  # given up: beat never enqueues it again


def test_callback_retries_back_off() -> None:
    delays = [callback_retry_delay(attempt) for attempt in range(1, 8)]
    assert delays == sorted(delays) and delays[0] >= 10 and delays[-1] <= 3600


def test_signature_checks() -> None:
    body = b'{"event":"broadcast.completed"}'
    now = 1_800_000_000
    header = sign_callback("s3cret", body, now)
    assert header.startswith(f"t={now},v1=")
    assert verify_callback_signature("s3cret", body, header, now=now + 10)
    assert not verify_callback_signature("s3cret", body + b" ", header, now=now)  # body changed
    assert not verify_callback_signature("s3cret", body, header, now=now + 3600)  # replayed an hour later
    assert not verify_callback_signature("s3cret", body, header.replace(f"t={now}", f"t={now + 1}"), now=now)
    assert not verify_callback_signature("s3cret", body, None)
    assert not verify_callback_signature("s3cret", body, "garbage")
    assert verify_callback_signature("s3cret", body, sign_callback("s3cret", body, int(time.time())))


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("https://hooks.example.com/bulksms?x=1", True),
        ("http://localhost:8080/done", True),
        ("http://127.0.0.1:9000/done", True),
        ("http://example.com/done", False),
        ("ftp://example.com/done", False),
        ("https://", False),
        ("https://exa mple.com/", False),
        ("https://example.com:99999/", False),
        ("not a url", False),
        ("https://example.com/" + "a" * 2000, False),
    ],
)
def test_callback_url_rules(url: str, accepted: bool) -> None:
    assert (callback_url_problem(url) is None) is accepted


def test_an_attempt_whose_worker_died_is_due_again_after_its_lease(
    db_session: Session, engine: Any, completion_receiver: CompletionCallbackReceiver
) -> None:
    broadcast_id, _ = _completed_with_callback(db_session, completion_receiver.url + "/done")
    # What a worker killed mid-POST leaves behind: the attempt counted, its lease (deadline + backoff) running.
    db_session.execute(
        text("UPDATE broadcasts SET callback_attempts = 1, callback_due_at = now() + interval '20 s' WHERE id = :id"),
        {"id": broadcast_id},
    )
    db_session.commit()
    assert due_completion_callbacks(db_session) == []

    make_due(db_session, broadcast_id)  # the lease ran out
    assert due_completion_callbacks(db_session) == [broadcast_id]
    attempt = deliver(create_session_factory(engine), broadcast_id)

    assert (attempt.outcome, attempt.attempt) == ("sent", 2)
    assert len(completion_receiver.posts) == 1


def test_the_completion_summary_says_whether_the_broadcast_was_a_test(db_session: Session) -> None:
    test_key, _ = create_api_key(db_session, "sandbox", is_test=True)
    live_key, _ = create_api_key(db_session, "production")
    created = {}
    for index, api_key in enumerate((test_key, live_key)):
        request = BroadcastRequest("hi", numbers(len(ALL_FINAL), prefix=f"+1555{index}"))
        broadcast = intake.create_broadcast(
            db_session, api_key_id=api_key.id, request=request, chunk_size=100, test=api_key.is_test
        ).broadcast
        put_in_states(db_session, broadcast.id, ALL_FINAL)
        created[api_key.is_test] = broadcast.id
    complete_broadcasts(db_session, IDLE_SECONDS)
    db_session.commit()

    for is_test, broadcast_id in created.items():
        summary = completion_summary(db_session, broadcast_id)
        assert summary is not None
        assert summary["broadcast"]["test"] is is_test
