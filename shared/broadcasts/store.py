"""The broadcast store: the only code that changes a broadcast's status, and every later write to its row.

Intake inserts the row (status from `initial_status`); from then on status moves only through the named
transitions here, checked against one table, `BROADCAST_TRANSITIONS` (from-status, event, to-status). Moves
the API asks for (pause, resume, cancel, reschedule) raise `InvalidTransitionError` (a 409) when the table
does not allow them; moves the pipeline makes (start sending, submit, complete, release a schedule) only touch
rows in a legal source status, in their SQL. docs/architecture.md draws the table.

Lock order, everywhere: broadcast rows first (several: sorted by id), then their message rows.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.messages import store as message_store
from shared.platform.models import UNFINISHED_MESSAGE_STATES, Broadcast, BroadcastStatus

B = BroadcastStatus


class BroadcastEvent(enum.StrEnum):
    RELEASE_SCHEDULE = "release_schedule"  # its send_at has come (beat)
    RESCHEDULE = "reschedule"  # a new send_at (API)
    START_SENDING = "start_sending"  # the first chunk claims recipients
    SUBMIT = "submit"  # every recipient has a Twilio outcome
    PAUSE = "pause"  # API
    RESUME = "resume"  # API: back to sending, or queued when nothing was sent yet
    CANCEL = "cancel"  # API
    COMPLETE = "complete"  # every message final, or no receipt for COMPLETION_IDLE_SECONDS (beat)
    HOLD = "hold"  # a daily cap (every sending broadcast) or the broadcast's circuit breaker
    RELEASE_HOLD = "release_hold"  # the cap's reset time came (beat)


BROADCAST_TRANSITIONS: tuple[tuple[BroadcastStatus, BroadcastEvent, BroadcastStatus], ...] = (
    (B.SCHEDULED, BroadcastEvent.RELEASE_SCHEDULE, B.QUEUED),
    (B.SCHEDULED, BroadcastEvent.RESCHEDULE, B.SCHEDULED),
    (B.QUEUED, BroadcastEvent.START_SENDING, B.SENDING),
    (B.QUEUED, BroadcastEvent.SUBMIT, B.SUBMITTED),
    (B.SENDING, BroadcastEvent.SUBMIT, B.SUBMITTED),
    (B.PAUSED, BroadcastEvent.SUBMIT, B.SUBMITTED),  # the requests in flight at the pause were the last ones
    (B.QUEUED, BroadcastEvent.PAUSE, B.PAUSED),
    (B.SENDING, BroadcastEvent.PAUSE, B.PAUSED),
    (B.PAUSED, BroadcastEvent.RESUME, B.SENDING),
    (B.PAUSED, BroadcastEvent.RESUME, B.QUEUED),
    (B.SCHEDULED, BroadcastEvent.CANCEL, B.CANCELED),
    (B.QUEUED, BroadcastEvent.CANCEL, B.CANCELED),
    (B.SENDING, BroadcastEvent.CANCEL, B.CANCELED),
    (B.PAUSED, BroadcastEvent.CANCEL, B.CANCELED),
    (B.QUEUED, BroadcastEvent.COMPLETE, B.COMPLETED),
    (B.SENDING, BroadcastEvent.COMPLETE, B.COMPLETED),
    (B.SUBMITTED, BroadcastEvent.COMPLETE, B.COMPLETED),
    (B.CANCELED, BroadcastEvent.COMPLETE, B.CANCELED),  # keeps its status; gets completed_at and the callback
    (B.QUEUED, BroadcastEvent.HOLD, B.HELD),
    (B.SENDING, BroadcastEvent.HOLD, B.HELD),
    (B.HELD, BroadcastEvent.HOLD, B.HELD),  # another cap answer: the later resume time wins
    (B.HELD, BroadcastEvent.RELEASE_HOLD, B.SENDING),
    (B.HELD, BroadcastEvent.RELEASE_HOLD, B.QUEUED),
    (B.HELD, BroadcastEvent.RESUME, B.SENDING),  # an operator resumes it (after the circuit breaker)
    (B.HELD, BroadcastEvent.RESUME, B.QUEUED),
    (B.HELD, BroadcastEvent.CANCEL, B.CANCELED),
    (B.HELD, BroadcastEvent.SUBMIT, B.SUBMITTED),  # the requests in flight at the hold were the last ones
)

# How the API words each move in a refusal: "A broadcast that is completed cannot be paused; ..."
_ACTION_WORDS = {
    BroadcastEvent.PAUSE: "paused",
    BroadcastEvent.RESUME: "resumed",
    BroadcastEvent.CANCEL: "canceled",
    BroadcastEvent.RESCHEDULE: "rescheduled",
}


def sources_of(event: BroadcastEvent) -> list[str]:
    """The statuses a broadcast may have for `event` to apply (as SQL parameters), in the table's order."""
    ordered: list[str] = []
    for source, name, _ in BROADCAST_TRANSITIONS:
        if name == event and source.value not in ordered:
            ordered.append(source.value)
    return ordered


