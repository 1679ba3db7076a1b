"""The Celery tasks: thin wrappers that load ids, call one function in `shared`, and decide about retrying.

What an outage of PostgreSQL or Redis means for each task is declared where it is registered (worker.task_base).
"""

from __future__ import annotations

import logging
import random
import time

from shared.broadcasts.control import release_due_deferred_chunks, release_due_holds, release_scheduled_broadcasts
from shared.compliance.retention import apply_retention
from shared.messages import counts as message_counts
from shared.platform.task_queue import (
    APPLY_RETENTION_TASK,
    COMPACT_MESSAGE_COUNTS_TASK,
    COMPLETE_BROADCASTS_TASK,
    NOTIFY_COMPLETION_TASK,
    RELEASE_DEFERRED_TASK,
    RELEASE_DUE_RETRIES_TASK,
    RELEASE_SCHEDULED_TASK,
    SEND_CHUNK_TASK,
    SWEEP_TASK,
    TRIM_STATUS_STREAM_TASK,
    enqueue_completion_callbacks,
)
from shared.receipts.completion import complete_broadcasts, deliver_completion_callback, due_completion_callbacks
from shared.receipts.delivery_retries import release_and_enqueue_due_retries
from shared.receipts.status_queue import trim_acknowledged
from shared.sending.chunks import send_chunk
from shared.sending.sweeper import sweep
from shared.sending.windows import release_and_enqueue
from worker.app import celery_app, settings
from worker.status_tasks import status_redis_client
from worker.task_base import BulksmsTask, RetryLater, SkipThisRun, worker_task

logger = logging.getLogger(__name__)

# When the retry budget ran out (20429 storm, Twilio unreachable), come back for the released rows this much
# later; jittered so the chunks of a broadcast do not all return at once.
RELEASED_RETRY_COUNTDOWN_SECONDS = (5.0, 15.0)


# Rows already sent when PostgreSQL or Redis fails are recorded or reconciled; rows still pending are what the
# retry is for.
@worker_task(SEND_CHUNK_TASK, on_infrastructure_error=RetryLater(), max_retries=None)
def send_chunk_task(self: BulksmsTask, broadcast_id: str, chunk_number: int) -> None:
    """Send one chunk (about 100 recipients) of a broadcast; safe to run more than once."""
    broadcast_uuid = self.broadcast_uuid(broadcast_id)
    if broadcast_uuid is None:
        return
    result = send_chunk(self.resources, broadcast_uuid, int(chunk_number))
    if result.released:
        raise self.retry(countdown=random.uniform(*RELEASED_RETRY_COUNTDOWN_SECONDS))
    # Done with this chunk: the broadcast's next chunk(s) take its place in the queue (shared.sending.windows).
    with self.session() as session:
        release_and_enqueue(session, celery_app, broadcast_uuid, settings.send_window_chunks)


@worker_task(SWEEP_TASK, on_infrastructure_error=SkipThisRun("sweep not finished"))
def sweep_task(self: BulksmsTask) -> None:
    """Recover forgotten broadcasts, idle chunks, expired claims and `unknown` sends (see shared.sending.sweeper)."""
    report = sweep(self.resources, celery_app)
    if not report.skipped:
        logger.debug("sweep: %s", report)


@worker_task(RELEASE_DUE_RETRIES_TASK, on_infrastructure_error=SkipThisRun("due retries not released"))
def release_due_retries_task(self: BulksmsTask) -> None:
    """Send the delivery retries that fell due: archive each attempt, reset to pending, enqueue the chunks."""
    release_and_enqueue_due_retries(self.session_factory, celery_app, now=settings.clock_now())


@worker_task(COMPLETE_BROADCASTS_TASK, on_infrastructure_error=SkipThisRun("broadcast completion not checked"))
def complete_broadcasts_task(self: BulksmsTask) -> None:
    """Mark finished broadcasts `completed`, then queue the completion callbacks that are due (theirs, retries
    whose wait ended, attempts whose worker died)."""
    with self.session() as session:
        completed = complete_broadcasts(session, settings.completion_idle_seconds)
    with self.session() as session:
        due = due_completion_callbacks(session)
    for broadcast in completed:
        logger.info("broadcast %s completed", broadcast.id)
    enqueue_completion_callbacks(celery_app, due)


