"""The message store: the only code that changes a message's state (and writes `message_attempts`).

Intake creates the rows (`pending`, with COPY); from then on every write goes through one of the named
transitions below. The legal moves are one table, `MESSAGE_TRANSITIONS` (from-state, event, to-state):
each transition's SQL only touches rows whose current state is a legal source of its event, and a target
outside the table raises `IllegalMessageTransition` before anything is written. docs/architecture.md draws
the table; tests/shared/messages/test_store.py tries every illegal move and sees it refused.

Callers keep the lock order of the whole service: the broadcast row first (shared.broadcasts.store), then
its message rows.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.platform.models import BroadcastStatus, MessageState
from shared.receipts.delivery_status import advances
from shared.twilio.error_codes import UNCOUNTED_RETRY_CODES

S = MessageState


class MessageEvent(enum.StrEnum):
    CLAIM = "claim"  # a chunk task takes the row for one send, under a lease
    RECORD_OUTCOME = "record_outcome"  # Twilio's answer to the send request (or its absence)
    RELEASE = "release"  # never reached Twilio (rate limited, paused): back to pending
    RECONCILE_FOUND = "reconcile_found"  # an expired claim or ambiguous send that Twilio has
    RECONCILE_NOT_FOUND = "reconcile_not_found"  # one that Twilio does not have: send again
    RECEIPT = "receipt"  # a status callback for the current attempt
    SCHEDULE_RETRY = "schedule_retry"  # a callback whose error earns another attempt later
    RELEASE_RETRY = "release_retry"  # the retry fell due: the attempt is archived, the row pending again
    SKIP_OPTED_OUT = "skip_opted_out"  # the number is on the suppression list
    DEFER = "defer"  # quiet hours: stays pending with a `not_before`
    CANCEL = "cancel"  # the broadcast was canceled before this row was sent
    EXPIRE = "expire"  # the broadcast's deadline passed before this row was sent


# A receipt may arrive while our own record still says the request is in flight or ambiguous (the callback
# can overtake the recording), or after a reconciliation put the row back to pending.
_RECEIPT_SOURCES = (S.PENDING, S.SENDING, S.UNKNOWN, S.ACCEPTED, S.SENT, S.DELIVERED)

MESSAGE_TRANSITIONS: tuple[tuple[MessageState, MessageEvent, MessageState], ...] = (
    (S.PENDING, MessageEvent.CLAIM, S.SENDING),
    (S.SENDING, MessageEvent.RECORD_OUTCOME, S.ACCEPTED),
    (S.SENDING, MessageEvent.RECORD_OUTCOME, S.FAILED),
    (S.SENDING, MessageEvent.RECORD_OUTCOME, S.UNKNOWN),
    (S.SENDING, MessageEvent.RELEASE, S.PENDING),
    (S.SENDING, MessageEvent.RECONCILE_FOUND, S.ACCEPTED),
    (S.UNKNOWN, MessageEvent.RECONCILE_FOUND, S.ACCEPTED),
    (S.SENDING, MessageEvent.RECONCILE_NOT_FOUND, S.PENDING),
    (S.UNKNOWN, MessageEvent.RECONCILE_NOT_FOUND, S.PENDING),
    *(
        (source, MessageEvent.RECEIPT, target)
        for source in _RECEIPT_SOURCES
        for target in (S.ACCEPTED, S.SENT, S.DELIVERED, S.UNDELIVERED, S.FAILED)
    ),
    *((source, MessageEvent.SCHEDULE_RETRY, S.RETRY_SCHEDULED) for source in _RECEIPT_SOURCES),
    (S.RETRY_SCHEDULED, MessageEvent.RELEASE_RETRY, S.PENDING),
    (S.RETRY_SCHEDULED, MessageEvent.RELEASE_RETRY, S.CANCELED),  # its broadcast was canceled meanwhile
    (S.PENDING, MessageEvent.SKIP_OPTED_OUT, S.SKIPPED),
    (S.PENDING, MessageEvent.DEFER, S.PENDING),
    (S.PENDING, MessageEvent.CANCEL, S.CANCELED),
    (S.RETRY_SCHEDULED, MessageEvent.CANCEL, S.CANCELED),
    (S.PENDING, MessageEvent.EXPIRE, S.EXPIRED),
    (S.RETRY_SCHEDULED, MessageEvent.EXPIRE, S.EXPIRED),
)


class IllegalMessageTransition(ValueError):
    """A caller asked for a move the table does not allow; nothing was written."""


def sources_of(event: MessageEvent) -> list[str]:
    """The states a message may be in for `event` to apply to it (as SQL parameters)."""
    return sorted({source.value for source, name, _ in MESSAGE_TRANSITIONS if name == event})


def targets_of(event: MessageEvent) -> frozenset[str]:
    return frozenset(target.value for _, name, target in MESSAGE_TRANSITIONS if name == event)


def _check_targets(event: MessageEvent, states: Sequence[str]) -> None:
    illegal = set(states) - targets_of(event)
    if illegal:
        raise IllegalMessageTransition(f"{event} cannot lead to {sorted(illegal)}")


def _rowcount(result: Any) -> int:
    return int(result.rowcount)


# ------------------------------------------------------------------------------------------------ sending


@dataclass(frozen=True, slots=True)
class ClaimedMessage:
    id: int
    to_number: str
    attempts: int  # after the claim: identifies this claim (and goes into the status callback URL)
    variables: dict[str, str] | None = None  # a template broadcast's values for this recipient


def claim(session: Session, broadcast_id: uuid.UUID, chunk_number: int, lease_seconds: float) -> list[ClaimedMessage]:
    """pending -> sending for the chunk's due rows, with a lease; two claims never share a row."""
    rows = session.execute(
        text(
            "UPDATE messages SET state = :sending, claimed_until = now() + make_interval(secs => :lease), "
            "attempts = attempts + 1, updated_at = now() "
            "WHERE broadcast_id = :broadcast_id AND chunk_number = :chunk_number "
            "AND state = ANY(CAST(:sources AS text[])) "
            "AND (not_before IS NULL OR not_before <= now()) "
            "RETURNING id, to_number, attempts, variables"
        ),
        {
            "broadcast_id": broadcast_id,
            "chunk_number": chunk_number,
            "lease": float(lease_seconds),
            "sending": S.SENDING,
            "sources": sources_of(MessageEvent.CLAIM),
        },
    ).all()
    return [
        ClaimedMessage(id=row.id, to_number=row.to_number, attempts=row.attempts, variables=row.variables)
        for row in rows
    ]


