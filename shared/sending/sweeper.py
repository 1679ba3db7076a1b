"""Periodic recovery (`sms.sweep`): what makes "every recipient sent exactly once" survive crashes.

1. Broadcasts stored but never enqueued (a crash between commit and enqueue): enqueue their released chunks
   that still have pending rows and fill their window (shared.sending.windows).
2. Broadcasts past their deadline: their unsent messages become `expired`.
3. Windows: every broadcast holding chunks back gets its window filled again (a top-up lost with its worker).
4. Released chunks with recipients still `pending`, idle past the grace period (a worker died holding the task, or
   Redis lost the queue): enqueue them again (a duplicate is harmless: claims skip). While `sms.send` has a
   backlog, a pending chunk may just be waiting its turn, so the longer SWEEPER_BUSY_GRACE_SECONDS applies, each
   chunk is re-enqueued at most once per that period, at the head of the queue; steady traffic never keeps a lost
   chunk waiting for good.
5. Reconciliation: claims whose lease expired (a worker died mid-send) and `unknown` sends. Twilio's whole list
   of messages to that number (queued ones included) decides, by the identity rule of
   shared.sending.reconciliation: found -> `accepted` with its SID; not found -> `pending`, sent again.

One sweep at a time across all beats and workers (a Redis lock).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from celery import Celery
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.broadcasts import store as broadcast_store
from shared.broadcasts.templates import parse_template
from shared.compliance.phone_numbers import mask_phone_number
from shared.messages import store as message_store
from shared.platform.db import session_scope
from shared.platform.models import BroadcastStatus, MessageState
from shared.platform.task_queue import SEND_QUEUE, enqueue_chunks
from shared.sending.chunks import SendingResources
from shared.sending.claims import expire_unsent_messages
from shared.sending.concurrency import ConcurrencyLimiter, SlotPool
from shared.sending.reconciliation import LostClaim, candidate_sids, match_lost_claims
from shared.sending.windows import DEFAULT_WINDOW_CHUNKS, release_chunks, top_up_windows
from shared.twilio.accounts import TestAccountNotConfigured
from shared.twilio.gateway import TwilioGateway, TwilioLookupError, TwilioMessage

logger = logging.getLogger(__name__)

SWEEP_LOCK_KEY = "bulksms:sweeper-lock"
# Unix time of the latest sweep beat scheduled: `bulksms doctor` reads it to tell whether beat is alive.
SWEEP_HEARTBEAT_KEY = "bulksms:sweeper-heartbeat"
SWEEP_HEARTBEAT_TTL_SECONDS = 86_400
# A broadcast the API committed this recently may still be being enqueued by the API itself.
UNENQUEUED_AGE_SECONDS = 5
# Rows reconciled per sweep, and Twilio lookups in flight at once for them (inside the global cap).
RECONCILE_BATCH_SIZE = 500
RECONCILE_CONCURRENCY = 20


@dataclass
class SweepReport:
    skipped: bool = False  # another sweep held the lock
    broadcasts_enqueued: int = 0
    chunks_requeued: int = 0
    reconciled_accepted: int = 0
    reconciled_pending: int = 0
    expired_claims: int = 0  # claims that expired mid-send (`sending` rows past their lease)
    lookups_failed: int = 0
    broadcasts_submitted: int = 0
    chunks_released: int = 0  # windows topped up after a lost top-up
    messages_expired: int = 0  # unsent messages of broadcasts past their deadline


@dataclass(frozen=True, slots=True)
class _Suspect:
    id: int
    broadcast_id: uuid.UUID
    chunk_number: int
    to_number: str
    state: str
    attempts: int
    claimed_until: datetime
    body: str

    def lost_claim(self, lease: timedelta) -> LostClaim:
        return LostClaim(self.id, self.to_number, self.body, self.claimed_until, lease)


def enqueue_forgotten_broadcasts(
    session: Session, app: Celery, older_than_seconds: float, normal_window: int = DEFAULT_WINDOW_CHUNKS
) -> int:
    """Broadcasts with `enqueued_at IS NULL` for a while: publish their released chunks that still have pending
    rows and fill their window (shared.sending.windows)."""
    broadcasts = session.execute(
        text(
            # Scheduled broadcasts wait for their send_at (shared.broadcasts.control releases them); paused and
            # canceled ones must not be sent.
            "SELECT id FROM broadcasts WHERE enqueued_at IS NULL AND status IN (:queued, :sending) "
            "AND created_at < now() - make_interval(secs => :age) ORDER BY created_at LIMIT 100 "
            "FOR UPDATE SKIP LOCKED"
        ),
        {"age": float(older_than_seconds), "queued": BroadcastStatus.QUEUED, "sending": BroadcastStatus.SENDING},
    ).scalars()
    count = 0
    for broadcast_id in list(broadcasts):
        release = release_chunks(session, broadcast_id, normal_window, restart=True)
        enqueue_chunks(app, broadcast_id, release.chunks)
        broadcast_store.mark_enqueued(session, broadcast_id)
        logger.warning("broadcast %s was never enqueued: enqueued %d chunks", broadcast_id, len(release.chunks))
        count += 1
    return count


def broadcasts_past_deadline(session: Session, limit: int = 100) -> list[uuid.UUID]:
    """Unfinished broadcasts whose deadline has passed (their unsent messages are expired)."""
    rows = session.execute(
        text(
            "SELECT id FROM broadcasts WHERE completed_at IS NULL AND deadline < now() + interval '1 second' "
            "AND status = ANY(CAST(:statuses AS text[])) ORDER BY deadline LIMIT :limit"
        ),
        {
            "statuses": [*(status.value for status in broadcast_store.SENDABLE_STATUSES), BroadcastStatus.PAUSED],
            "limit": limit,
        },
    ).scalars()
    return list(rows)


def expire_past_deadlines(resources: SendingResources, report: SweepReport) -> None:
    """Every unsent message (pending, deferred, awaiting a delivery retry) of a broadcast past its deadline becomes
    `expired`, whichever chunk it is in, released or not; one transaction per broadcast."""
    with session_scope(resources.session_factory) as session:
        broadcast_ids = broadcasts_past_deadline(session)
    for broadcast_id in broadcast_ids:
        with session_scope(resources.session_factory) as session:
            expired = expire_unsent_messages(session, broadcast_id)
        if expired:
            report.messages_expired += expired
            logger.info("broadcast %s: deadline passed, %d unsent messages expired", broadcast_id, expired)


def idle_pending_chunks(session: Session, idle_seconds: float, limit: int = 20_000) -> list[tuple[uuid.UUID, int]]:
    """(broadcast, chunk) pairs with `pending` rows untouched for `idle_seconds`, of enqueued broadcasts."""
    rows = session.execute(
        text(
            # Driven from the unfinished broadcasts (a small partial index) so each lookup of pending rows is
            # an index range on (broadcast_id, 'pending'), never a scan of every message ever sent.
            "SELECT m.broadcast_id, m.chunk_number "
            "FROM broadcasts b JOIN messages m ON m.broadcast_id = b.id AND m.state = :pending "
            "WHERE b.completed_at IS NULL AND b.enqueued_at IS NOT NULL "
            "AND b.status IN (:queued, :sending, :submitted) "
            # Chunks not yet released wait for their window (shared.sending.windows), not for the sweeper.
            "AND m.chunk_number < b.chunks_released "
            "AND m.updated_at < now() - make_interval(secs => :idle) "
            # Rows deferred by quiet hours wait for their not_before (sms.release_deferred enqueues them).
            "AND (m.not_before IS NULL OR m.not_before <= now()) "
            # Longest idle first: behind a backlog they are put at its head in this order.
            "GROUP BY m.broadcast_id, m.chunk_number ORDER BY max(m.updated_at), m.broadcast_id, m.chunk_number "
            "LIMIT :limit"
        ),
        {
            "pending": MessageState.PENDING,
            "idle": float(idle_seconds),
            "limit": limit,
            "queued": BroadcastStatus.QUEUED,
            "sending": BroadcastStatus.SENDING,
            # a released delivery retry is pending in a submitted broadcast
            "submitted": BroadcastStatus.SUBMITTED,
        },
    ).all()
    return [(row.broadcast_id, row.chunk_number) for row in rows]


def requeue_chunks(app: Celery, chunks: list[tuple[uuid.UUID, int]], *, ahead: bool = False) -> None:
    """Enqueue the chunks again; `ahead`: at the head of the queue, the first of `chunks` to be taken first."""
    if ahead:
        # Each push goes in front of the previous one: push the last first, so the first ends up at the head.
        for broadcast_id, run in _runs_by_broadcast(list(reversed(chunks))):
            enqueue_chunks(app, broadcast_id, run, ahead=True)
        return
    by_broadcast: dict[uuid.UUID, list[int]] = defaultdict(list)
    for broadcast_id, chunk_number in chunks:
        by_broadcast[broadcast_id].append(chunk_number)
    for broadcast_id, chunk_numbers in by_broadcast.items():
        enqueue_chunks(app, broadcast_id, sorted(set(chunk_numbers)), ahead=ahead)


def _runs_by_broadcast(chunks: list[tuple[uuid.UUID, int]]) -> list[tuple[uuid.UUID, list[int]]]:
    """Consecutive chunks of one broadcast grouped, the order kept."""
    runs: list[tuple[uuid.UUID, list[int]]] = []
    for broadcast_id, chunk_number in chunks:
        if runs and runs[-1][0] == broadcast_id:
            runs[-1][1].append(chunk_number)
        else:
            runs.append((broadcast_id, [chunk_number]))
    return runs


def messages_to_reconcile(session: Session, grace_seconds: float, limit: int) -> list[_Suspect]:
    """`sending` rows past their lease and `unknown` rows, once their lease ended `grace_seconds` ago."""
    rows = session.execute(
        text(
            "SELECT m.id, m.broadcast_id, m.chunk_number, m.to_number, m.state, m.attempts, m.claimed_until, "
            "b.body, b.is_template, m.variables FROM messages m JOIN broadcasts b ON b.id = m.broadcast_id "
            "WHERE m.state IN (:sending, :unknown) "
            "AND m.claimed_until < now() - make_interval(secs => :grace) "
            "ORDER BY m.claimed_until LIMIT :limit"
        ),
        {
            "sending": MessageState.SENDING,
            "unknown": MessageState.UNKNOWN,
            "grace": float(grace_seconds),
            "limit": limit,
        },
    ).all()
    return [
        _Suspect(
            row.id,
            row.broadcast_id,
            row.chunk_number,
            row.to_number,
            row.state,
            row.attempts,
            row.claimed_until,
            # A template's message was rendered for its recipient: Twilio has that text, not the template.
            parse_template(row.body).render(row.variables) if row.is_template else row.body,
        )
        for row in rows
    ]


async def _look_up(
    gateway: TwilioGateway, limiter: ConcurrencyLimiter, numbers: set[str]
) -> dict[str, list[TwilioMessage] | TwilioLookupError]:
    """For each number: every message the account has for it (all pages, queued ones included), or the error."""
    gate = asyncio.Semaphore(RECONCILE_CONCURRENCY)
    found: dict[str, list[TwilioMessage] | TwilioLookupError] = {}

    async with SlotPool(limiter) as slots:

        async def look_up_one(number: str) -> None:
            # One slot for the whole lookup: its pages are read one after the other.
            async with gate, slots.slot() as _:
                try:
                    found[number] = await gateway.messages_to(number)
                except TwilioLookupError as error:
                    found[number] = error

        await asyncio.gather(*(look_up_one(number) for number in sorted(numbers)))
    return found


def _apply_reconciliation(
    session: Session,
    broadcast_id: uuid.UUID,
    looked_up: list[tuple[_Suspect, list[TwilioMessage]]],
    lease: timedelta,
    messaging_service_sid: str,
) -> tuple[int, int, bool, list[_Suspect]]:
    """Record what Twilio has, release what it lacks; returns (found, released, submitted, released suspects)."""
    # Broadcast row first: the same lock order as the recorders (shared.sending.claims), so no deadlock with them.
    broadcast_store.lock(session, [broadcast_id])
    listed = {suspect.id: messages for suspect, messages in looked_up}
    # Read inside this transaction, after the lock: SIDs recorded by other rows or archived attempts, including
    # those another broadcast's reconciliation committed a moment ago, are never taken again.
    owned = message_store.sids_on_record(session, sorted(candidate_sids(listed)))
    matches = match_lost_claims(
        [suspect.lost_claim(lease) for suspect, _ in looked_up], listed, owned, messaging_service_sid
    )
    accepted_count = released_count = 0
    released: list[_Suspect] = []
    for suspect, _ in looked_up:
        match = matches.get(suspect.id)
        if match is None:
            reason = f"not found at Twilio after the {suspect.state} claim expired; sending again"
            written = message_store.reconcile_not_found(session, suspect.id, suspect.state, suspect.attempts, reason)
            released_count += written
            if written:
                released.append(suspect)
            continue
        accepted_count += message_store.reconcile_found(
            session, suspect.id, suspect.state, suspect.attempts, match.sid, match.status or "accepted"
        )
    message_store.cancel_if_broadcast_canceled(session, broadcast_id, [suspect.id for suspect in released])
    submitted = broadcast_store.submit_if_finished(session, broadcast_id)
    return accepted_count, released_count, submitted, released


def reconcile_expired_claims(resources: SendingResources, app: Celery, report: SweepReport) -> None:
    """Ask Twilio about expired claims and `unknown` sends; record what it has, send again what it lacks."""
    settings = resources.settings
    with session_scope(resources.session_factory) as session:
        suspects = messages_to_reconcile(session, settings.sweeper_grace_seconds, RECONCILE_BATCH_SIZE)
    if not suspects:
        return
    report.expired_claims = sum(1 for suspect in suspects if suspect.state == MessageState.SENDING)
    with session_scope(resources.session_factory) as session:
        test_broadcasts = broadcast_store.test_broadcast_ids(session, {suspect.broadcast_id for suspect in suspects})
    # Each suspect is looked up in its own broadcast's account: a test message is never asked of the live one.
    lookups: dict[bool, dict[str, list[TwilioMessage] | TwilioLookupError]] = {}
    service_sids: dict[bool, str] = {}
    for is_test in (False, True):
        numbers = {suspect.to_number for suspect in suspects if (suspect.broadcast_id in test_broadcasts) == is_test}
        if not numbers:
            continue
        try:
            gateway, limiter = resources.channel(is_test)
        except TestAccountNotConfigured as error:
            logger.error("test messages not reconciled: %s", error)
            continue
        service_sids[is_test] = gateway.messaging_service_sid
        lookups[is_test] = resources.run(_look_up(gateway, limiter, numbers))

    per_broadcast: dict[uuid.UUID, list[tuple[_Suspect, list[TwilioMessage]]]] = {}
    for suspect in suspects:
        answer = lookups.get(suspect.broadcast_id in test_broadcasts, {}).get(suspect.to_number)
        if answer is None or isinstance(answer, TwilioLookupError):
            # Undecided: an incomplete answer is never "not at Twilio". The next sweep asks again.
            report.lookups_failed += 1
            logger.warning("could not look up %s at Twilio: %s", mask_phone_number(suspect.to_number), answer)
            continue
        per_broadcast.setdefault(suspect.broadcast_id, []).append((suspect, answer))

    lease = timedelta(seconds=settings.claim_lease_seconds)
    requeue: list[tuple[uuid.UUID, int]] = []
    for broadcast_id, looked_up in per_broadcast.items():
        with session_scope(resources.session_factory) as session:
            accepted_count, released_count, submitted, released = _apply_reconciliation(
                session, broadcast_id, looked_up, lease, service_sids[broadcast_id in test_broadcasts]
            )
        report.reconciled_accepted += accepted_count
        report.reconciled_pending += released_count
        report.broadcasts_submitted += int(submitted)
        requeue.extend({(broadcast_id, suspect.chunk_number) for suspect in released})
    if requeue:
        requeue_chunks(app, requeue)
    logger.warning(
        "reconciled %d messages (%d claims that expired mid-send): %d found at Twilio, %d back to pending, "
        "%d lookups failed",
        len(suspects),
        report.expired_claims,
        report.reconciled_accepted,
        report.reconciled_pending,
        report.lookups_failed,
    )


REQUEUED_KEY_PREFIX = "bulksms:requeued-chunk:"


async def _not_requeued_recently(
    resources: SendingResources, chunks: list[tuple[uuid.UUID, int]], period_seconds: float
) -> list[tuple[uuid.UUID, int]]:
    """The chunks not re-enqueued within `period_seconds` (marking them now): behind a backlog, an idle chunk that
    was re-enqueued is waiting in the queue again, and enqueueing it at every sweep would only grow the backlog."""
    async with resources.redis.pipeline(transaction=False) as pipeline:
        for broadcast_id, chunk_number in chunks:
            pipeline.set(f"{REQUEUED_KEY_PREFIX}{broadcast_id}:{chunk_number}", "1", nx=True, ex=int(period_seconds))
        marked = await pipeline.execute()
    return [chunk for chunk, newly in zip(chunks, marked, strict=True) if newly]


async def _queue_length(resources: SendingResources) -> int:
    return int(await resources.redis.llen(SEND_QUEUE))


async def _write_heartbeat(resources: SendingResources) -> None:
    await resources.redis.set(SWEEP_HEARTBEAT_KEY, f"{time.time():.3f}", ex=SWEEP_HEARTBEAT_TTL_SECONDS)


def sweep(resources: SendingResources, app: Celery) -> SweepReport:
    """One pass of every recovery, under a Redis lock so two sweeps never overlap."""
    settings = resources.settings
    report = SweepReport()
    lock = resources.redis.lock(SWEEP_LOCK_KEY, timeout=max(300, settings.sweeper_interval_seconds * 10))
    try:
        resources.run(_write_heartbeat(resources))
        acquired = resources.run(lock.acquire(blocking=False))
    except RedisError as error:
        logger.warning("sweep skipped: Redis unavailable (%s)", type(error).__name__)
        report.skipped = True
        return report
    if not acquired:
        report.skipped = True
        return report
    try:
        with session_scope(resources.session_factory) as session:
            report.broadcasts_enqueued = enqueue_forgotten_broadcasts(
                session, app, UNENQUEUED_AGE_SECONDS, settings.send_window_chunks
            )
        expire_past_deadlines(resources, report)
        with session_scope(resources.session_factory) as session:
            report.chunks_released = top_up_windows(session, app, settings.send_window_chunks)

        queued = resources.run(_queue_length(resources))
        grace = settings.sweeper_grace_seconds if queued == 0 else settings.sweeper_busy_grace_seconds
        with session_scope(resources.session_factory) as session:
            chunks = idle_pending_chunks(session, grace)
        if chunks and queued:
            chunks = resources.run(_not_requeued_recently(resources, chunks, settings.sweeper_busy_grace_seconds))
        if chunks:
            # Behind a backlog they go to its head: they have waited longest, and at its tail they would wait again.
            requeue_chunks(app, chunks, ahead=queued > 0)
            report.chunks_requeued = len(chunks)
            logger.warning(
                "re-enqueued %d idle chunks with pending recipients (%d tasks waiting in %s)",
                len(chunks),
                queued,
                SEND_QUEUE,
            )

        reconcile_expired_claims(resources, app, report)
    finally:
        try:
            resources.run(lock.release())
        except RedisError:  # also LockNotOwnedError: it expired while we worked
            logger.warning("could not release the sweep lock; it expires by itself")
    return report
