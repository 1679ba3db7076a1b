"""`sms.apply_status_events`: beat runs it every second on `sms.status`; it drains the callback stream for a
few seconds under one consumer slot (shared.receipts.events.drain_status_stream)."""

from __future__ import annotations

import logging

import redis
from redis.exceptions import RedisError
from sqlalchemy.exc import InterfaceError, OperationalError

from shared.platform.task_queue import APPLY_STATUS_EVENTS_TASK
from shared.receipts.events import drain_status_stream
from worker.app import celery_app, sending_resources, settings

logger = logging.getLogger(__name__)

_redis_client: redis.Redis | None = None


def status_redis_client() -> redis.Redis:
    """This process's synchronous Redis client for the stream, opened on first use (after the fork)."""
    global _redis_client
    if _redis_client is None:
        _redis_client = redis.Redis.from_url(
            str(settings.redis_url), socket_connect_timeout=5, socket_timeout=30, health_check_interval=30
        )
    return _redis_client


@celery_app.task(name=APPLY_STATUS_EVENTS_TASK)
def apply_status_events_task() -> None:
    """Apply queued status callbacks in batches; nothing is acknowledged in Redis before it is committed."""
    try:
        report = drain_status_stream(sending_resources().session_factory, status_redis_client(), settings)
    except (OperationalError, InterfaceError, RedisError) as error:
        # The batch in hand stays pending in the stream; the next run (a second later) applies it again.
        logger.warning("status events not applied this run: %s: %s", type(error).__name__, error)
        return
    if report.callbacks:
        logger.info(
            "status events: %d callbacks in %d batches (slot %s): %s",
            report.callbacks,
            report.batches,
            report.slot,
            report.totals,
        )