@dataclass(frozen=True, slots=True)
class SendRecord:
    """What to write for one claimed message after its send: the state and what Twilio said."""

    message_id: int
    attempts: int  # the claim's attempt number: a row re-claimed since then is left alone
    state: str  # accepted, failed, unknown (record_outcome) or pending (release)
    twilio_sid: str | None = None
    twilio_status: str | None = None
    error_code: int | None = None
    error_message: str | None = None


def record_send_outcomes(session: Session, records: Sequence[SendRecord]) -> int:
    """sending -> accepted | failed | unknown | pending, only over rows this claim still owns; one UPDATE."""
    if not records:
        return 0
    _check_targets(MessageEvent.RECORD_OUTCOME, [r.state for r in records if r.state != S.PENDING])
    _check_targets(MessageEvent.RELEASE, [r.state for r in records if r.state == S.PENDING])
    result = session.execute(
        text(
            "UPDATE messages AS m SET state = v.state, twilio_sid = v.twilio_sid, "
            "twilio_status = v.twilio_status, error_code = v.error_code, "
            "error_message = v.error_message, "
            "sent_at = CASE WHEN v.state = :accepted THEN now() ELSE m.sent_at END, "
            "final_at = CASE WHEN v.state = :failed THEN now() ELSE m.final_at END, "
            "claimed_until = CASE WHEN v.state = :pending THEN NULL ELSE m.claimed_until END, "
            # `attempts` counts requests that reached Twilio: a release (20429, no connection, paused) gives the
            # claim's number back, so rate limits and pauses never use up delivery retries. Only this claim's
            # owner releases, so no late writer can hold the number meanwhile.
            "attempts = CASE WHEN v.state = :pending THEN m.attempts - 1 ELSE m.attempts END, "
            "updated_at = now() "
            "FROM unnest(CAST(:ids AS bigint[]), CAST(:attempts AS integer[]), CAST(:states AS text[]), "
            "CAST(:sids AS text[]), CAST(:twilio_statuses AS text[]), CAST(:error_codes AS integer[]), "
            "CAST(:error_messages AS text[])) "
            "AS v(id, attempts, state, twilio_sid, twilio_status, error_code, error_message) "
            "WHERE m.id = v.id AND m.attempts = v.attempts AND m.state = ANY(CAST(:sources AS text[]))"
        ),
        {
            "ids": [r.message_id for r in records],
            "attempts": [r.attempts for r in records],
            "states": [r.state for r in records],
            "sids": [r.twilio_sid for r in records],
            "twilio_statuses": [r.twilio_status for r in records],
            "error_codes": [r.error_code for r in records],
            "error_messages": [r.error_message for r in records],
            "accepted": S.ACCEPTED,
            "failed": S.FAILED,
            "pending": S.PENDING,
            # RECORD_OUTCOME and RELEASE have the same single source: the claim's `sending`.
            "sources": sources_of(MessageEvent.RECORD_OUTCOME),
        },
    )
    return _rowcount(result)


