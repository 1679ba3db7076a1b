"""`sms.apply_status_events`: beat runs it every second on `sms.status`; it drains the callback stream for a
few seconds under one consumer slot (shared.receipts.events.drain_status_stream)."""

from __future__ import annotations

import logging

import redis

from shared.platform.task_queue import APPLY_STATUS_EVENTS_TASK
from shared.receipts.events import drain_status_stream
from worker.app import settings
from worker.task_base import BulksmsTask, SkipThisRun, worker_task

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


# On an outage the batch in hand stays pending in the stream; the next run (a second later) applies it again.
@worker_task(APPLY_STATUS_EVENTS_TASK, on_infrastructure_error=SkipThisRun("status events not applied"))
def apply_status_events_task(self: BulksmsTask) -> None:
    """Apply queued status callbacks in batches; nothing is acknowledged in Redis before it is committed."""
    report = drain_status_stream(self.session_factory, status_redis_client(), settings)
    if report.callbacks:
        logger.info(
            "status events: %d callbacks in %d batches (slot %s): %s",
            report.callbacks,
            report.batches,
            report.slot,
            report.totals,
        )