def targets_of(event: BroadcastEvent) -> frozenset[str]:
    return frozenset(target.value for _, name, target in BROADCAST_TRANSITIONS if name == event)


class InvalidTransitionError(Exception):
    """The broadcast's status does not allow the move the caller asked for; nothing changed."""

    def __init__(self, action: str, status: str, allowed: Sequence[str]) -> None:
        super().__init__(
            f"A broadcast that is {status} cannot be {action}; only one that is {' or '.join(allowed)} can."
        )
        self.action = action
        self.status = status


# Statuses whose pending rows a chunk may claim. `submitted` too: a delivery retry (30003/30008) is released
# back to `pending` after every recipient had its first outcome, and must still be sent.
SENDABLE_STATUSES = (B.QUEUED, B.SENDING, B.SUBMITTED)


def initial_status(send_at: datetime | None) -> BroadcastStatus:
    """The status intake stores: scheduled for a future `send_at`, queued otherwise."""
    return B.SCHEDULED if send_at is not None else B.QUEUED


def _rowcount(result: Any) -> int:
    return int(result.rowcount)


# --------------------------------------------------------------------------------- moves the API asks for


def _lock(session: Session, broadcast_id: uuid.UUID) -> Broadcast:
    broadcast = session.get(Broadcast, broadcast_id, with_for_update=True, populate_existing=True)
    assert broadcast is not None
    return broadcast


def _require(broadcast: Broadcast, event: BroadcastEvent) -> None:
    allowed = sources_of(event)
    if broadcast.status not in allowed:
        raise InvalidTransitionError(_ACTION_WORDS[event], broadcast.status, allowed)


def _now(session: Session) -> datetime:
    now: datetime = session.execute(text("SELECT now()")).scalar_one()
    return now


def pause(session: Session, broadcast_id: uuid.UUID) -> Broadcast:
    """queued | sending -> paused (the caller commits)."""
    broadcast = _lock(session, broadcast_id)
    _require(broadcast, BroadcastEvent.PAUSE)
    broadcast.status = B.PAUSED
    broadcast.paused_at = _now(session)
    broadcast.queued_at_twilio_when_stopped = message_store.count_queued_at_twilio(session, broadcast_id)
    return broadcast


def resume(session: Session, broadcast_id: uuid.UUID) -> Broadcast:
    """paused -> sending, or queued when nothing was sent yet (the caller commits)."""
    broadcast = _lock(session, broadcast_id)
    _require(broadcast, BroadcastEvent.RESUME)
    broadcast.status = B.SENDING if broadcast.first_send_at else B.QUEUED
    broadcast.paused_at = None
    broadcast.held_reason = broadcast.held_until = broadcast.held_at = None
    return broadcast


def cancel(session: Session, broadcast_id: uuid.UUID) -> Broadcast:
    """scheduled | queued | sending | paused -> canceled (the caller cancels the messages, then commits)."""
    broadcast = _lock(session, broadcast_id)
    _require(broadcast, BroadcastEvent.CANCEL)
    broadcast.status = B.CANCELED
    broadcast.canceled_at = _now(session)
    broadcast.queued_at_twilio_when_stopped = message_store.count_queued_at_twilio(session, broadcast_id)
    return broadcast


