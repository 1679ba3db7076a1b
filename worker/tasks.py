"""The Celery tasks: thin wrappers that load ids, call one function in `shared`, and decide about retrying."""

from __future__ import annotations

import logging
import random
import uuid

from celery import Task
from redis.exceptions import RedisError
from sqlalchemy.exc import InterfaceError, OperationalError

from shared.broadcasts.control import release_due_deferred_chunks, release_scheduled_broadcasts
from shared.platform.db import session_scope
from shared.platform.task_queue import (
    COMPLETE_BROADCASTS_TASK,
    NOTIFY_COMPLETION_TASK,
    RELEASE_DEFERRED_TASK,
    RELEASE_DUE_RETRIES_TASK,
    RELEASE_SCHEDULED_TASK,
    SEND_CHUNK_TASK,
    SWEEP_TASK,
    enqueue_completion_callbacks,
)
from shared.receipts.completion import (
    callback_retry_delay,
    complete_broadcasts,
    deliver_completion_callback,
    forgotten_completion_callbacks,
)
from shared.receipts.delivery_retries import release_and_enqueue_due_retries
from shared.sending.chunks import send_chunk
from shared.sending.sweeper import sweep
from worker.app import celery_app, sending_resources, settings

logger = logging.getLogger(__name__)

# When the retry budget ran out (20429 storm, Twilio unreachable), come back for the released rows this much
# later; jittered so the chunks of a broadcast do not all return at once.
RELEASED_RETRY_COUNTDOWN_SECONDS = (5.0, 15.0)
# The database or Redis was unreachable before anything was sent.
INFRASTRUCTURE_RETRY_COUNTDOWN_SECONDS = (2.0, 10.0)


@celery_app.task(name=SEND_CHUNK_TASK, bind=True, max_retries=None)
def send_chunk_task(self: Task, broadcast_id: str, chunk_number: int) -> None:
    """Send one chunk (about 100 recipients) of a broadcast; safe to run more than once."""
    try:
        broadcast_uuid = uuid.UUID(broadcast_id)
    except (ValueError, TypeError):
        logger.error("sms.send_chunk with a malformed broadcast id %r: dropped", broadcast_id)
        return
    try:
        result = send_chunk(sending_resources(), broadcast_uuid, int(chunk_number))
    except (OperationalError, InterfaceError, RedisError) as error:
        # Rows already sent are recorded or reconciled; rows still pending are what this retry is for.
        logger.warning("chunk %s/%s: %s; retrying", broadcast_id, chunk_number, type(error).__name__)
        raise self.retry(countdown=random.uniform(*INFRASTRUCTURE_RETRY_COUNTDOWN_SECONDS)) from error
    if result.released:
        raise self.retry(countdown=random.uniform(*RELEASED_RETRY_COUNTDOWN_SECONDS))


@celery_app.task(name=SWEEP_TASK)
def sweep_task() -> None:
    """Recover forgotten broadcasts, idle chunks, expired claims and `unknown` sends (see shared.sending.sweeper)."""
    report = sweep(sending_resources(), celery_app)
    if not report.skipped:
        logger.debug("sweep: %s", report)


@celery_app.task(name=RELEASE_DUE_RETRIES_TASK)
def release_due_retries_task() -> None:
    """Send the delivery retries that fell due: archive each attempt, reset to pending, enqueue the chunks."""
    try:
        release_and_enqueue_due_retries(sending_resources().session_factory, celery_app)
    except (OperationalError, InterfaceError) as error:
        logger.warning("due retries not released this run: %s", type(error).__name__)


@celery_app.task(name=COMPLETE_BROADCASTS_TASK)
def complete_broadcasts_task() -> None:
    """Mark finished broadcasts `completed`, then queue their completion callbacks."""
    try:
        with session_scope(sending_resources().session_factory) as session:
            completed = complete_broadcasts(session, settings.completion_idle_seconds)
        with session_scope(sending_resources().session_factory) as session:
            forgotten = forgotten_completion_callbacks(session)
    except (OperationalError, InterfaceError) as error:
        logger.warning("broadcast completion not checked this run: %s", type(error).__name__)
        return
    for broadcast in completed:
        logger.info("broadcast %s completed", broadcast.id)
    if forgotten:
        logger.warning("%d completion callbacks were never tried: enqueued again", len(forgotten))
    enqueue_completion_callbacks(celery_app, [b.id for b in completed if b.callback_url] + forgotten)


@celery_app.task(name=NOTIFY_COMPLETION_TASK, bind=True, max_retries=None)
def notify_completion_task(self: Task, broadcast_id: str) -> None:
    """POST the signed completion summary to the broadcast's callback_url; retried with backoff, then given up."""
    try:
        broadcast_uuid = uuid.UUID(broadcast_id)
    except (ValueError, TypeError):
        logger.error("sms.notify_completion with a malformed broadcast id %r: dropped", broadcast_id)
        return
    try:
        attempt = deliver_completion_callback(sending_resources().session_factory, broadcast_uuid)
    except (OperationalError, InterfaceError) as error:
        raise self.retry(countdown=random.uniform(*INFRASTRUCTURE_RETRY_COUNTDOWN_SECONDS)) from error
    if attempt.should_retry:
        raise self.retry(countdown=callback_retry_delay(attempt.attempt))


@celery_app.task(name=RELEASE_SCHEDULED_TASK)
def release_scheduled_task() -> None:
    """Scheduled broadcasts whose send_at has come: queued, and their chunks enqueued."""
    try:
        with session_scope(sending_resources().session_factory) as session:
            released = release_scheduled_broadcasts(session, celery_app)
    except (OperationalError, InterfaceError, RedisError) as error:
        logger.warning("scheduled broadcasts not released this run: %s", type(error).__name__)
        return
    if released:
        logger.info("released %d scheduled broadcasts", released)


@celery_app.task(name=RELEASE_DEFERRED_TASK)
def release_deferred_task() -> None:
    """Chunks whose quiet-hours deferral ended are enqueued again."""
    try:
        with session_scope(sending_resources().session_factory) as session:
            chunks = release_due_deferred_chunks(session, celery_app)
    except (OperationalError, InterfaceError, RedisError) as error:
        logger.warning("deferred messages not released this run: %s", type(error).__name__)
        return
    if chunks:
        logger.info("re-enqueued %d chunks whose quiet hours ended", chunks)