def reconcile_found(
    session: Session, message_id: int, state: str, attempts: int, twilio_sid: str, twilio_status: str
) -> int:
    """sending | unknown -> accepted with the SID Twilio has, only while the row is as the sweeper read it and no
    message row or archived attempt owns that SID yet (one Twilio message is one attempt's, never two)."""
    result = session.execute(
        text(
            "UPDATE messages SET state = :accepted, twilio_sid = :sid, twilio_status = :twilio_status, "
            "error_code = NULL, error_message = NULL, sent_at = coalesce(sent_at, now()), "
            "updated_at = now() "
            "WHERE id = :id AND state = :state AND attempts = :attempts AND state = ANY(CAST(:sources AS text[])) "
            "AND NOT EXISTS (SELECT 1 FROM messages AS owner WHERE owner.twilio_sid = :sid) "
            "AND NOT EXISTS (SELECT 1 FROM message_attempts AS attempt WHERE attempt.twilio_sid = :sid)"
        ),
        {
            "sources": sources_of(MessageEvent.RECONCILE_FOUND),
            "accepted": S.ACCEPTED,
            "sid": twilio_sid,
            "twilio_status": twilio_status,
            "id": message_id,
            "state": state,
            "attempts": attempts,
        },
    )
    return _rowcount(result)


def sids_on_record(session: Session, sids: Sequence[str]) -> set[str]:
    """Which of these Twilio SIDs a message row or an archived attempt already owns (both are unique indexes)."""
    if not sids:
        return set()
    owned = session.execute(
        text(
            "SELECT twilio_sid FROM messages WHERE twilio_sid = ANY(CAST(:sids AS text[])) "
            "UNION SELECT twilio_sid FROM message_attempts WHERE twilio_sid = ANY(CAST(:sids AS text[]))"
        ),
        {"sids": list(sids)},
    ).scalars()
    return set(owned)


def reconcile_not_found(session: Session, message_id: int, state: str, attempts: int, reason: str) -> int:
    """sending | unknown -> pending (Twilio does not have it), only while the row is as the sweeper read it."""
    result = session.execute(
        text(
            "UPDATE messages SET state = :pending, claimed_until = NULL, updated_at = now(), "
            "error_message = :reason WHERE id = :id AND state = :state AND attempts = :attempts "
            "AND state = ANY(CAST(:sources AS text[]))"
        ),
        {
            "pending": S.PENDING,
            "reason": reason,
            "id": message_id,
            "state": state,
            "attempts": attempts,
            "sources": sources_of(MessageEvent.RECONCILE_NOT_FOUND),
        },
    )
    return _rowcount(result)


# ----------------------------------------------------------------------------------------------- receipts


@dataclass(frozen=True, slots=True)
class ReceiptUpdate:
    """A message after a status callback for its current attempt (shared.receipts.events decides it)."""

    id: int
    state: str
    twilio_sid: str
    twilio_status: str
    error_code: int | None
    error_message: str | None
    retry_due_at: datetime | None
    final_at: datetime | None
    last_receipt_at: datetime


