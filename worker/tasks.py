"""The Celery tasks: thin wrappers that load ids, call one function in `shared`, and decide about retrying."""

from __future__ import annotations

import logging
import random
import uuid

from celery import Task
from redis.exceptions import RedisError
from sqlalchemy.exc import InterfaceError, OperationalError

from shared.sending import send_chunk
from shared.sweeper import sweep
from shared.task_queue import SEND_CHUNK_TASK, SWEEP_TASK
from worker.app import celery_app, sending_resources

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
    """Recover forgotten broadcasts, idle chunks, expired claims and `unknown` sends (see shared.sweeper)."""
    report = sweep(sending_resources(), celery_app)
    if not report.skipped:
        logger.debug("sweep: %s", report)
