"""Applying status callbacks to PostgreSQL: ordering, duplicates, matching, delivery retries, opt-outs."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from shared.platform.models import Message, MessageAttempt, MessageState, OptedOutNumber, StatusEvent
from shared.platform.settings import Settings
from shared.receipts.delivery_status import StatusReport
from shared.receipts.events import (
    DeliveryRetryPolicy,
    MessageRow,
    apply_status_events,
    apply_unapplied_events,
    decide_message_update,
    message_state_for,
    retry_delay_seconds,
    uncounted_retry_due,
)
from shared.twilio.error_codes import (
    ERROR_CODES,
    UNCOUNTED_RETRY_BEHAVIOURS,
    CallbackErrorBehaviour,
    TwilioErrorCode,
    codes_in_callbacks,
)
from tests.factories import broadcast_of, create_broadcast, messages_of
from tests.status_callbacks import new_sid, queued

# ------------------------------------------------------------------------------------------------ pure parts


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("accepted", "accepted"),
        ("queued", "sent"),
        ("sending", "sent"),
        ("sent", "sent"),
        ("delivered", "delivered"),
        ("read", "delivered"),
        ("undelivered", "undelivered"),
        ("failed", "failed"),
        ("canceled", "failed"),
    ],
)
def test_message_state_for_each_twilio_status(status: str, state: str) -> None:
    assert message_state_for(status) == state


@pytest.mark.parametrize(
    ("attempts", "jitter", "expected"),
    [(1, 0.0, 60.0), (2, 0.0, 240.0), (3, 0.0, 960.0), (1, 0.2, 72.0), (1, -0.2, 48.0)],
)
def test_retry_delay_grows_four_times_per_attempt(attempts: int, jitter: float, expected: float) -> None:
    assert retry_delay_seconds(attempts, 60.0, jitter) == pytest.approx(expected)


POLICY = DeliveryRetryPolicy(retry_codes=frozenset({30003, 30008}), max_attempts=3, base_seconds=60.0)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def row(**changes: Any) -> MessageRow:
    values: dict[str, Any] = {
        "id": 1,
        "broadcast_id": None,
        "to_number": "+15555550100",
        "state": "accepted",
        "attempts": 1,
        "twilio_sid": "SM1",
        "twilio_status": "accepted",
        "error_code": None,
    }
    values.update(changes)
    return MessageRow(**values)


@pytest.mark.parametrize(
    ("current", "incoming", "code", "attempts", "state", "final", "retry"),
    [
        ("accepted", "sent", None, 1, "sent", False, False),
        ("delivered", "sent", None, 1, None, False, False),  # late `sent` never overwrites
        ("delivered", "delivered", None, 1, None, False, False),  # duplicate: no-op
        ("sent", "delivered", None, 1, "delivered", True, False),
        ("sent", "undelivered", 30003, 1, "retry_scheduled", False, True),
        ("sent", "undelivered", 30008, 2, "retry_scheduled", False, True),
        ("sent", "undelivered", 30003, 3, "undelivered", True, False),  # attempts cap reached
        ("sent", "undelivered", 30007, 1, "undelivered", True, False),  # carrier filtering: final
        ("queued", "failed", 30005, 1, "failed", True, False),
        ("undelivered", "delivered", None, 1, None, False, False),  # first final wins
    ],
)
def test_decide_message_update(
    current: str, incoming: str, code: int | None, attempts: int, state: str | None, final: bool, retry: bool
) -> None:
    update_ = decide_message_update(
        row(twilio_status=current, attempts=attempts),
        StatusReport("SM1", incoming, code),
        NOW,
        NOW,
        POLICY,
        lambda: 0.0,
    )
    if state is None:
        assert update_ is None
        return
    assert update_ is not None
    assert update_.state == state
    assert (update_.final_at is not None) == final
    assert (update_.retry_due_at is not None) == retry
    if retry:
        assert update_.retry_due_at == NOW + timedelta(seconds=60.0 * 4 ** (attempts - 1))


@pytest.mark.parametrize(
    ("code", "due"),
    [
        (30022, NOW + timedelta(seconds=30)),  # slow down, then again shortly
        (63017, NOW + timedelta(seconds=30)),
        (30001, NOW + timedelta(seconds=60)),  # once the queue at Twilio has drained (TWILIO_QUEUE_MAX_SECONDS)
        (30023, datetime(2026, 1, 1, 8, tzinfo=UTC)),  # midnight Pacific (PST, UTC-8) after 2026-01-01 00:00 UTC
        (30027, datetime(2026, 1, 1, 8, tzinfo=UTC)),
        (63038, NOW + timedelta(hours=24)),  # a rolling day
    ],
)
def test_rate_and_cap_answers_are_sent_again_whatever_the_attempts_so_far(code: int, due: datetime) -> None:
    # Already at DELIVERY_RETRY_MAX_ATTEMPTS: a delivery retry would be refused, these are not delivery attempts.
    update_ = decide_message_update(
        row(twilio_status="accepted", attempts=3), StatusReport("SM1", "failed", code), NOW, NOW, POLICY, lambda: 0.0
    )
    assert update_ is not None and update_.state == "retry_scheduled" and update_.retry_due_at == due


def test_attempts_twilio_answered_with_a_rate_code_do_not_count_against_delivery_retries() -> None:
    # Three attempts, two of them answered 30022: one real delivery attempt, so a 30003 still earns another.
    update_ = decide_message_update(
        row(twilio_status="sent", attempts=3, uncounted_attempts=2),
        StatusReport("SM1", "undelivered", 30003),
        NOW,
        NOW,
        POLICY,
        lambda: 0.0,
    )
    assert update_ is not None and update_.state == "retry_scheduled"


def test_the_delivery_retry_policy_reads_the_error_code_table_unless_the_setting_replaces_it() -> None:
    table = frozenset(codes_in_callbacks(CallbackErrorBehaviour.DELIVERY_RETRY))
    assert DeliveryRetryPolicy.from_settings(Settings()).retry_codes == table == {30003, 30008}
    replaced = DeliveryRetryPolicy.from_settings(Settings(delivery_retry_error_codes="30005, 30007"))
    assert replaced.retry_codes == {30005, 30007}


@pytest.mark.parametrize(
    "entry",
    [entry for entry in ERROR_CODES.values() if entry.on_callback is not None],
    ids=lambda entry: str(entry.code),
)
def test_an_undelivered_receipt_follows_its_codes_row_by_default(entry: TwilioErrorCode) -> None:
    update_ = decide_message_update(
        row(twilio_status="sent", attempts=1),
        StatusReport("SM1", "undelivered", entry.code),
        NOW,
        NOW,
        DeliveryRetryPolicy.from_settings(Settings()),
        lambda: 0.0,
    )

    assert update_ is not None and update_.error_code == entry.code
    if entry.on_callback is CallbackErrorBehaviour.DELIVERY_RETRY:
        assert (update_.state, update_.final_at) == ("retry_scheduled", None)
    elif entry.on_callback in UNCOUNTED_RETRY_BEHAVIOURS:
        assert (update_.state, update_.final_at) == ("retry_scheduled", None)
        assert update_.retry_due_at == uncounted_retry_due(
            entry.code, NOW, NOW, DeliveryRetryPolicy.from_settings(Settings())
        )
    else:  # final, opt-out: the message stays undelivered (an opt-out also lists the number, see below)
        assert (update_.state, update_.final_at) == ("undelivered", NOW)


# ---------------------------------------------------------------------------------------------- with PostgreSQL


def accepted_messages(session: Session, count: int, prefix: str = "+1555") -> list[Message]:
    """Messages Twilio accepted (attempt 1, SID recorded), as the worker leaves them."""
    broadcast = create_broadcast(session, [f"{prefix}{index:07d}" for index in range(count)])
    for message in messages_of(session, broadcast.id):
        session.execute(
            update(Message)
            .where(Message.id == message.id)
            .values(state="accepted", attempts=1, twilio_sid=new_sid(), twilio_status="accepted")
        )
    session.commit()
    return messages_of(session, broadcast.id)


def apply(session: Session, settings: Settings, *callbacks: Any) -> Any:
    report = apply_status_events(session, list(callbacks), settings)
    session.commit()
    session.expire_all()
    return report


def reload(session: Session, message: Message) -> Message:
    session.expire_all()
    found = session.get(Message, message.id)
    assert found is not None
    return found


def test_callbacks_in_order_end_delivered_and_are_all_kept(db_session: Session, settings: Settings) -> None:
    (message,) = accepted_messages(db_session, 1)
    sid = message.twilio_sid
    assert sid is not None
    for status in ("queued", "sent", "delivered"):
        apply(db_session, settings, queued(sid, status))
    message = reload(db_session, message)
    assert (message.state, message.twilio_status) == ("delivered", "delivered")
    assert message.final_at is not None and message.last_receipt_at is not None
    events = db_session.scalars(select(StatusEvent).order_by(StatusEvent.id)).all()
    assert [e.message_status for e in events] == ["queued", "sent", "delivered"]
    assert all(e.applied_at is not None for e in events)
    assert events[0].parameters["MessageSid"] == sid
    assert broadcast_of(db_session, message.broadcast_id).last_receipt_at is not None


def test_out_of_order_and_duplicated_callbacks_end_at_the_most_advanced_status(
    db_session: Session, settings: Settings
) -> None:
    first, second = accepted_messages(db_session, 2)
    assert first.twilio_sid and second.twilio_sid
    # One batch with everything shuffled and doubled; then late stragglers in their own batches.
    apply(
        db_session,
        settings,
        queued(first.twilio_sid, "delivered"),
        queued(second.twilio_sid, "sent"),
        queued(first.twilio_sid, "queued"),
        queued(first.twilio_sid, "delivered"),
        queued(second.twilio_sid, "queued"),
    )
    apply(db_session, settings, queued(first.twilio_sid, "sent"))
    apply(db_session, settings, queued(second.twilio_sid, "sent"))
    assert reload(db_session, first).state == "delivered"
    assert reload(db_session, second).state == "sent"
    apply(db_session, settings, queued(second.twilio_sid, "delivered"), queued(second.twilio_sid, "queued"))
    assert reload(db_session, second).twilio_status == "delivered"
    # Nine callbacks, six distinct (SID, status): the repeated delivered, sent and queued are kept once.
    assert db_session.scalar(select(text("count(*)")).select_from(StatusEvent)) == 6


def test_replayed_batch_is_not_stored_twice(db_session: Session, settings: Settings) -> None:
    (message,) = accepted_messages(db_session, 1)
    assert message.twilio_sid
    batch = [queued(message.twilio_sid, "sent"), queued(message.twilio_sid, "delivered")]
    apply(db_session, settings, *batch)
    report = apply(db_session, settings, *batch)  # committed, then the acknowledgement was lost
    assert report.stored == 0
    assert db_session.scalar(select(text("count(*)")).select_from(StatusEvent)) == 2


def test_sid_unknown_at_callback_time_is_matched_through_the_message_id(
    db_session: Session, settings: Settings
) -> None:
    broadcast = create_broadcast(db_session, ["+15555550101"])
    (message,) = messages_of(db_session, broadcast.id)
    # The worker claimed it, Twilio accepted it, the worker died before recording the SID.
    db_session.execute(update(Message).where(Message.id == message.id).values(state="sending", attempts=1))
    db_session.commit()
    sid = new_sid()
    apply(db_session, settings, queued(sid, "sent", message_id=message.id, attempt=1))
    message = reload(db_session, message)
    assert (message.twilio_sid, message.state, message.twilio_status) == (sid, "sent", "sent")
    assert broadcast_of(db_session, broadcast.id).status == "submitted"  # nothing left unfinished
    # Later callbacks carry the same SID: matched directly now.
    apply(db_session, settings, queued(sid, "delivered"))
    assert reload(db_session, message).state == "delivered"


def test_unmatched_event_is_kept_then_applied_when_its_message_appears(db_session: Session, settings: Settings) -> None:
    sid = new_sid()
    report = apply(db_session, settings, queued(sid, "delivered", message_id=10_000, attempt=1))
    assert report.unmatched == 1
    event = db_session.scalars(select(StatusEvent)).one()
    assert event.applied_at is None and event.message_id == 10_000
    (message,) = accepted_messages(db_session, 1)
    db_session.execute(update(Message).where(Message.id == message.id).values(twilio_sid=sid))
    db_session.commit()
    report = apply_unapplied_events(db_session, settings)
    db_session.commit()
    assert report.applied == 1
    assert reload(db_session, message).state == "delivered"
    db_session.expire_all()
    assert db_session.scalars(select(StatusEvent)).one().applied_at is not None


def test_late_callback_for_an_old_attempt_is_recorded_on_that_attempt_only(
    db_session: Session, settings: Settings
) -> None:
    (message,) = accepted_messages(db_session, 1)
    old_sid = message.twilio_sid
    assert old_sid
    # Attempt 1 was retried: archived, and attempt 2 is out with a new SID.
    db_session.add(MessageAttempt(message_id=message.id, attempt_number=1, twilio_sid=old_sid, twilio_status="sent"))
    new = new_sid()
    db_session.execute(
        update(Message)
        .where(Message.id == message.id)
        .values(attempts=2, twilio_sid=new, twilio_status="sent", state="sent")
    )
    db_session.commit()
    apply(
        db_session,
        settings,
        queued(old_sid, "undelivered", error_code=30003),  # by SID
        queued(new_sid(), "delivered", message_id=message.id, attempt=1),  # by URL, an even older echo
    )
    message = reload(db_session, message)
    assert (message.state, message.twilio_sid, message.retry_due_at) == ("sent", new, None)
    attempt = db_session.scalars(select(MessageAttempt).where(MessageAttempt.attempt_number == 1)).one()
    assert (attempt.twilio_status, attempt.error_code) == ("undelivered", 30003)
    assert attempt.final_at is not None


def test_30003_schedules_a_retry_with_a_due_time(db_session: Session, settings: Settings) -> None:
    (message,) = accepted_messages(db_session, 1)
    assert message.twilio_sid
    before = datetime.now(UTC)
    report = apply(db_session, settings, queued(message.twilio_sid, "undelivered", error_code=30003))
    message = reload(db_session, message)
    assert report.retries_scheduled == 1
    assert (message.state, message.error_code, message.final_at) == ("retry_scheduled", 30003, None)
    assert message.retry_due_at is not None
    delay = (message.retry_due_at - before).total_seconds()
    assert 0.8 * 60 - 1 <= delay <= 1.2 * 60 + 1


@pytest.mark.parametrize("code", [30007, 30004, 30005, 30006])
def test_other_carrier_codes_are_final(db_session: Session, settings: Settings, code: int) -> None:
    (message,) = accepted_messages(db_session, 1)
    assert message.twilio_sid
    apply(db_session, settings, queued(message.twilio_sid, "undelivered", error_code=code))
    message = reload(db_session, message)
    assert (message.state, message.error_code, message.retry_due_at) == ("undelivered", code, None)
    assert message.final_at is not None


def test_retry_code_at_the_attempts_cap_is_final(db_session: Session, settings: Settings) -> None:
    (message,) = accepted_messages(db_session, 1)
    assert message.twilio_sid
    db_session.execute(update(Message).where(Message.id == message.id).values(attempts=3))
    db_session.commit()
    apply(db_session, settings, queued(message.twilio_sid, "failed", error_code=30008))
    message = reload(db_session, message)
    assert (message.state, message.retry_due_at) == ("failed", None)
    assert message.final_at is not None


def test_a_late_30003_on_a_completed_broadcast_is_final_never_a_retry_left_pending(
    db_session: Session, settings: Settings
) -> None:
    # Completed after COMPLETION_IDLE_SECONDS without a receipt, its summary sent: nothing would send a retry,
    # which stayed `pending` for good.
    (message,) = accepted_messages(db_session, 1)
    assert message.twilio_sid
    db_session.execute(
        text("UPDATE broadcasts SET status = 'completed', completed_at = now() WHERE id = :id"),
        {"id": message.broadcast_id},
    )
    db_session.commit()
    report = apply(db_session, settings, queued(message.twilio_sid, "undelivered", error_code=30003))
    message = reload(db_session, message)
    assert report.retries_scheduled == 0
    assert (message.state, message.error_code, message.retry_due_at) == ("undelivered", 30003, None)
    assert message.final_at is not None


def test_21610_opts_the_number_out(db_session: Session, settings: Settings) -> None:
    (message,) = accepted_messages(db_session, 1)
    assert message.twilio_sid
    callback = queued(message.twilio_sid, "failed", error_code=21610, to=message.to_number)
    apply(db_session, settings, callback)
    apply(db_session, settings, queued(message.twilio_sid, "failed", error_code=21610, to=message.to_number))
    opted_out = db_session.scalars(select(OptedOutNumber)).all()
    assert [(o.phone_number, o.source) for o in opted_out] == [(message.to_number, "callback_21610")]
    assert reload(db_session, message).state == "failed"


def test_broadcast_receipt_time_is_the_latest_callback(db_session: Session, settings: Settings) -> None:
    messages = accepted_messages(db_session, 3)
    now = time.time()
    apply(
        db_session,
        settings,
        *(queued(m.twilio_sid or "", "sent", received_at=now - index) for index, m in enumerate(messages)),
    )
    last = broadcast_of(db_session, messages[0].broadcast_id).last_receipt_at
    assert last is not None and abs(last.timestamp() - now) < 0.001
    assert all(reload(db_session, m).state == MessageState.SENT for m in messages)