def apply_receipts(session: Session, updates: Sequence[ReceiptUpdate]) -> int:
    """receipt / schedule_retry: the current attempt's new state and status, in one UPDATE."""
    if not updates:
        return 0
    _check_targets(MessageEvent.RECEIPT, [u.state for u in updates if u.state != S.RETRY_SCHEDULED])
    columns = {name: [getattr(update, name) for update in updates] for name in ReceiptUpdate.__slots__}
    result = session.execute(
        text(
            "UPDATE messages AS m SET state = v.state, twilio_sid = v.twilio_sid, twilio_status = v.twilio_status, "
            "error_code = v.error_code, error_message = coalesce(v.error_message, m.error_message), "
            "retry_due_at = v.retry_due_at, final_at = coalesce(m.final_at, v.final_at), "
            "last_receipt_at = greatest(m.last_receipt_at, v.last_receipt_at), "
            "sent_at = coalesce(m.sent_at, v.last_receipt_at), updated_at = now() "
            "FROM unnest(CAST(:id AS bigint[]), CAST(:state AS text[]), CAST(:twilio_sid AS text[]), "
            "CAST(:twilio_status AS text[]), CAST(:error_code AS integer[]), CAST(:error_message AS text[]), "
            "CAST(:retry_due_at AS timestamptz[]), CAST(:final_at AS timestamptz[]), "
            "CAST(:last_receipt_at AS timestamptz[])) "
            "AS v(id, state, twilio_sid, twilio_status, error_code, error_message, retry_due_at, final_at, "
            "last_receipt_at) WHERE m.id = v.id AND m.state = ANY(CAST(:sources AS text[]))"
        ),
        # RECEIPT and SCHEDULE_RETRY share their sources.
        {**columns, "sources": sources_of(MessageEvent.RECEIPT)},
    )
    return _rowcount(result)


@dataclass(frozen=True, slots=True)
class AttemptReceipt:
    """The most advanced report of a callback batch for an archived (retried) attempt."""

    message_sid: str
    status: str
    error_code: int | None
    final: bool


def record_old_attempt_receipt(
    session: Session,
    message_id: int,
    attempt_number: int,
    receipt: AttemptReceipt,
) -> int:
    """A late callback for an attempt that was retried: written on its `message_attempts` row, never on the
    message (a newer attempt owns it); its status only moves forward."""
    session.execute(
        text(
            "INSERT INTO message_attempts (message_id, attempt_number, twilio_sid) VALUES (:id, :attempt, :sid) "
            "ON CONFLICT DO NOTHING"
        ),
        {"id": message_id, "attempt": attempt_number, "sid": receipt.message_sid},
    )
    row = session.execute(
        text(
            "SELECT twilio_sid, twilio_status FROM message_attempts "
            "WHERE message_id = :id AND attempt_number = :attempt FOR UPDATE"
        ),
        {"id": message_id, "attempt": attempt_number},
    ).one_or_none()
    if row is None or row.twilio_sid not in (None, receipt.message_sid):
        return 0
    if not advances(row.twilio_status, receipt.status):
        if row.twilio_sid is None:
            session.execute(
                text("UPDATE message_attempts SET twilio_sid = :sid WHERE message_id = :id AND attempt_number = :a"),
                {"sid": receipt.message_sid, "id": message_id, "a": attempt_number},
            )
        return 0
    session.execute(
        text(
            "UPDATE message_attempts SET twilio_sid = :sid, twilio_status = :status, "
            "error_code = coalesce(:code, error_code), final_at = CASE WHEN :final THEN coalesce(final_at, now()) "
            "ELSE final_at END WHERE message_id = :id AND attempt_number = :a"
        ),
        {
            "sid": receipt.message_sid,
            "status": receipt.status,
            "code": receipt.error_code,
            "final": receipt.final,
            "id": message_id,
            "a": attempt_number,
        },
    )
    return 1


@dataclass(frozen=True, slots=True)
class ReleasedRetry:
    id: int
    broadcast_id: uuid.UUID
    chunk_number: int
    archived_attempt: int  # the attempt now in `message_attempts`; the next claim sends attempt + 1