@worker_task(NOTIFY_COMPLETION_TASK, on_infrastructure_error=RetryLater(), max_retries=None)
def notify_completion_task(self: BulksmsTask, broadcast_id: str) -> None:
    """POST the signed completion summary to the broadcast's callback_url once; a failure makes it due again later
    (beat enqueues it then), and after the last attempt it is given up."""
    broadcast_uuid = self.broadcast_uuid(broadcast_id)
    if broadcast_uuid is None:
        return
    deliver_completion_callback(
        self.session_factory,
        broadcast_uuid,
        deadline_seconds=settings.callback_deadline_seconds,
        allow_private=settings.allow_private_callback_urls,
    )


@worker_task(RELEASE_SCHEDULED_TASK, on_infrastructure_error=SkipThisRun("scheduled broadcasts not released"))
def release_scheduled_task(self: BulksmsTask) -> None:
    """Scheduled broadcasts whose send_at has come, and held ones whose daily cap has reset: their chunks enqueued."""
    with self.session() as session:
        released = release_scheduled_broadcasts(session, celery_app, normal_window=settings.send_window_chunks)
        release_due_holds(
            session,
            status_redis_client(),
            celery_app,
            now=settings.clock_now(),
            normal_window=settings.send_window_chunks,
        )
    if released:
        logger.info("released %d scheduled broadcasts", released)


@worker_task(RELEASE_DEFERRED_TASK, on_infrastructure_error=SkipThisRun("deferred messages not released"))
def release_deferred_task(self: BulksmsTask) -> None:
    """Chunks whose quiet-hours deferral ended are enqueued again."""
    with self.session() as session:
        chunks = release_due_deferred_chunks(session, celery_app)
    if chunks:
        logger.info("re-enqueued %d chunks whose quiet hours ended", chunks)


# A run folds broadcasts in batches for at most this long; the next run (one sweep interval later) goes on.
COMPACT_BUDGET_SECONDS = 5.0


@worker_task(COMPACT_MESSAGE_COUNTS_TASK, on_infrastructure_error=SkipThisRun("message counts not compacted"))
def compact_message_counts_task(self: BulksmsTask) -> None:
    """Fold the counts the triggers appended into one row per broadcast and state (shared.messages.counts)."""
    deadline = time.monotonic() + COMPACT_BUDGET_SECONDS
    while time.monotonic() < deadline:
        with self.session() as session:
            folded = message_counts.compact(session)
        if folded < message_counts.COMPACT_BATCH_SIZE:
            break


@worker_task(APPLY_RETENTION_TASK, on_infrastructure_error=SkipThisRun("retention not applied"))
def apply_retention_task(self: BulksmsTask) -> None:
    """Remove numbers, bodies and raw callbacks RETENTION_DAYS after completion (shared.compliance.retention)."""
    report = apply_retention(self.session_factory, settings.retention_days)
    if report.events_deleted or report.broadcasts_redacted or report.messages_redacted:
        logger.info(
            "retention: %d raw callbacks deleted, %d messages and %d broadcasts redacted%s",
            report.events_deleted,
            report.messages_redacted,
            report.broadcasts_redacted,
            "" if report.finished else " (time budget spent; the next run continues)",
        )


@worker_task(TRIM_STATUS_STREAM_TASK, on_infrastructure_error=SkipThisRun("status stream not trimmed"))
def trim_status_stream_task(self: BulksmsTask) -> None:
    """Drop the stream entries every consumer group has acknowledged (shared.receipts.status_queue)."""
    trimmed = trim_acknowledged(status_redis_client())
    if trimmed:
        logger.info("status stream: %d acknowledged entries trimmed", trimmed)
