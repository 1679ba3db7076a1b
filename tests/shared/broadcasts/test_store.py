"""The broadcast store: each status move of the transition table happens from its legal sources only.

Moves the API asks for (pause, resume, cancel, reschedule) answer an illegal one with InvalidTransitionError
(a 409 with the allowed statuses); moves the pipeline makes leave a broadcast in any other status untouched.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import func, update
from sqlalchemy.orm import Session

from shared.broadcasts import store
from shared.broadcasts.store import BROADCAST_TRANSITIONS, BroadcastEvent, InvalidTransitionError
from shared.platform.models import Broadcast, BroadcastStatus, MessageState
from tests.factories import broadcast_of, create_broadcast, database_now, set_messages

# Moves the API asks for: they raise on an illegal status.
API_MOVES: dict[BroadcastEvent, Callable[[Session, uuid.UUID], object]] = {
    BroadcastEvent.PAUSE: store.pause,
    BroadcastEvent.RESUME: store.resume,
    BroadcastEvent.CANCEL: store.cancel,
    BroadcastEvent.RESCHEDULE: lambda session, broadcast_id: store.reschedule(
        session, broadcast_id, database_now(session) + timedelta(hours=2)
    ),
}


def _release_schedule(session: Session, broadcast_id: uuid.UUID) -> bool:
    return broadcast_id in store.release_scheduled(session, now=database_now(session) + timedelta(days=1))


def _complete(session: Session, broadcast_id: uuid.UUID) -> bool:
    completed = store.complete_finished(session, 0, 100, [MessageState.PENDING.value], [MessageState.SENT.value])
    return broadcast_id in [completed_id for completed_id, _ in completed]


def _hold(session: Session, broadcast_id: uuid.UUID) -> bool:
    return broadcast_id in store.hold(session, [broadcast_id], "Twilio error 30023", database_now(session))


def _release_hold(session: Session, broadcast_id: uuid.UUID) -> bool:
    session.execute(update(Broadcast).where(Broadcast.id == broadcast_id).values(held_until=func.now()))
    return broadcast_id in store.release_due_holds(session, now=database_now(session) + timedelta(seconds=1))


# Moves the pipeline makes: they report whether the broadcast moved.
PIPELINE_MOVES: dict[BroadcastEvent, Callable[[Session, uuid.UUID], bool]] = {
    BroadcastEvent.RELEASE_SCHEDULE: _release_schedule,
    BroadcastEvent.START_SENDING: store.start_sending,
    BroadcastEvent.SUBMIT: store.submit_if_finished,
    BroadcastEvent.COMPLETE: _complete,
    BroadcastEvent.HOLD: _hold,
    BroadcastEvent.RELEASE_HOLD: _release_hold,
}

LEGAL = {(source, event) for source, event, _ in BROADCAST_TRANSITIONS}
ALL = sorted(
    ((status, event) for status in BroadcastStatus for event in BroadcastEvent),
    key=lambda pair: (pair[1].value, pair[0].value),
)


def broadcast_in(session: Session, status: BroadcastStatus) -> uuid.UUID:
    """A broadcast whose only message is delivered (so submit and complete may apply), in `status`."""
    broadcast = create_broadcast(session, ["+15550000001"])
    set_messages(session, broadcast.id, state=MessageState.DELIVERED.value)
    # Test set-up only: force a status the pipeline would take many steps to reach.
    session.execute(
        update(Broadcast).where(Broadcast.id == broadcast.id).values(status=status.value, send_at=func.now())
    )
    session.commit()
    return broadcast.id


def test_every_event_has_a_move_here() -> None:
    assert set(API_MOVES) | set(PIPELINE_MOVES) == set(BroadcastEvent)


@pytest.mark.parametrize(("status", "event"), ALL, ids=[f"{s.value}-{e.value}" for s, e in ALL])
def test_a_move_happens_only_from_a_legal_status(
    db_session: Session, status: BroadcastStatus, event: BroadcastEvent
) -> None:
    broadcast_id = broadcast_in(db_session, status)
    legal = (status, event) in LEGAL
    if event in API_MOVES:
        if legal:
            API_MOVES[event](db_session, broadcast_id)
        else:
            with pytest.raises(InvalidTransitionError) as refusal:
                API_MOVES[event](db_session, broadcast_id)
            assert status.value in str(refusal.value)
            db_session.rollback()
    else:
        assert PIPELINE_MOVES[event](db_session, broadcast_id) is legal
    db_session.commit()
    after = broadcast_of(db_session, broadcast_id).status
    if legal:
        targets = {target.value for source, name, target in BROADCAST_TRANSITIONS if (source, name) == (status, event)}
        assert after in targets
    else:
        assert after == status.value


def test_resume_goes_back_to_queued_when_nothing_was_sent_yet(db_session: Session) -> None:
    broadcast_id = broadcast_in(db_session, BroadcastStatus.PAUSED)
    assert store.resume(db_session, broadcast_id).status == BroadcastStatus.QUEUED
    db_session.commit()


def test_the_refusal_names_the_statuses_that_would_allow_the_move(db_session: Session) -> None:
    broadcast_id = broadcast_in(db_session, BroadcastStatus.COMPLETED)
    with pytest.raises(InvalidTransitionError, match="completed cannot be paused; only one that is queued or sending"):
        store.pause(db_session, broadcast_id)