def release_due_retries(session: Session, limit: int = 1_000, now: datetime | None = None) -> list[ReleasedRetry]:
    """retry_scheduled -> pending for up to `limit` due retries, archiving the current attempt first.

    Rows are taken with FOR UPDATE SKIP LOCKED and updated only while still `retry_scheduled`, so two
    concurrent releases never produce two attempts. A retry whose broadcast was canceled meanwhile becomes
    `canceled` instead of pending (it would otherwise wait forever). The caller commits, then enqueues.
    """
    rows = session.execute(
        text(
            # ix_messages_retry_due (partial, retry_due_at IS NOT NULL): only scheduled retries are ever read.
            "SELECT id, broadcast_id, chunk_number, attempts, twilio_sid, twilio_status, error_code, error_message, "
            "sent_at, coalesce(final_at, last_receipt_at, updated_at) AS final_at "
            "FROM messages WHERE retry_due_at <= coalesce(CAST(:now AS timestamptz), now()) "
            "AND state = ANY(CAST(:sources AS text[])) "
            "ORDER BY retry_due_at LIMIT :limit FOR UPDATE SKIP LOCKED"
        ),
        {"now": now, "sources": sources_of(MessageEvent.RELEASE_RETRY), "limit": limit},
    ).all()
    if not rows:
        return []
    session.execute(
        text(
            "INSERT INTO message_attempts (message_id, attempt_number, twilio_sid, twilio_status, error_code, "
            "error_message, sent_at, final_at) "
            "SELECT * FROM unnest(CAST(:ids AS bigint[]), CAST(:attempts AS integer[]), CAST(:sids AS text[]), "
            "CAST(:statuses AS text[]), CAST(:codes AS integer[]), CAST(:error_messages AS text[]), "
            "CAST(:sent AS timestamptz[]), CAST(:final AS timestamptz[])) "
            # A late callback may have created the row first (matched by message id + attempt): fill its gaps.
            "ON CONFLICT (message_id, attempt_number) DO UPDATE SET "
            "twilio_sid = coalesce(message_attempts.twilio_sid, EXCLUDED.twilio_sid), "
            "twilio_status = coalesce(message_attempts.twilio_status, EXCLUDED.twilio_status), "
            "error_code = coalesce(message_attempts.error_code, EXCLUDED.error_code), "
            "error_message = coalesce(message_attempts.error_message, EXCLUDED.error_message), "
            "sent_at = coalesce(message_attempts.sent_at, EXCLUDED.sent_at), "
            "final_at = coalesce(message_attempts.final_at, EXCLUDED.final_at)"
        ),
        {
            "ids": [row.id for row in rows],
            "attempts": [row.attempts for row in rows],
            "sids": [row.twilio_sid for row in rows],
            "statuses": [row.twilio_status for row in rows],
            "codes": [row.error_code for row in rows],
            "error_messages": [row.error_message for row in rows],
            "sent": [row.sent_at for row in rows],
            "final": [row.final_at for row in rows],
        },
    )
    released = session.execute(
        text(
            "UPDATE messages AS m SET state = CASE WHEN b.status = :canceled_broadcast THEN :canceled "
            "ELSE :pending END, "
            "twilio_sid = NULL, twilio_status = NULL, error_code = NULL, "
            "error_message = NULL, retry_due_at = NULL, final_at = NULL, sent_at = NULL, claimed_until = NULL, "
            # Twilio answered a rate or cap code: that attempt was never transmitted and does not count.
            "uncounted_attempts = m.uncounted_attempts "
            "+ CASE WHEN m.error_code = ANY(CAST(:uncounted AS integer[])) THEN 1 ELSE 0 END, "
            "updated_at = now() "
            "FROM broadcasts AS b "
            "WHERE b.id = m.broadcast_id AND m.id = ANY(CAST(:ids AS bigint[])) "
            "AND m.state = ANY(CAST(:sources AS text[])) "
            "RETURNING m.id, m.broadcast_id, m.chunk_number, m.attempts, m.state"
        ),
        {
            "ids": [row.id for row in rows],
            "pending": S.PENDING,
            "canceled": S.CANCELED,
            "canceled_broadcast": BroadcastStatus.CANCELED,
            "uncounted": sorted(UNCOUNTED_RETRY_CODES),
            "sources": sources_of(MessageEvent.RELEASE_RETRY),
        },
    ).all()
    return [
        ReleasedRetry(row.id, row.broadcast_id, row.chunk_number, row.attempts)
        for row in released
        if row.state == S.PENDING
    ]


# ------------------------------------------------------------------------------------ compliance and control


SKIP_REASON_OPTED_OUT = "opted_out"