def hold(
    session: Session, broadcast_ids: Sequence[uuid.UUID] | None, reason: str, until: datetime | None
) -> list[uuid.UUID]:
    """queued | sending -> held, with the reason and when sending resumes (None: when an operator resumes it);
    `broadcast_ids` None holds every broadcast that may send (a daily cap holds the whole account). A broadcast
    already held keeps the later of the two resume times. Returns the ids now held (the caller commits)."""
    held = session.execute(
        text(
            "UPDATE broadcasts SET status = :held, held_at = now(), "
            "held_reason = CASE WHEN status = :held AND held_until IS NULL THEN held_reason ELSE :reason END, "
            "held_until = CASE "
            "  WHEN status = :held AND (held_until IS NULL OR :until IS NULL) THEN NULL "
            "  WHEN status = :held THEN greatest(held_until, :until) ELSE :until END "
            "WHERE status = ANY(CAST(:sources AS text[])) "
            "AND (CAST(:ids AS uuid[]) IS NULL OR id = ANY(CAST(:ids AS uuid[]))) RETURNING id"
        ),
        {
            "held": B.HELD,
            "reason": reason,
            "until": until,
            "sources": sources_of(BroadcastEvent.HOLD),
            "ids": None if broadcast_ids is None else list(broadcast_ids),
        },
    ).scalars()
    return list(held)


def release_due_holds(session: Session, now: datetime | None = None) -> list[uuid.UUID]:
    """held -> sending (queued if nothing was sent yet) once `held_until` has come; the caller commits, clears the
    halt flags and enqueues the pending chunks."""
    rows = session.execute(
        text(
            "UPDATE broadcasts SET status = CASE WHEN first_send_at IS NULL THEN :queued ELSE :sending END, "
            "held_reason = NULL, held_until = NULL, held_at = NULL "
            "WHERE status = :held AND held_until <= coalesce(CAST(:now AS timestamptz), now()) RETURNING id"
        ),
        {"queued": B.QUEUED, "sending": B.SENDING, "held": B.HELD, "now": now},
    ).scalars()
    return list(rows)


def reschedule(session: Session, broadcast_id: uuid.UUID, send_at: datetime) -> Broadcast:
    """A scheduled broadcast gets a new `send_at` (the caller commits)."""
    broadcast = _lock(session, broadcast_id)
    _require(broadcast, BroadcastEvent.RESCHEDULE)
    broadcast.send_at = send_at
    return broadcast


# ------------------------------------------------------------------------------ moves the pipeline makes


def release_scheduled(session: Session, now: datetime | None, limit: int = 100) -> list[uuid.UUID]:
    """scheduled -> queued for broadcasts whose send_at has come; returns their ids (the caller commits)."""
    rows = session.execute(
        text(
            "UPDATE broadcasts SET status = :queued WHERE id IN ("
            "  SELECT id FROM broadcasts WHERE status = ANY(CAST(:sources AS text[])) "
            "  AND send_at <= coalesce(:now, now()) ORDER BY send_at LIMIT :limit FOR UPDATE SKIP LOCKED) "
            "RETURNING id"
        ),
        {"queued": B.QUEUED, "sources": sources_of(BroadcastEvent.RELEASE_SCHEDULE), "now": now, "limit": limit},
    ).scalars()
    return list(rows)


def start_sending(session: Session, broadcast_id: uuid.UUID) -> bool:
    """queued -> sending at a chunk's claim, stamping `first_send_at`; locks the row (lock order: broadcast
    first, then messages)."""
    result = session.execute(
        text(
            "UPDATE broadcasts SET status = :sending, first_send_at = coalesce(first_send_at, now()) "
            "WHERE id = :broadcast_id AND status = ANY(CAST(:sources AS text[]))"
        ),
        {"broadcast_id": broadcast_id, "sending": B.SENDING, "sources": sources_of(BroadcastEvent.START_SENDING)},
    )
    return bool(_rowcount(result))


def lock_for_recording(session: Session, broadcast_id: uuid.UUID) -> None:
    """Lock the row before a chunk's outcomes are written (and stamp `last_send_at`): recorders of one
    broadcast then take turns, so the last one sees every other's committed rows when it checks `submit`."""
    session.execute(text("UPDATE broadcasts SET last_send_at = now() WHERE id = :id"), {"id": broadcast_id})


