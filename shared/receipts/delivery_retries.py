"""Releasing delivery retries: messages whose receipt earned a new attempt wait in PostgreSQL until due.

The status consumer (shared.receipts.events) puts a message in `retry_scheduled` with a `retry_due_at`; beat runs
`release_and_enqueue_due_retries` every few seconds. Each batch, in one transaction, archives the current attempt
into `message_attempts` (its SID keeps receiving late callbacks there) and resets the message to `pending`; after
the commit the chunks are enqueued, and the ordinary chunk claim sends attempt n+1 with a new SID. Rows are taken
with FOR UPDATE SKIP LOCKED and updated only while still `retry_scheduled`, so two concurrent releases never
produce two attempts. A lost enqueue is harmless: the sweeper re-enqueues idle pending chunks.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from celery import Celery
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from shared.platform.db import session_scope
from shared.platform.models import BroadcastStatus, MessageState
from shared.platform.task_queue import enqueue_chunks

logger = logging.getLogger(__name__)

RELEASE_BATCH_SIZE = 1_000
# One run releases at most this many batches, then returns its worker process; the next beat continues.
MAX_BATCHES_PER_RUN = 20


@dataclass(frozen=True, slots=True)
class ReleasedMessage:
    id: int
    broadcast_id: uuid.UUID
    chunk_number: int
    archived_attempt: int  # the attempt now in `message_attempts`; the next claim sends attempt + 1


@dataclass
class ReleaseReport:
    released: int = 0
    chunks_enqueued: int = 0
    enqueue_failed: bool = False  # the rows are pending anyway: the sweeper re-enqueues idle chunks
    broadcasts: set[uuid.UUID] = field(default_factory=set)


def release_due_retries(
    session: Session, limit: int = RELEASE_BATCH_SIZE, now: datetime | None = None
) -> list[ReleasedMessage]:
    """Archive the current attempt of up to `limit` due retries and reset them to `pending` (caller commits)."""
    rows = session.execute(
        text(
            # ix_messages_retry_due (partial, retry_due_at IS NOT NULL): only scheduled retries are ever read.
            "SELECT id, broadcast_id, chunk_number, attempts, twilio_sid, twilio_status, error_code, error_message, "
            "sent_at, coalesce(final_at, last_receipt_at, updated_at) AS final_at "
            "FROM messages WHERE retry_due_at <= coalesce(CAST(:now AS timestamptz), now()) AND state = :scheduled "
            "ORDER BY retry_due_at LIMIT :limit FOR UPDATE SKIP LOCKED"
        ),
        {"now": now, "scheduled": MessageState.RETRY_SCHEDULED, "limit": limit},
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
            # A late callback can schedule a retry after its broadcast was canceled: such a message is canceled
            # here instead of sent again, or it would sit in `pending` forever and the broadcast never complete.
            "UPDATE messages AS m SET state = CASE WHEN b.status = :canceled_broadcast THEN :canceled "
            "ELSE :pending END, "
            "twilio_sid = NULL, twilio_status = NULL, error_code = NULL, "
            "error_message = NULL, retry_due_at = NULL, final_at = NULL, sent_at = NULL, claimed_until = NULL, "
            "updated_at = now() "
            "FROM broadcasts AS b "
            "WHERE b.id = m.broadcast_id AND m.id = ANY(CAST(:ids AS bigint[])) AND m.state = :scheduled "
            "RETURNING m.id, m.broadcast_id, m.chunk_number, m.attempts, m.state"
        ),
        {
            "ids": [row.id for row in rows],
            "pending": MessageState.PENDING,
            "canceled": MessageState.CANCELED,
            "canceled_broadcast": BroadcastStatus.CANCELED,
            "scheduled": MessageState.RETRY_SCHEDULED,
        },
    ).all()
    return [
        ReleasedMessage(row.id, row.broadcast_id, row.chunk_number, row.attempts)
        for row in released
        if row.state == MessageState.PENDING
    ]


def chunks_of(released: list[ReleasedMessage]) -> dict[uuid.UUID, list[int]]:
    """The distinct chunk numbers to enqueue, per broadcast, in order."""
    chunks: dict[uuid.UUID, set[int]] = defaultdict(set)
    for message in released:
        chunks[message.broadcast_id].add(message.chunk_number)
    return {broadcast_id: sorted(numbers) for broadcast_id, numbers in chunks.items()}


def release_and_enqueue_due_retries(
    session_factory: sessionmaker[Session],
    app: Celery,
    *,
    batch_size: int = RELEASE_BATCH_SIZE,
    max_batches: int = MAX_BATCHES_PER_RUN,
) -> ReleaseReport:
    """Release due retries batch by batch, enqueueing each batch's chunks after its commit."""
    report = ReleaseReport()
    for _ in range(max_batches):
        with session_scope(session_factory) as session:
            released = release_due_retries(session, batch_size)
        if not released:
            break
        report.released += len(released)
        for broadcast_id, chunk_numbers in chunks_of(released).items():
            report.broadcasts.add(broadcast_id)
            try:
                enqueue_chunks(app, broadcast_id, chunk_numbers)
            except Exception as error:  # any broker failure: the sweeper re-enqueues idle pending chunks
                report.enqueue_failed = True
                logger.warning(
                    "released retries of broadcast %s but could not enqueue %d chunks (%s); the sweeper will",
                    broadcast_id,
                    len(chunk_numbers),
                    type(error).__name__,
                )
            else:
                report.chunks_enqueued += len(chunk_numbers)
        if len(released) < batch_size:
            break
    if report.released:
        logger.info(
            "released %d delivery retries of %d broadcasts (%d chunks enqueued)",
            report.released,
            len(report.broadcasts),
            report.chunks_enqueued,
        )
    return report