_SKIP_OPTED_OUT_SQL = (
    "UPDATE messages AS m SET state = :skipped, skip_reason = :reason, updated_at = now() "
    "FROM opted_out_numbers AS o "
    "WHERE m.broadcast_id = :broadcast_id AND m.state = ANY(CAST(:sources AS text[])) "
    "AND m.to_number = o.phone_number "
)
# The chunk's own range of ix_messages_broadcast_state_chunk_id: a claim never walks the whole broadcast.
_IN_CHUNK = "AND m.chunk_number = :chunk_number "
_RETURNING_NUMBERS = "RETURNING m.to_number"


def skip_opted_out(session: Session, broadcast_id: uuid.UUID, chunk_number: int | None = None) -> list[str]:
    """pending -> skipped for rows whose number is on the suppression list (the whole broadcast at intake,
    one chunk before its claim); returns the skipped numbers."""
    statement = _SKIP_OPTED_OUT_SQL + (_IN_CHUNK if chunk_number is not None else "") + _RETURNING_NUMBERS
    skipped = session.execute(
        text(statement),
        {
            "broadcast_id": broadcast_id,
            "chunk_number": chunk_number,
            "skipped": S.SKIPPED,
            "sources": sources_of(MessageEvent.SKIP_OPTED_OUT),
            "reason": SKIP_REASON_OPTED_OUT,
        },
    ).scalars()
    return list(skipped)


@dataclass(frozen=True, slots=True)
class DueRow:
    id: int
    to_number: str


def lock_due_pending_rows(session: Session, broadcast_id: uuid.UUID, chunk_number: int, now: datetime) -> list[DueRow]:
    """The chunk's pending rows that are due at `now`, locked (others' locked rows skipped) for a deferral."""
    rows = session.execute(
        text(
            "SELECT id, to_number FROM messages WHERE broadcast_id = :broadcast_id "
            "AND state = ANY(CAST(:sources AS text[])) "
            "AND chunk_number = :chunk_number AND (not_before IS NULL OR not_before <= :now) "
            "FOR UPDATE SKIP LOCKED"
        ),
        {
            "broadcast_id": broadcast_id,
            "chunk_number": chunk_number,
            "sources": sources_of(MessageEvent.DEFER),
            "now": now,
        },
    ).all()
    return [DueRow(row.id, row.to_number) for row in rows]


def defer(session: Session, message_ids: Sequence[int], not_before: Sequence[datetime]) -> int:
    """pending -> pending with a `not_before`: quiet hours hold these rows until then."""
    if not message_ids:
        return 0
    result = session.execute(
        text(
            "UPDATE messages AS m SET not_before = v.not_before, updated_at = now() "
            "FROM unnest(CAST(:ids AS bigint[]), CAST(:until AS timestamptz[])) AS v(id, not_before) "
            "WHERE m.id = v.id AND m.state = ANY(CAST(:sources AS text[]))"
        ),
        {"ids": list(message_ids), "until": list(not_before), "sources": sources_of(MessageEvent.DEFER)},
    )
    return _rowcount(result)


# A deferred chunk enqueued this recently is not enqueued again (its task may still be in the queue).
DEFERRED_REENQUEUE_AFTER_SECONDS = 10


def mark_deferred_chunks_due(
    session: Session, sendable_statuses: Sequence[str], limit: int
) -> list[tuple[uuid.UUID, int]]:
    """Pending rows whose quiet-hours deferral ended, of broadcasts that may send: stamped (so the next pass
    leaves them to the task about to be enqueued) and returned as (broadcast, chunk) pairs."""
    rows = session.execute(
        text(
            "UPDATE messages AS m SET updated_at = now() "
            "FROM broadcasts AS b "
            "WHERE m.id IN (SELECT id FROM messages WHERE state = :pending AND not_before IS NOT NULL "
            "               AND not_before <= now() AND updated_at < now() - make_interval(secs => :after) "
            "               ORDER BY not_before LIMIT :limit FOR UPDATE SKIP LOCKED) "
            "AND b.id = m.broadcast_id AND b.status = ANY(CAST(:sendable AS text[])) "
            "RETURNING m.broadcast_id, m.chunk_number"
        ),
        {
            "pending": S.PENDING,
            "after": float(DEFERRED_REENQUEUE_AFTER_SECONDS),
            "limit": limit,
            "sendable": list(sendable_statuses),
        },
    ).all()
    return [(row.broadcast_id, row.chunk_number) for row in rows]


