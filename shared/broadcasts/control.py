"""Pause, resume, cancel and reschedule a broadcast; release scheduled broadcasts and deferred messages (beat).

The moves themselves (and which are legal) belong to shared.broadcasts.store; this module adds what goes
with them: commits, the Redis halt flag, cancelling the unsent messages, enqueueing chunks again.
Workers learn of a pause or cancel through that flag (`halt_key`), read at most once a second per chunk,
and the claim itself refuses rows of a broadcast that may not send, so the database stays the truth.
"""

from __future__ import annotations

import contextlib
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
from sqlalchemy.orm import Session, sessionmaker

from shared.broadcasts import store as broadcast_store
from shared.broadcasts.store import InvalidTransitionError
from shared.compliance.opt_outs import skip_opted_out_at_intake
from shared.compliance.quiet_hours import QuietHours, count_deferred
from shared.messages import store as message_store
from shared.platform.models import Broadcast, BroadcastStatus
from shared.platform.task_queue import enqueue_chunks
from shared.sending.breaker import breaker_key
from shared.sending.windows import DEFAULT_WINDOW_CHUNKS, release_and_enqueue

__all__ = ["InvalidTransitionError"]

logger = logging.getLogger(__name__)

SCHEDULE_MAX_LEAD = timedelta(days=35)
# A flag outlives any chunk in flight; the claim guard covers what happens after it expires.
HALT_FLAG_TTL_SECONDS = 24 * 3600
HALT_CHECK_INTERVAL_SECONDS = 1.0


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


def pause_broadcast(session: Session, redis_client: redis.Redis, broadcast_id: uuid.UUID) -> Broadcast:
    """queued/sending -> paused (committed); in-flight requests finish, claimed-but-unsent rows go back to pending."""
    broadcast = broadcast_store.pause(session, broadcast_id)
    session.commit()
    redis_client.set(halt_key(broadcast_id), BroadcastStatus.PAUSED.value, ex=HALT_FLAG_TTL_SECONDS)
    return broadcast


def resume_broadcast(
    session: Session,
    redis_client: redis.Redis,
    celery_app: Celery,
    broadcast_id: uuid.UUID,
    normal_window: int = DEFAULT_WINDOW_CHUNKS,
) -> Broadcast:
    """paused | held -> sending (or queued if nothing was sent yet); its released chunks with pending rows are
    enqueued again and its window filled (shared.sending.windows). A broadcast its circuit breaker held starts
    with an empty window of outcomes."""
    broadcast = broadcast_store.resume(session, broadcast_id)
    session.commit()
    redis_client.delete(halt_key(broadcast_id), breaker_key(broadcast_id))  # a held one starts a fresh window
    release_and_enqueue(session, celery_app, broadcast_id, normal_window, restart=True)
    session.refresh(broadcast)
    return broadcast


def cancel_broadcast(session: Session, redis_client: redis.Redis, broadcast_id: uuid.UUID) -> Broadcast:
    """-> canceled: every pending (deferred included) and retry_scheduled message becomes `canceled`."""
    broadcast = broadcast_store.cancel(session, broadcast_id)
    message_store.cancel_unsent(session, broadcast_id)
    session.commit()
    redis_client.set(halt_key(broadcast_id), BroadcastStatus.CANCELED.value, ex=HALT_FLAG_TTL_SECONDS)
    return broadcast


def hold_broadcasts(
    session: Session,
    redis_client: redis.Redis,
    broadcast_ids: list[uuid.UUID] | None,
    reason: str,
    until: datetime | None,
) -> list[uuid.UUID]:
    """-> held (committed), and the halt flag so workers stop at once: a daily cap holds every broadcast that may
    send (`broadcast_ids` None) until `until`; a circuit breaker holds one until an operator resumes it."""
    held = broadcast_store.hold(session, broadcast_ids, reason, until)
    session.commit()
    for broadcast_id in held:
        redis_client.set(halt_key(broadcast_id), BroadcastStatus.HELD.value, ex=HALT_FLAG_TTL_SECONDS)
    if held:
        logger.warning("held %d broadcasts: %s (until %s)", len(held), reason, until or "an operator resumes")
    return held


def release_due_holds(
    session: Session,
    redis_client: redis.Redis,
    celery_app: Celery,
    now: datetime | None = None,
    normal_window: int = DEFAULT_WINDOW_CHUNKS,
) -> list[uuid.UUID]:
    """Beat: held broadcasts whose cap has reset send again (flag cleared, released chunks with pending rows
    published again and the window filled: shared.sending.windows)."""
    released = broadcast_store.release_due_holds(session, now)
    session.commit()
    for broadcast_id in released:
        redis_client.delete(halt_key(broadcast_id))
        release_and_enqueue(session, celery_app, broadcast_id, normal_window, restart=True)
    if released:
        logger.info("released %d held broadcasts: their daily cap has reset", len(released))
    return released