def test_broadcast_ids(session: Session, broadcast_ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
    """Which of these broadcasts were created with a test key (sent and reconciled through the test account)."""
    if not broadcast_ids:
        return set()
    return set(
        session.execute(
            text("SELECT id FROM broadcasts WHERE id = ANY(CAST(:ids AS uuid[])) AND test"),
            {"ids": [str(broadcast_id) for broadcast_id in broadcast_ids]},
        ).scalars()
    )


def lock(session: Session, broadcast_ids: Sequence[uuid.UUID]) -> None:
    """Lock broadcast rows in id order before touching their messages (the service-wide lock order)."""
    if broadcast_ids:
        session.execute(
            text("SELECT id FROM broadcasts WHERE id = ANY(CAST(:ids AS uuid[])) ORDER BY id FOR UPDATE"),
            {"ids": sorted(str(broadcast_id) for broadcast_id in broadcast_ids)},
        )


def submit_if_finished(session: Session, broadcast_id: uuid.UUID) -> bool:
    """queued | sending | paused -> submitted once no message is pending, sending or unknown (every recipient
    has a Twilio outcome). Call it with the broadcast row locked."""
    result = session.execute(
        text(
            "UPDATE broadcasts SET status = :submitted, submitted_at = now() "
            "WHERE id = :id AND status = ANY(CAST(:sources AS text[])) AND NOT EXISTS ("
            "  SELECT 1 FROM messages WHERE broadcast_id = :id AND state = ANY(CAST(:unfinished AS text[])))"
        ),
        {
            "id": broadcast_id,
            "submitted": B.SUBMITTED,
            "sources": sources_of(BroadcastEvent.SUBMIT),
            "unfinished": [state.value for state in UNFINISHED_MESSAGE_STATES],
        },
    )
    return bool(_rowcount(result))


def complete_finished(
    session: Session,
    idle_seconds: float,
    limit: int,
    work_left_states: Sequence[str],
    awaiting_receipt_states: Sequence[str],
) -> list[tuple[uuid.UUID, str | None]]:
    """-> completed (a canceled one keeps its status) for every unfinished broadcast with no message in
    `work_left_states` and either none awaiting a receipt or no receipt for `idle_seconds` since it was
    submitted; returns (id, callback_url) of each (the caller commits, then notifies)."""
    rows = session.execute(
        text(
            "UPDATE broadcasts AS b SET status = CASE WHEN b.status = :canceled THEN b.status ELSE :completed END, "
            "completed_at = now(), "
            # The completion callback, if one was asked for, is due at once (shared.receipts.completion).
            "callback_due_at = CASE WHEN b.callback_url IS NULL THEN NULL ELSE now() END "
            "WHERE b.id IN (SELECT id FROM broadcasts WHERE completed_at IS NULL ORDER BY created_at LIMIT :limit "
            # A broadcast row being recorded is skipped this time, never waited for.
            "               FOR UPDATE SKIP LOCKED) "
            "AND b.completed_at IS NULL AND b.status = ANY(CAST(:sources AS text[])) "
            "AND NOT EXISTS (SELECT 1 FROM messages m "
            "                WHERE m.broadcast_id = b.id AND m.state = ANY(CAST(:work_left AS text[]))) "
            "AND (NOT EXISTS (SELECT 1 FROM messages m "
            "                 WHERE m.broadcast_id = b.id AND m.state = ANY(CAST(:awaiting AS text[]))) "
            "     OR (b.submitted_at IS NOT NULL AND greatest(b.submitted_at, b.last_send_at, b.last_receipt_at) "
            "         < now() - make_interval(secs => :idle))) "
            "RETURNING b.id, b.callback_url"
        ),
        {
            "completed": B.COMPLETED,
            "canceled": B.CANCELED,
            "sources": sources_of(BroadcastEvent.COMPLETE),
            "limit": limit,
            "work_left": list(work_left_states),
            "awaiting": list(awaiting_receipt_states),
            "idle": float(idle_seconds),
        },
    ).all()
    return [(row.id, row.callback_url) for row in rows]


# ------------------------------------------------------------------------------------ other columns of the row


def mark_enqueued(session: Session, broadcast_id: uuid.UUID, *, only_if_unset: bool = False) -> bool:
    """Stamp `enqueued_at`: every chunk task has been handed to the broker."""
    result = session.execute(
        text(
            "UPDATE broadcasts SET enqueued_at = now() WHERE id = :id AND (NOT :only_if_unset OR enqueued_at IS NULL)"
        ),
        {"id": broadcast_id, "only_if_unset": only_if_unset},
    )
    return bool(_rowcount(result))


def mark_chunks_released(session: Session, broadcast_id: uuid.UUID, released: int) -> None:
    """Chunks 0 .. released - 1 are handed to the broker (shared.sending.windows); the mark only moves forward."""
    session.execute(
        text("UPDATE broadcasts SET chunks_released = greatest(chunks_released, :released) WHERE id = :id"),
        {"released": released, "id": broadcast_id},
    )


def record_intake_counts(session: Session, broadcast: Broadcast, opted_out: int, deferred: int) -> None:
    """The recipients intake found opted out, and those quiet hours would defer at send time."""
    session.execute(
        text("UPDATE broadcasts SET recipients_opted_out = :opted_out, recipients_deferred = :deferred WHERE id = :id"),
        {"opted_out": opted_out, "deferred": deferred, "id": broadcast.id},
    )
    broadcast.recipients_opted_out = opted_out
    broadcast.recipients_deferred = deferred


def record_receipt_times(session: Session, latest_by_broadcast: Mapping[uuid.UUID, datetime]) -> None:
    """Move each broadcast's `last_receipt_at` forward to the latest receipt applied for it."""
    if latest_by_broadcast:
        session.execute(
            text(
                "UPDATE broadcasts AS b SET last_receipt_at = greatest(b.last_receipt_at, v.received_at) "
                "FROM unnest(CAST(:ids AS uuid[]), CAST(:received AS timestamptz[])) AS v(id, received_at) "
                "WHERE b.id = v.id"
            ),
            {"ids": [str(b) for b in latest_by_broadcast], "received": list(latest_by_broadcast.values())},
        )


def start_callback_attempt(session: Session, broadcast_id: uuid.UUID, attempt: int, lease_seconds: float) -> None:
    """Count the attempt and push its due time past its lease: a worker killed mid-POST leaves it due again then."""
    session.execute(
        text(
            "UPDATE broadcasts SET callback_attempts = :attempt, "
            "callback_due_at = now() + make_interval(secs => :lease) WHERE id = :id"
        ),
        {"attempt": attempt, "lease": float(lease_seconds), "id": broadcast_id},
    )


def schedule_callback(session: Session, broadcast_id: uuid.UUID, delay_seconds: float | None) -> None:
    """The next POST is due after `delay_seconds`; None: no more POSTs (given up)."""
    session.execute(
        text(
            "UPDATE broadcasts SET callback_due_at = CASE WHEN CAST(:delay AS float8) IS NULL THEN NULL "
            "ELSE now() + make_interval(secs => CAST(:delay AS float8)) END WHERE id = :id"
        ),
        {"delay": delay_seconds, "id": broadcast_id},
    )


def mark_callback_sent(session: Session, broadcast_id: uuid.UUID) -> None:
    session.execute(
        text("UPDATE broadcasts SET callback_sent_at = now(), callback_due_at = NULL WHERE id = :id"),
        {"id": broadcast_id},
    )


def due_callbacks(session: Session, limit: int = 100) -> list[uuid.UUID]:
    """Completed broadcasts whose completion callback is due (index ix_broadcasts_callback_due), earliest first."""
    rows = session.execute(
        text(
            "SELECT id FROM broadcasts WHERE callback_due_at <= now() AND callback_sent_at IS NULL "
            "ORDER BY callback_due_at LIMIT :limit"
        ),
        {"limit": limit},
    ).scalars()
    return list(rows)


# ------------------------------------------------------------------------------------------- data protection


def completed_before(session: Session, cutoff: datetime, limit: int) -> list[uuid.UUID]:
    """Completed broadcasts not yet redacted whose completion is older than `cutoff` (oldest first)."""
    rows = session.execute(
        text(
            "SELECT id FROM broadcasts WHERE completed_at < :cutoff AND redacted_at IS NULL "
            "ORDER BY completed_at LIMIT :limit"
        ),
        {"cutoff": cutoff, "limit": limit},
    ).scalars()
    return list(rows)


def mark_redacted(session: Session, broadcast_id: uuid.UUID) -> None:
    """Retention finished the broadcast's messages: remove its body and the invalid input it sampled (which
    may hold numbers), and stamp `redacted_at`. Counts, options and times stay."""
    session.execute(
        text(
            "UPDATE broadcasts SET body = '', invalid_sample = '[]'::jsonb, redacted_at = now() "
            "WHERE id = :id AND redacted_at IS NULL"
        ),
        {"id": broadcast_id},
    )
