"""Pause, resume, cancel and reschedule a broadcast; release scheduled broadcasts and deferred messages (beat).

States (docs/api.md): scheduled -> queued -> sending -> submitted -> completed; queued/sending <-> paused;
scheduled/queued/sending/paused -> canceled. Any other transition raises InvalidTransitionError (409).
Workers learn of a pause or cancel through a Redis flag (`halt_key`) they read at most once a second per chunk,
and the claim itself refuses rows of a broadcast that is not queued or sending, so the database stays the truth.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import redis
import redis.asyncio
from celery import Celery
from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.compliance.opt_outs import skip_opted_out_at_intake, skip_opted_out_in_chunk
from shared.compliance.quiet_hours import QuietHours, count_deferred, defer_quiet_rows
from shared.platform.models import Broadcast, BroadcastStatus, MessageState
from shared.platform.task_queue import enqueue_chunks

logger = logging.getLogger(__name__)

SCHEDULE_MAX_LEAD = timedelta(days=35)
# A flag outlives any chunk in flight; the claim guard covers what happens after it expires.
HALT_FLAG_TTL_SECONDS = 24 * 3600
HALT_CHECK_INTERVAL_SECONDS = 1.0
# Statuses whose pending rows may be claimed. `submitted` too: a delivery retry (30003/30008) is released back
# to `pending` after every recipient had its first outcome, and must still be sent.
SENDABLE_STATUSES = (BroadcastStatus.QUEUED, BroadcastStatus.SENDING, BroadcastStatus.SUBMITTED)
PAUSABLE_STATUSES = (BroadcastStatus.QUEUED, BroadcastStatus.SENDING)
CANCELABLE_STATUSES = (
    BroadcastStatus.SCHEDULED,
    BroadcastStatus.QUEUED,
    BroadcastStatus.SENDING,
    BroadcastStatus.PAUSED,
)


class InvalidTransitionError(Exception):
    def __init__(self, action: str, status: str, allowed: tuple[str, ...]) -> None:
        super().__init__(
            f"A broadcast that is {status} cannot be {action}; only one that is {' or '.join(allowed)} can."
        )
        self.action = action
        self.status = status


class SendAtError(ValueError):
    """`send_at` is too soon, too far ahead, or not a moment with an offset."""


def check_send_at(send_at: datetime, now: datetime, min_lead_seconds: float) -> None:
    if send_at.tzinfo is None:
        raise SendAtError("Must be an ISO-8601 time with an offset or Z.")
    if send_at < now + timedelta(seconds=min_lead_seconds):
        raise SendAtError(f"Must be at least {min_lead_seconds:g} seconds ahead.")
    if send_at > now + SCHEDULE_MAX_LEAD:
        raise SendAtError("Must be at most 35 days ahead.")


def halt_key(broadcast_id: uuid.UUID | str) -> str:
    return f"bulksms:broadcast:{broadcast_id}:halted"


def _lock(session: Session, broadcast_id: uuid.UUID) -> Broadcast:
    broadcast = session.get(Broadcast, broadcast_id, with_for_update=True, populate_existing=True)
    assert broadcast is not None
    return broadcast


def _require(broadcast: Broadcast, action: str, allowed: tuple[BroadcastStatus, ...]) -> None:
    if broadcast.status not in allowed:
        raise InvalidTransitionError(action, broadcast.status, tuple(str(status) for status in allowed))


def pause_broadcast(session: Session, redis_client: redis.Redis, broadcast_id: uuid.UUID) -> Broadcast:
    """queued/sending -> paused (committed); in-flight requests finish, claimed-but-unsent rows go back to pending."""
    broadcast = _lock(session, broadcast_id)
    _require(broadcast, "paused", PAUSABLE_STATUSES)
    broadcast.status = BroadcastStatus.PAUSED
    broadcast.paused_at = session.execute(text("SELECT now()")).scalar_one()
    session.commit()
    redis_client.set(halt_key(broadcast_id), BroadcastStatus.PAUSED.value, ex=HALT_FLAG_TTL_SECONDS)
    return broadcast


def resume_broadcast(
    session: Session, redis_client: redis.Redis, celery_app: Celery, broadcast_id: uuid.UUID
) -> Broadcast:
    """paused -> sending (or queued if nothing was sent yet); every chunk with pending rows is enqueued again."""
    broadcast = _lock(session, broadcast_id)
    _require(broadcast, "resumed", (BroadcastStatus.PAUSED,))
    broadcast.status = BroadcastStatus.SENDING if broadcast.first_send_at else BroadcastStatus.QUEUED
    broadcast.paused_at = None
    session.commit()
    redis_client.delete(halt_key(broadcast_id))
    enqueue_pending_chunks(session, celery_app, broadcast_id)
    return broadcast


def cancel_broadcast(session: Session, redis_client: redis.Redis, broadcast_id: uuid.UUID) -> Broadcast:
    """-> canceled: every pending (deferred included) and retry_scheduled message becomes `canceled`."""
    broadcast = _lock(session, broadcast_id)
    _require(broadcast, "canceled", CANCELABLE_STATUSES)
    broadcast.status = BroadcastStatus.CANCELED
    broadcast.canceled_at = session.execute(text("SELECT now()")).scalar_one()
    session.execute(
        text(
            "UPDATE messages SET state = :canceled, claimed_until = NULL, retry_due_at = NULL, updated_at = now() "
            "WHERE broadcast_id = :id AND state = ANY(CAST(:unsent AS text[]))"
        ),
        {
            "id": broadcast_id,
            "canceled": MessageState.CANCELED,
            "unsent": [MessageState.PENDING.value, MessageState.RETRY_SCHEDULED.value],
        },
    )
    session.commit()
    redis_client.set(halt_key(broadcast_id), BroadcastStatus.CANCELED.value, ex=HALT_FLAG_TTL_SECONDS)
    return broadcast


def reschedule_broadcast(
    session: Session, broadcast_id: uuid.UUID, send_at: datetime, now: datetime, min_lead_seconds: float
) -> Broadcast:
    """Move a scheduled broadcast to a new `send_at` (only while it is still scheduled)."""
    check_send_at(send_at, now, min_lead_seconds)
    broadcast = _lock(session, broadcast_id)
    _require(broadcast, "rescheduled", (BroadcastStatus.SCHEDULED,))
    broadcast.send_at = send_at
    session.commit()
    return broadcast


def cancel_leftovers_of_canceled(session: Session, broadcast_id: uuid.UUID, message_ids: list[int]) -> int:
    """Rows a halted send or a reconciliation put back to `pending` after a cancel become `canceled` too."""
    if not message_ids:
        return 0
    canceled = session.execute(
        text(
            "UPDATE messages SET state = :canceled, claimed_until = NULL, updated_at = now() "
            "WHERE id = ANY(CAST(:ids AS bigint[])) AND state = :pending "
            "AND EXISTS (SELECT 1 FROM broadcasts WHERE id = :broadcast_id AND status = :canceled)"
        ),
        {
            "ids": message_ids,
            "broadcast_id": broadcast_id,
            "canceled": MessageState.CANCELED,
            "pending": MessageState.PENDING,
        },
    ).rowcount  # type: ignore[attr-defined]
    return int(canceled)


def enqueue_pending_chunks(session: Session, celery_app: Celery, broadcast_id: uuid.UUID) -> int:
    chunk_numbers = list(
        session.execute(
            text(
                "SELECT DISTINCT chunk_number FROM messages WHERE broadcast_id = :id AND state = :pending "
                "ORDER BY chunk_number"
            ),
            {"id": broadcast_id, "pending": MessageState.PENDING},
        ).scalars()
    )
    session.commit()
    if chunk_numbers:
        enqueue_chunks(celery_app, broadcast_id, chunk_numbers)
    return len(chunk_numbers)


# ------------------------------------------------------------------------------------------------ the claim


def prepare_chunk_claim(
    session: Session, broadcast_id: uuid.UUID, chunk_number: int, now: datetime | None = None
) -> bool:
    """Before a chunk's claim: False when the broadcast may not send now (scheduled, paused, canceled, done);
    otherwise skip rows whose number opted out and defer rows inside quiet hours (set-based, per chunk)."""
    row = session.execute(
        text("SELECT status, quiet_hours_start, quiet_hours_end FROM broadcasts WHERE id = :id"),
        {"id": broadcast_id},
    ).one_or_none()
    if row is None or row.status not in SENDABLE_STATUSES:
        return False
    skip_opted_out_in_chunk(session, broadcast_id, chunk_number)
    quiet = QuietHours.of(row.quiet_hours_start, row.quiet_hours_end)
    if quiet is not None:
        current = now or session.execute(text("SELECT now()")).scalar_one()
        defer_quiet_rows(session, broadcast_id, chunk_number, quiet, current)
    return True


class HaltCheck:
    """`await check()` is True once the broadcast is paused or canceled; Redis is asked at most once a second."""

    def __init__(self, redis_client: redis.asyncio.Redis, broadcast_id: uuid.UUID) -> None:
        self.redis = redis_client
        self.key = halt_key(broadcast_id)
        self.checked_at = float("-inf")
        self.halted = False

    async def __call__(self) -> bool:
        if self.halted:
            return True
        if time.monotonic() - self.checked_at >= HALT_CHECK_INTERVAL_SECONDS:
            self.checked_at = time.monotonic()
            try:
                self.halted = bool(await self.redis.exists(self.key))
            except redis.RedisError:
                return False  # the claim guard still stops the next chunk
        return self.halted


HaltCallable = Callable[[], Awaitable[bool]]


# ------------------------------------------------------------------------------------------------- beat


def release_scheduled_broadcasts(session: Session, celery_app: Celery, now: datetime | None = None) -> int:
    """Scheduled broadcasts whose send_at has come become `queued` and their chunks are enqueued."""
    rows = session.execute(
        text(
            "UPDATE broadcasts SET status = :queued WHERE id IN ("
            "  SELECT id FROM broadcasts WHERE status = :scheduled AND send_at <= coalesce(:now, now()) "
            "  ORDER BY send_at LIMIT 100 FOR UPDATE SKIP LOCKED) "
            "RETURNING id"
        ),
        {"queued": BroadcastStatus.QUEUED, "scheduled": BroadcastStatus.SCHEDULED, "now": now},
    ).scalars()
    released = list(rows)
    session.commit()
    for broadcast_id in released:
        # enqueued_at is still NULL: if the broker fails here, the sweeper's forgotten-broadcast pass enqueues it.
        enqueue_pending_chunks(session, celery_app, broadcast_id)
        session.execute(text("UPDATE broadcasts SET enqueued_at = now() WHERE id = :id"), {"id": broadcast_id})
        session.commit()
        logger.info("scheduled broadcast %s released", broadcast_id)
    return len(released)


# A deferred chunk enqueued this recently is not enqueued again (its task may still be in the queue).
DEFERRED_REENQUEUE_AFTER_SECONDS = 10


def release_due_deferred_chunks(session: Session, celery_app: Celery, limit: int = 20_000) -> int:
    """Chunks whose quiet-hours deferral ended are enqueued again (index ix_messages_deferred)."""
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
            "pending": MessageState.PENDING,
            "after": float(DEFERRED_REENQUEUE_AFTER_SECONDS),
            "limit": limit,
            "sendable": [status.value for status in SENDABLE_STATUSES],
        },
    ).all()
    session.commit()
    chunks: dict[uuid.UUID, set[int]] = defaultdict(set)
    for row in rows:
        chunks[row.broadcast_id].add(row.chunk_number)
    for broadcast_id, chunk_numbers in chunks.items():
        enqueue_chunks(celery_app, broadcast_id, sorted(chunk_numbers))
    return sum(len(numbers) for numbers in chunks.values())


# ----------------------------------------------------------------------------------------------- intake


def apply_intake_rules(session: Session, broadcast: Broadcast, numbers: list[str], now: datetime | None = None) -> None:
    """After the COPY, in the intake transaction: skip opted-out numbers (one UPDATE, none when the list is
    empty) and count the recipients quiet hours would defer at send_at (or now)."""
    skipped = skip_opted_out_at_intake(session, broadcast.id)
    deferred = 0
    quiet = QuietHours.of(broadcast.quiet_hours_start, broadcast.quiet_hours_end)
    if quiet is not None:
        at = broadcast.send_at or now or datetime.now(UTC)
        excluded = set(skipped)
        deferred = count_deferred((number for number in numbers if number not in excluded), quiet, at)
    if skipped or deferred:
        session.execute(
            text(
                "UPDATE broadcasts SET recipients_opted_out = :skipped, recipients_deferred = :deferred WHERE id = :id"
            ),
            {"skipped": len(skipped), "deferred": deferred, "id": broadcast.id},
        )
        broadcast.recipients_opted_out = len(skipped)
        broadcast.recipients_deferred = deferred