def reschedule_broadcast(
    session: Session, broadcast_id: uuid.UUID, send_at: datetime, now: datetime, min_lead_seconds: float
) -> Broadcast:
    """Move a scheduled broadcast to a new `send_at` (only while it is still scheduled)."""
    check_send_at(send_at, now, min_lead_seconds)
    broadcast = broadcast_store.reschedule(session, broadcast_id, send_at)
    if broadcast.deadline is not None and send_at >= broadcast.deadline:
        session.rollback()
        raise SendAtError("Must be before the broadcast's deadline.")
    session.commit()
    return broadcast


# ------------------------------------------------------------------------------------------ the halt flag


class HaltCheck:
    """`await check()` is True once the broadcast is paused or canceled; Redis is asked at most once a second.

    The flag is only a cache of the broadcast's status: when it is set, `halted_in_database` (PostgreSQL) confirms
    it. A flag that outlived the status (Redis failed while a resume deleted it) is removed, and sending goes on;
    trusted blindly, it made every chunk claim and release its rows in a loop until the flag expired.
    """

    def __init__(
        self,
        redis_client: redis.asyncio.Redis,
        broadcast_id: uuid.UUID,
        halted_in_database: Callable[[], bool] | None = None,
    ) -> None:
        self.redis = redis_client
        self.key = halt_key(broadcast_id)
        self.halted_in_database = halted_in_database
        self.checked_at = float("-inf")
        self.halted = False

    async def __call__(self) -> bool:
        if self.halted:
            return True
        if time.monotonic() - self.checked_at >= HALT_CHECK_INTERVAL_SECONDS:
            self.checked_at = time.monotonic()
            try:
                flagged = bool(await self.redis.exists(self.key))
            except redis.RedisError:
                return False  # the claim guard still stops the next chunk
            if flagged and self.halted_in_database is not None and not self.halted_in_database():
                logger.warning("%s was set but the broadcast is not paused or canceled: stale flag removed", self.key)
                with contextlib.suppress(redis.RedisError):  # else asked and confirmed again at the next check
                    await self.redis.delete(self.key)
                flagged = False
            self.halted = flagged
        return self.halted


def halted_in_database(session_factory: sessionmaker[Session], broadcast_id: uuid.UUID) -> bool:
    """True when PostgreSQL says the broadcast may not send now (the truth behind the halt flag): paused,
    canceled, held, or any other status a claim refuses, so a held broadcast's flag is never taken for stale."""
    with session_factory() as session:
        status = session.execute(
            text("SELECT status FROM broadcasts WHERE id = :id"), {"id": broadcast_id}
        ).scalar_one_or_none()
    return status is not None and status not in broadcast_store.SENDABLE_STATUSES


HaltCallable = Callable[[], Awaitable[bool]]


# ------------------------------------------------------------------------------------------------- beat


def release_scheduled_broadcasts(
    session: Session, celery_app: Celery, now: datetime | None = None, normal_window: int = DEFAULT_WINDOW_CHUNKS
) -> int:
    """Scheduled broadcasts whose send_at has come become `queued` and their first window of chunks is enqueued."""
    released = broadcast_store.release_scheduled(session, now)
    session.commit()
    for broadcast_id in released:
        # enqueued_at is still NULL: if the broker fails here, the sweeper's forgotten-broadcast pass enqueues it.
        release_and_enqueue(session, celery_app, broadcast_id, normal_window, restart=True)
        broadcast_store.mark_enqueued(session, broadcast_id)
        session.commit()
        logger.info("scheduled broadcast %s released", broadcast_id)
    return len(released)


def release_due_deferred_chunks(session: Session, celery_app: Celery, limit: int = 20_000) -> int:
    """Chunks whose quiet-hours deferral ended are enqueued again (index ix_messages_deferred)."""
    due = message_store.mark_deferred_chunks_due(
        session, [status.value for status in broadcast_store.SENDABLE_STATUSES], limit
    )
    session.commit()
    chunks: dict[uuid.UUID, set[int]] = defaultdict(set)
    for broadcast_id, chunk_number in due:
        chunks[broadcast_id].add(chunk_number)
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
        broadcast_store.record_intake_counts(session, broadcast, len(skipped), deferred)