def count_queued_at_twilio(session: Session, broadcast_id: uuid.UUID) -> int:
    """Messages Twilio holds queued as far as we know: accepted with no `sent` (or later) callback applied yet
    (Twilio's `queued` callback leaves the message `sent` in our states, with twilio_status `queued`). Close, not
    exact: callbacks applied a second late count a few too many, and a chunk's answers are recorded when the chunk
    ends, so a chunk in flight at the stop counts a few too few."""
    return int(
        session.execute(
            text(
                "SELECT count(*) FROM messages WHERE broadcast_id = :id AND (state = ANY(CAST(:states AS text[])) "
                "OR (state = :sent AND twilio_status = ANY(CAST(:waiting AS text[]))))"
            ),
            {
                "id": broadcast_id,
                "states": [MessageState.ACCEPTED.value],
                "sent": MessageState.SENT.value,
                "waiting": ["accepted", "queued"],
            },
        ).scalar_one()
    )


def cancel_unsent(session: Session, broadcast_id: uuid.UUID) -> int:
    """pending | retry_scheduled -> canceled for every row of the broadcast (deferred rows included)."""
    result = session.execute(
        text(
            "UPDATE messages SET state = :canceled, claimed_until = NULL, retry_due_at = NULL, updated_at = now() "
            "WHERE broadcast_id = :id AND state = ANY(CAST(:sources AS text[]))"
        ),
        {"id": broadcast_id, "canceled": S.CANCELED, "sources": sources_of(MessageEvent.CANCEL)},
    )
    return _rowcount(result)


def cancel_if_broadcast_canceled(session: Session, broadcast_id: uuid.UUID, message_ids: Sequence[int]) -> int:
    """Rows a halted send or a reconciliation just put back to `pending` become `canceled` when their
    broadcast was canceled meanwhile (the cancel itself could not see them: they were `sending`)."""
    if not message_ids:
        return 0
    result = session.execute(
        text(
            "UPDATE messages SET state = :canceled, claimed_until = NULL, updated_at = now() "
            "WHERE id = ANY(CAST(:ids AS bigint[])) AND state = :pending AND state = ANY(CAST(:sources AS text[])) "
            "AND EXISTS (SELECT 1 FROM broadcasts WHERE id = :broadcast_id AND status = :canceled_broadcast)"
        ),
        {
            "ids": list(message_ids),
            "broadcast_id": broadcast_id,
            "canceled": S.CANCELED,
            "canceled_broadcast": BroadcastStatus.CANCELED,
            "pending": S.PENDING,
            "sources": sources_of(MessageEvent.CANCEL),
        },
    )
    return _rowcount(result)


DEADLINE_PASSED_MESSAGE = "not sent: the broadcast's deadline passed"


def expire_past_deadline(session: Session, broadcast_id: uuid.UUID, message_ids: Sequence[int] | None = None) -> int:
    """pending | retry_scheduled -> expired once the broadcast's deadline has passed, or is less than a second
    away (by the database's clock):
    every such row of the broadcast, or only `message_ids` (rows a send just released unsent). Call it with the
    broadcast row locked; returns the rows expired (none before the deadline)."""
    result = session.execute(
        text(
            "UPDATE messages SET state = :expired, claimed_until = NULL, retry_due_at = NULL, final_at = now(), "
            "error_message = :reason, updated_at = now() "
            "WHERE broadcast_id = :broadcast_id AND state = ANY(CAST(:sources AS text[])) "
            "AND (CAST(:ids AS bigint[]) IS NULL OR id = ANY(CAST(:ids AS bigint[]))) "
            # Less than Twilio's smallest ValidityPeriod (1 s) left counts as past: nothing could be sent.
            "AND EXISTS (SELECT 1 FROM broadcasts WHERE id = :broadcast_id "
            "            AND deadline < now() + interval '1 second')"
        ),
        {
            "broadcast_id": broadcast_id,
            "ids": None if message_ids is None else list(message_ids),
            "expired": S.EXPIRED,
            "reason": DEADLINE_PASSED_MESSAGE,
            "sources": sources_of(MessageEvent.EXPIRE),
        },
    )
    return _rowcount(result)


