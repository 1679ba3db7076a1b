"""Claiming a chunk's recipients before a send, and recording what Twilio answered for each claim.

A chunk task claims only rows still `pending` (one UPDATE ... RETURNING in the message store), so a
redelivered or duplicated task finds nothing to do. Before the claim the chunk's rows are checked against the
suppression list and quiet hours, and nothing is claimed while the broadcast is scheduled, paused, canceled or
done. Outcomes are written in one bulk UPDATE guarded by the claim (`state = 'sending' AND attempts = <the
claim's attempt>`), so a late writer never overwrites what the sweeper decided. docs/sending.md: the state
machine and the exactly-once argument.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.broadcasts import store as broadcast_store
from shared.compliance.opt_outs import SOURCE_SEND_21610, add_opt_outs, skip_opted_out_in_chunk
from shared.compliance.quiet_hours import QuietHours, defer_quiet_rows
from shared.messages import store as message_store
from shared.messages.store import ClaimedMessage, SendRecord
from shared.platform.models import MessageState
from shared.twilio.error_codes import SEND_OPT_OUT_CODES
from shared.twilio.gateway import Accepted, Ambiguous, Permanent, Retryable, SendOutcome

__all__ = ["ClaimedMessage", "claim_pending_messages", "expire_unsent_messages", "record_send_outcomes"]


def prepare_chunk_claim(
    session: Session, broadcast_id: uuid.UUID, chunk_number: int, now: datetime | None = None
) -> bool:
    """Before a chunk's claim: False when the broadcast may not send now (scheduled, paused, canceled, done);
    otherwise skip rows whose number opted out and defer rows inside quiet hours (set-based, per chunk).

    The broadcast row is locked first (the lock order of docs/architecture.md): skipping and deferring lock
    message rows, and a cancel, which locks the broadcast then its messages, must not hold them the other way.
    """
    row = session.execute(
        text(
            # Less than a second left: no request could carry a ValidityPeriod that ends in time.
            "SELECT status, quiet_hours_start, quiet_hours_end, "
            "deadline < now() + interval '1 second' AS past_deadline "
            "FROM broadcasts WHERE id = :id FOR NO KEY UPDATE"
        ),
        {"id": broadcast_id},
    ).one_or_none()
    if row is None or row.status not in broadcast_store.SENDABLE_STATUSES:
        return False
    if row.past_deadline:
        expire_unsent_messages(session, broadcast_id)
        return False
    skip_opted_out_in_chunk(session, broadcast_id, chunk_number)
    quiet = QuietHours.of(row.quiet_hours_start, row.quiet_hours_end)
    if quiet is not None:
        current = now or session.execute(text("SELECT now()")).scalar_one()
        defer_quiet_rows(session, broadcast_id, chunk_number, quiet, current)
    return True


def expire_unsent_messages(session: Session, broadcast_id: uuid.UUID) -> int:
    """Past the broadcast's deadline: every unsent message becomes `expired`, and the broadcast `submitted` when
    nothing else is left (broadcast row locked first, the service's lock order)."""
    broadcast_store.lock(session, [broadcast_id])
    expired = message_store.expire_past_deadline(session, broadcast_id)
    broadcast_store.submit_if_finished(session, broadcast_id)
    return expired


def claim_pending_messages(
    session: Session, broadcast_id: uuid.UUID, chunk_number: int, lease_seconds: float, now: datetime | None = None
) -> list[ClaimedMessage]:
    """Atomically move this chunk's `pending` rows to `sending` with a lease; two claims never share a row.

    `now` (default: the database's) is the quiet-hours clock; tests freeze it.
    """
    if not prepare_chunk_claim(session, broadcast_id, chunk_number, now):
        return []
    broadcast_store.start_sending(session, broadcast_id)  # queued -> sending the first time (row already locked)
    claimed = message_store.claim(session, broadcast_id, chunk_number, lease_seconds)
    if not claimed:
        # Nothing to send here (opted out since intake, or sent already): if this was the last chunk, nobody
        # records an outcome, so the broadcast is marked submitted here (the row is locked).
        broadcast_store.submit_if_finished(session, broadcast_id)
    return claimed


def send_record(message: ClaimedMessage, outcome: SendOutcome) -> SendRecord:
    """What the message store writes for one claimed message after Twilio's answer (or its absence)."""
    if isinstance(outcome, Accepted):
        return SendRecord(message.id, message.attempts, MessageState.ACCEPTED, outcome.sid, outcome.status)
    if isinstance(outcome, Permanent):
        return SendRecord(
            message.id, message.attempts, MessageState.FAILED, error_code=outcome.code, error_message=outcome.message
        )
    if isinstance(outcome, Ambiguous):
        return SendRecord(message.id, message.attempts, MessageState.UNKNOWN, error_message=outcome.reason)
    return SendRecord(
        message.id, message.attempts, MessageState.PENDING, error_message=f"released after retries: {outcome.reason}"
    )


def record_send_outcomes(
    session: Session, broadcast_id: uuid.UUID, results: Sequence[tuple[ClaimedMessage, SendOutcome]]
) -> int:
    """Write every outcome in one UPDATE, only over rows this claim still owns; returns the rows written.

    Also stamps the broadcast's `last_send_at` and marks it `submitted` when nothing is left unfinished.
    """
    # Lock the broadcast row first: recorders of one broadcast then take turns, so the "nothing unfinished"
    # check below always sees the other recorders' committed rows and the last one marks the broadcast.
    broadcast_store.lock_for_recording(session, broadcast_id)
    written = 0
    if results:
        written = message_store.record_send_outcomes(session, [send_record(m, o) for m, o in results])
        record_opted_out_numbers(session, results)
        released_ids = [message.id for message, outcome in results if isinstance(outcome, Retryable)]
        message_store.cancel_if_broadcast_canceled(session, broadcast_id, released_ids)
        # Released because the deadline came before their request could start: never sent, and never will be.
        message_store.expire_past_deadline(session, broadcast_id, released_ids)
    broadcast_store.submit_if_finished(session, broadcast_id)
    return written


# Twilio refuses a number whose owner replied STOP (21610); we remember it (the opt-out list).


def record_opted_out_numbers(session: Session, results: Sequence[tuple[ClaimedMessage, SendOutcome]]) -> int:
    """Add the numbers Twilio refused with 21610 to `opted_out_numbers` (already there: left as is)."""
    numbers = {
        message.to_number
        for message, outcome in results
        if isinstance(outcome, Permanent) and outcome.code in SEND_OPT_OUT_CODES
    }
    reason = "Twilio refused the send with error 21610"
    added = add_opt_outs(session, numbers, source=SOURCE_SEND_21610, reason=reason)
    return len(added.added)
