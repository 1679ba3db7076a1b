"""The Celery application both sides share: its configuration, the queue and task names, and enqueueing.

The API only publishes (it never imports the worker's code); the worker registers the tasks on the same app.
Delivery is at-least-once (late acks, redelivery when a worker is lost); the claim in `shared.sending` turns that
into at-most-once sending per recipient.
"""

from __future__ import annotations

import uuid

from celery import Celery
from kombu import Queue

from shared.settings import Settings

SEND_QUEUE = "sms.send"
MAINTENANCE_QUEUE = "sms.maintenance"

SEND_CHUNK_TASK = "sms.send_chunk"
SWEEP_TASK = "sms.sweep"

# Longer than the longest retry backoff and than any chunk can take, so Redis never hands a task that is
# still running to a second worker; a worker that died is covered sooner by the sweeper (see shared.sweeper).
BROKER_VISIBILITY_TIMEOUT_SECONDS = 2 * 60 * 60


def create_celery_app(settings: Settings, name: str = "bulksms") -> Celery:
    settings.require("redis_url")
    app = Celery(name, broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        task_queues=(Queue(SEND_QUEUE), Queue(MAINTENANCE_QUEUE)),
        task_default_queue=SEND_QUEUE,
        task_routes={SEND_CHUNK_TASK: {"queue": SEND_QUEUE}, SWEEP_TASK: {"queue": MAINTENANCE_QUEUE}},
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        task_send_sent_event=False,  # a sent-event per task doubles the cost of enqueueing a 1,000,000 broadcast
        worker_send_task_events=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": BROKER_VISIBILITY_TIMEOUT_SECONDS,
            "socket_connect_timeout": 5,
            "socket_timeout": 30,
            "retry_on_timeout": True,
        },
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2, "interval_max": 0.5},
        worker_hijack_root_logger=False,
        beat_schedule={
            "sweep": {"task": SWEEP_TASK, "schedule": settings.sweeper_interval_seconds, "options": {"expires": 60}},
        },
    )
    return app


def enqueue_chunks(app: Celery, broadcast_id: uuid.UUID | str, chunk_numbers: list[int] | range) -> None:
    """Publish one `sms.send_chunk` task per chunk, carrying ids only, over one broker connection."""
    with app.producer_or_acquire() as producer:
        for chunk_number in chunk_numbers:
            app.send_task(
                SEND_CHUNK_TASK,
                args=[str(broadcast_id), int(chunk_number)],
                queue=SEND_QUEUE,
                producer=producer,
            )
