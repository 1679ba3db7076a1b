"""The message store: every legal move of the transition table works, every illegal one is refused by the SQL.

A refused move writes nothing: the row keeps its state, so a late or duplicated writer (a chunk task redelivered,
a callback replayed, a sweeper that lost a race) can never push a message backwards or sideways.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.compliance.opt_outs import add_opt_outs
from shared.messages import store
from shared.messages.store import (
    MESSAGE_TRANSITIONS,
    IllegalMessageTransition,
    MessageEvent,
    ReceiptUpdate,
    SendRecord,
)
from shared.platform.models import BroadcastStatus, MessageState
from tests.conftest import REPOSITORY_ROOT
from tests.factories import create_broadcast, database_now, messages_of, set_messages

SID = "SM" + "5" * 32
NUMBER = "+15550000000"


def one_message_in(session: Session, state: MessageState) -> tuple[uuid.UUID, int]:
    """A broadcast with one message forced into `state`, attempt 1; returns (broadcast id, message id)."""
    broadcast = create_broadcast(session, [NUMBER])
    set_messages(session, broadcast.id, state=state.value, attempts=1)
    (message,) = messages_of(session, broadcast.id)
    return broadcast.id, message.id


def state_of(session: Session, message_id: int) -> str:
    session.expire_all()
    return str(session.execute(text("SELECT state FROM messages WHERE id = :id"), {"id": message_id}).scalar_one())


def receipt(message_id: int, state: MessageState, session: Session) -> ReceiptUpdate:
    now = database_now(session)
    retry_due = now + timedelta(minutes=1) if state == MessageState.RETRY_SCHEDULED else None
    return ReceiptUpdate(message_id, state.value, SID, "undelivered", 30003, None, retry_due, None, now)


# One attempt per event: (session, broadcast id, message id, current state) -> rows the store says it moved.
Attempt = Callable[[Session, uuid.UUID, int, MessageState], int]


def _claim(session: Session, broadcast_id: uuid.UUID, message_id: int, state: MessageState) -> int:
    return len(store.claim(session, broadcast_id, 0, lease_seconds=60))


def _record(target: MessageState) -> Attempt:
    def attempt(session: Session, broadcast_id: uuid.UUID, message_id: int, state: MessageState) -> int:
        sid = SID if target == MessageState.ACCEPTED else None
        return store.record_send_outcomes(session, [SendRecord(message_id, 1, target.value, twilio_sid=sid)])

    return attempt


def _reconcile_found(session: Session, broadcast_id: uuid.UUID, message_id: int, state: MessageState) -> int:
    return store.reconcile_found(session, message_id, state.value, 1, SID, "queued")


def _reconcile_not_found(session: Session, broadcast_id: uuid.UUID, message_id: int, state: MessageState) -> int:
    return store.reconcile_not_found(session, message_id, state.value, 1, "not at Twilio")


def _receipt(target: MessageState) -> Attempt:
    def attempt(session: Session, broadcast_id: uuid.UUID, message_id: int, state: MessageState) -> int:
        return store.apply_receipts(session, [receipt(message_id, target, session)])

    return attempt


def _release_retry(session: Session, broadcast_id: uuid.UUID, message_id: int, state: MessageState) -> int:
    set_messages(session, broadcast_id, retry_due_at=database_now(session) - timedelta(seconds=1))
    return len(store.release_due_retries(session))


def _skip_opted_out(session: Session, broadcast_id: uuid.UUID, message_id: int, state: MessageState) -> int:
    add_opt_outs(session, [NUMBER], source="api", reason=None)
    return len(store.skip_opted_out(session, broadcast_id, 0))


def _defer(session: Session, broadcast_id: uuid.UUID, message_id: int, state: MessageState) -> int:
    return store.defer(session, [message_id], [database_now(session) + timedelta(hours=1)])


def _cancel(session: Session, broadcast_id: uuid.UUID, message_id: int, state: MessageState) -> int:
    return store.cancel_unsent(session, broadcast_id)


def _expire(session: Session, broadcast_id: uuid.UUID, message_id: int, state: MessageState) -> int:
    session.execute(
        text("UPDATE broadcasts SET deadline = now() - interval '1 second' WHERE id = :id"), {"id": broadcast_id}
    )
    return store.expire_past_deadline(session, broadcast_id)


ATTEMPTS: dict[MessageEvent, list[tuple[MessageState, Attempt]]] = {
    MessageEvent.CLAIM: [(MessageState.SENDING, _claim)],
    MessageEvent.RECORD_OUTCOME: [
        (target, _record(target)) for target in (MessageState.ACCEPTED, MessageState.FAILED, MessageState.UNKNOWN)
    ],
    MessageEvent.RELEASE: [(MessageState.PENDING, _record(MessageState.PENDING))],
    MessageEvent.RECONCILE_FOUND: [(MessageState.ACCEPTED, _reconcile_found)],
    MessageEvent.RECONCILE_NOT_FOUND: [(MessageState.PENDING, _reconcile_not_found)],
    MessageEvent.RECEIPT: [(MessageState.DELIVERED, _receipt(MessageState.DELIVERED))],
    MessageEvent.SCHEDULE_RETRY: [(MessageState.RETRY_SCHEDULED, _receipt(MessageState.RETRY_SCHEDULED))],
    MessageEvent.RELEASE_RETRY: [(MessageState.PENDING, _release_retry)],
    MessageEvent.SKIP_OPTED_OUT: [(MessageState.SKIPPED, _skip_opted_out)],
    MessageEvent.DEFER: [(MessageState.PENDING, _defer)],
    MessageEvent.CANCEL: [(MessageState.CANCELED, _cancel)],
    MessageEvent.EXPIRE: [(MessageState.EXPIRED, _expire)],
}

LEGAL = sorted(
    {(source, event) for source, event, _ in MESSAGE_TRANSITIONS}, key=lambda pair: (pair[1].value, pair[0].value)
)
ILLEGAL = sorted(
    {(state, event) for state in MessageState for event in MessageEvent} - set(LEGAL),
    key=lambda pair: (pair[1].value, pair[0].value),
)


def test_every_event_has_an_attempt_here() -> None:
    assert set(ATTEMPTS) == set(MessageEvent)


@pytest.mark.parametrize(("state", "event"), LEGAL, ids=[f"{s.value}-{e.value}" for s, e in LEGAL])
def test_a_legal_move_happens(db_session: Session, state: MessageState, event: MessageEvent) -> None:
    for target, attempt in ATTEMPTS[event]:
        if (state, event, target) not in MESSAGE_TRANSITIONS:
            continue
        broadcast_id, message_id = one_message_in(db_session, state)
        assert attempt(db_session, broadcast_id, message_id, state) == 1
        db_session.commit()
        assert state_of(db_session, message_id) == target.value


@pytest.mark.parametrize(("state", "event"), ILLEGAL, ids=[f"{s.value}-{e.value}" for s, e in ILLEGAL])
def test_an_illegal_move_is_refused_and_changes_nothing(
    db_session: Session, state: MessageState, event: MessageEvent
) -> None:
    for _target, attempt in ATTEMPTS[event]:
        broadcast_id, message_id = one_message_in(db_session, state)
        assert attempt(db_session, broadcast_id, message_id, state) == 0
        db_session.commit()
        assert state_of(db_session, message_id) == state.value


def test_a_target_outside_the_table_raises_before_writing(db_session: Session) -> None:
    _, message_id = one_message_in(db_session, MessageState.SENDING)
    with pytest.raises(IllegalMessageTransition):
        store.record_send_outcomes(db_session, [SendRecord(message_id, 1, MessageState.DELIVERED.value)])
    with pytest.raises(IllegalMessageTransition):
        store.apply_receipts(db_session, [receipt(message_id, MessageState.PENDING, db_session)])
    db_session.rollback()
    assert state_of(db_session, message_id) == MessageState.SENDING.value


def test_a_released_retry_of_a_canceled_broadcast_is_canceled_not_sent_again(db_session: Session) -> None:
    broadcast_id, message_id = one_message_in(db_session, MessageState.RETRY_SCHEDULED)
    db_session.execute(
        text("UPDATE broadcasts SET status = :canceled WHERE id = :id"),
        {"canceled": BroadcastStatus.CANCELED, "id": broadcast_id},
    )
    assert _release_retry(db_session, broadcast_id, message_id, MessageState.RETRY_SCHEDULED) == 0
    db_session.commit()
    assert state_of(db_session, message_id) == MessageState.CANCELED.value


@pytest.mark.parametrize("owner", ["archived attempt", "another message"])
def test_reconcile_found_never_gives_one_twilio_message_to_two_attempts(db_session: Session, owner: str) -> None:
    _, message_id = one_message_in(db_session, MessageState.UNKNOWN)
    if owner == "archived attempt":
        db_session.execute(
            text("INSERT INTO message_attempts (message_id, attempt_number, twilio_sid) VALUES (:id, 0, :sid)"),
            {"id": message_id, "sid": SID},
        )
    else:
        other = create_broadcast(db_session, ["+15550000001"])
        set_messages(db_session, other.id, state=MessageState.ACCEPTED.value, attempts=1, twilio_sid=SID)

    assert store.reconcile_found(db_session, message_id, MessageState.UNKNOWN.value, 1, SID, "queued") == 0
    db_session.commit()
    assert state_of(db_session, message_id) == MessageState.UNKNOWN.value
    assert store.sids_on_record(db_session, [SID, "SM" + "6" * 32]) == {SID}


# Every write to these tables lives in one module; a second writer would bypass the table above.
OWNERS = {
    r"(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+message_counts\b": "shared/messages/counts.py",
    r"(UPDATE|DELETE\s+FROM)\s+status_events\b": "shared/receipts/events.py",
    r"UPDATE\s+messages\b": "shared/messages/store.py",
    r"(INSERT\s+INTO|UPDATE)\s+message_attempts\b": "shared/messages/store.py",
    r"UPDATE\s+broadcasts\b": "shared/broadcasts/store.py",
    r"(INSERT\s+INTO|DELETE\s+FROM|UPDATE)\s+opted_out_numbers\b": "shared/compliance/opt_outs.py",
}


@pytest.mark.parametrize("pattern", sorted(OWNERS))
def test_only_the_owning_module_writes_the_table(pattern: str) -> None:
    writers = sorted(
        str(path.relative_to(REPOSITORY_ROOT))
        for folder in ("shared", "api", "worker")
        for path in Path(REPOSITORY_ROOT, folder).rglob("*.py")
        if "migrations" not in path.parts and re.search(pattern, path.read_text(), re.IGNORECASE)
    )
    assert writers == [OWNERS[pattern]]
