"""Retention (RETENTION_DAYS after completion): numbers, template values, bodies and raw callbacks go; states,
counts and the opt-out list stay; unmatched callbacks stop being retried after a day."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from shared.compliance.opt_outs import add_opt_outs
from shared.compliance.retention import apply_retention
from shared.messages import counts
from shared.platform.db import create_session_factory
from shared.platform.settings import Settings
from shared.receipts.events import ReceivedEvent, apply_unapplied_events, store_events
from tests.factories import broadcast_of, create_broadcast, messages_of, numbers, set_messages


def completed(session: Session, broadcast_id: uuid.UUID, days_ago: float) -> None:
    session.execute(
        text(
            "UPDATE broadcasts SET status = 'completed', completed_at = now() - make_interval(days => :days) "
            "WHERE id = :id"
        ),
        {"days": days_ago, "id": broadcast_id},
    )
    session.commit()


def event(sid: str, days_ago: float, message_id: int | None = None, to: str = "+15550000001") -> ReceivedEvent:
    return ReceivedEvent(
        message_sid=sid,
        status="delivered",
        error_code=None,
        message_id=message_id,
        attempt=1 if message_id else None,
        parameters={"MessageSid": sid, "MessageStatus": "delivered", "To": to},
        received_at=datetime.now(UTC) - timedelta(days=days_ago),
    )


def event_sids(session: Session) -> set[str]:
    return set(session.execute(text("SELECT message_sid FROM status_events")).scalars())


def test_a_broadcast_completed_before_the_cutoff_loses_numbers_values_and_body_and_keeps_its_counts(
    engine: Engine, db_session: Session
) -> None:
    old = create_broadcast(db_session, numbers(250))
    recent = create_broadcast(db_session, numbers(20, prefix="+1666"))
    running = create_broadcast(db_session, numbers(20, prefix="+1777"))
    set_messages(db_session, old.id, state="delivered", twilio_sid=None)
    completed(db_session, old.id, days_ago=40)
    completed(db_session, recent.id, days_ago=5)
    add_opt_outs(db_session, [numbers(1)[0]], source="api", reason="asked")
    db_session.commit()
    counts_before = counts.state_counts(db_session, old.id)

    report = apply_retention(create_session_factory(engine), retention_days=30)

    assert report.broadcasts_redacted == 1 and report.messages_redacted == 250 and report.finished
    assert all(m.to_number is None and m.variables is None for m in messages_of(db_session, old.id))
    assert {m.state for m in messages_of(db_session, old.id)} == {"delivered"}
    redacted = broadcast_of(db_session, old.id)
    assert redacted.body == "" and redacted.redacted_at is not None and redacted.invalid_sample == []
    assert counts.state_counts(db_session, old.id) == counts_before
    for kept in (recent, running):
        assert all(m.to_number is not None for m in messages_of(db_session, kept.id))
        assert broadcast_of(db_session, kept.id).redacted_at is None
    assert db_session.execute(text("SELECT phone_number FROM opted_out_numbers")).scalars().all() == [numbers(1)[0]]
    # A second run finds nothing left to do.
    again = apply_retention(create_session_factory(engine), retention_days=30)
    assert again.broadcasts_redacted == 0 and again.messages_redacted == 0


def test_raw_callbacks_older_than_the_cutoff_are_deleted_whatever_their_message(
    engine: Engine, db_session: Session
) -> None:
    store_events(db_session, [event("SM" + "1" * 32, 31), event("SM" + "2" * 32, 45), event("SM" + "3" * 32, 2)])
    db_session.commit()

    report = apply_retention(create_session_factory(engine), retention_days=30)

    assert report.events_deleted == 2
    assert event_sids(db_session) == {"SM" + "3" * 32}


def test_a_run_out_of_time_stops_between_batches_and_the_next_run_finishes(engine: Engine, db_session: Session) -> None:
    old = create_broadcast(db_session, numbers(30))
    completed(db_session, old.id, days_ago=40)

    cut_short = apply_retention(create_session_factory(engine), retention_days=30, budget_seconds=0)
    assert not cut_short.finished and cut_short.broadcasts_redacted == 0
    assert all(m.to_number is not None for m in messages_of(db_session, old.id))

    finished = apply_retention(create_session_factory(engine), retention_days=30)
    assert finished.finished and finished.broadcasts_redacted == 1


def test_retention_days_zero_keeps_everything(engine: Engine, db_session: Session) -> None:
    old = create_broadcast(db_session, numbers(3))
    completed(db_session, old.id, days_ago=400)
    store_events(db_session, [event("SM" + "4" * 32, 400)])
    db_session.commit()

    report = apply_retention(create_session_factory(engine), retention_days=0)

    assert report.cutoff is None
    assert all(m.to_number for m in messages_of(db_session, old.id))
    assert event_sids(db_session) == {"SM" + "4" * 32}


def test_unmatched_callbacks_older_than_a_day_are_abandoned_and_no_longer_retried(
    db_session: Session, settings: Settings
) -> None:
    store_events(db_session, [event("SM" + "5" * 32, 2), event("SM" + "6" * 32, 0.1)])
    db_session.commit()

    report = apply_unapplied_events(db_session, settings)
    db_session.commit()

    rows: Any = db_session.execute(
        text("SELECT message_sid, abandoned_at IS NOT NULL AS abandoned, applied_at FROM status_events ORDER BY id")
    ).all()
    assert [(row.message_sid[:3], row.abandoned, row.applied_at) for row in rows] == [
        ("SM5", True, None),
        ("SM6", False, None),
    ]
    assert report.abandoned == 1
    assert apply_unapplied_events(db_session, settings).abandoned == 0