# ------------------------------------------------------------------------------------------- data protection
# Neither operation changes a message's state except `erase_number`'s cancel of unsent rows (the `cancel` move):
# counts, outcomes and SIDs stay, only the person's number and template values go.


@dataclass(frozen=True, slots=True)
class RedactedBatch:
    last_id: int  # the next batch starts after it
    redacted: int  # rows that still had a number or template values


def redact_broadcast_batch(
    session: Session, broadcast_id: uuid.UUID, after_id: int, limit: int
) -> RedactedBatch | None:
    """Retention: NULL the number and template values of up to `limit` messages of the broadcast with ids above
    `after_id` (in id order); None when no message is left after `after_id`."""
    row = session.execute(
        text(
            "WITH batch AS (SELECT id FROM messages WHERE broadcast_id = :broadcast_id AND id > :after "
            "               ORDER BY id LIMIT :limit), "
            "redacted AS (UPDATE messages SET to_number = NULL, variables = NULL "
            "             WHERE id IN (SELECT id FROM batch) "
            "             AND (to_number IS NOT NULL OR variables IS NOT NULL) RETURNING 1) "
            "SELECT (SELECT max(id) FROM batch) AS last_id, (SELECT count(*) FROM redacted) AS redacted"
        ),
        {"broadcast_id": broadcast_id, "after": after_id, "limit": limit},
    ).one()
    return None if row.last_id is None else RedactedBatch(int(row.last_id), int(row.redacted))


@dataclass(frozen=True, slots=True)
class NumberMessage:
    id: int
    broadcast_id: uuid.UUID
    state: str


def messages_to(session: Session, number: str) -> list[NumberMessage]:
    """Every message to `number`, in any broadcast (read only; erasure locks their broadcasts next)."""
    rows = session.execute(
        text("SELECT id, broadcast_id, state FROM messages WHERE to_number = :number ORDER BY id"),
        {"number": number},
    )
    return [NumberMessage(row.id, row.broadcast_id, row.state) for row in rows]


# The request may be at Twilio right now: the sweeper needs the number to reconcile it, so erasure waits.
IN_FLIGHT_STATES = (S.SENDING, S.UNKNOWN)


@dataclass(frozen=True, slots=True)
class ErasedMessages:
    message_ids: list[int]
    twilio_sids: list[str]  # current and archived attempts: what Twilio may still hold
    canceled: int  # unsent messages to the number, canceled so it is never sent
    in_flight: int  # > 0: nothing was written (the caller rolls back and asks to try again)


def erase_number(session: Session, number: str) -> ErasedMessages:
    """Erasure on request: cancel the unsent messages to `number` (pending, retry_scheduled -> canceled) and NULL
    the number and template values of every message to it. Call with their broadcast rows locked. Nothing is
    written while one of them is in flight (`in_flight` > 0)."""
    rows = session.execute(
        text("SELECT id, state, twilio_sid FROM messages WHERE to_number = :number ORDER BY id FOR UPDATE"),
        {"number": number},
    ).all()
    in_flight = sum(1 for row in rows if row.state in IN_FLIGHT_STATES)
    if not rows or in_flight:
        return ErasedMessages([], [], 0, in_flight)
    ids = [row.id for row in rows]
    canceled = session.execute(
        text(
            "UPDATE messages SET state = :canceled, claimed_until = NULL, retry_due_at = NULL, updated_at = now() "
            "WHERE id = ANY(CAST(:ids AS bigint[])) AND state = ANY(CAST(:sources AS text[]))"
        ),
        {"ids": ids, "canceled": S.CANCELED, "sources": sources_of(MessageEvent.CANCEL)},
    )
    archived = session.execute(
        text(
            "SELECT twilio_sid FROM message_attempts "
            "WHERE message_id = ANY(CAST(:ids AS bigint[])) AND twilio_sid IS NOT NULL"
        ),
        {"ids": ids},
    ).scalars()
    session.execute(
        text("UPDATE messages SET to_number = NULL, variables = NULL WHERE id = ANY(CAST(:ids AS bigint[]))"),
        {"ids": ids},
    )
    sids = sorted({row.twilio_sid for row in rows if row.twilio_sid} | set(archived))
    return ErasedMessages(ids, sids, _rowcount(canceled), 0)
