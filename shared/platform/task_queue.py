"""The Celery application both sides share: its configuration, the queue and task names, and enqueueing.

The API only publishes (it never imports the worker's code); the worker registers the tasks on the same app.
Delivery is at-least-once (late acks, redelivery when a worker is lost); the claim in `shared.sending.chunks` turns that
into at-most-once sending per recipient.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from celery import Celery
from kombu import Queue

from shared.platform.settings import Settings

SEND_QUEUE = "sms.send"
MAINTENANCE_QUEUE = "sms.maintenance"
STATUS_QUEUE = "sms.status"  # applying Twilio status callbacks (shared.receipts.events)
# Completion callbacks POSTed to client URLs: a slow client holds a process of this queue's worker for up to
# CALLBACK_DEADLINE_SECONDS, never one that sends.
CALLBACK_QUEUE = "sms.callbacks"
# What a worker consumes by default (`--queues`); large deployments give sms.status workers of their own.
ALL_QUEUES = (SEND_QUEUE, MAINTENANCE_QUEUE, STATUS_QUEUE, CALLBACK_QUEUE)

SEND_CHUNK_TASK = "sms.send_chunk"
SWEEP_TASK = "sms.sweep"
APPLY_STATUS_EVENTS_TASK = "sms.apply_status_events"
RELEASE_DUE_RETRIES_TASK = "sms.release_due_retries"  # shared.receipts.delivery_retries
COMPLETE_BROADCASTS_TASK = "sms.complete_broadcasts"  # shared.receipts.completion
NOTIFY_COMPLETION_TASK = "sms.notify_completion"  # the signed POST to a broadcast's callback_url
RELEASE_SCHEDULED_TASK = "sms.release_scheduled"  # shared.broadcasts.control: scheduled broadcasts at send_at
RELEASE_DEFERRED_TASK = "sms.release_deferred"  # shared.broadcasts.control: quiet-hours deferrals that ended
COMPACT_MESSAGE_COUNTS_TASK = "sms.compact_message_counts"  # shared.messages.counts: fold the appended counts
APPLY_RETENTION_TASK = "sms.apply_retention"  # shared.messages.retention: RETENTION_DAYS after completion
TRIM_STATUS_STREAM_TASK = "sms.trim_status_stream"  # shared.receipts.status_queue: drop what every group acked
# How often beat runs retention: each run does a bounded amount of work in short transactions.
RETENTION_INTERVAL_SECONDS = 600.0

# Longer than the longest retry backoff and than any chunk can take, so Redis never hands a task that is
# still running to a second worker; a worker that died is covered sooner by the sweeper (see shared.sending.sweeper).
BROKER_VISIBILITY_TIMEOUT_SECONDS = 2 * 60 * 60


def create_celery_app(settings: Settings, name: str = "bulksms") -> Celery:
    settings.require("redis_url")
    app = Celery(name, broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        task_queues=tuple(Queue(name) for name in ALL_QUEUES),
        task_default_queue=SEND_QUEUE,
        task_routes={
            SEND_CHUNK_TASK: {"queue": SEND_QUEUE},
            SWEEP_TASK: {"queue": MAINTENANCE_QUEUE},
            APPLY_STATUS_EVENTS_TASK: {"queue": STATUS_QUEUE},
            RELEASE_DUE_RETRIES_TASK: {"queue": MAINTENANCE_QUEUE},
            COMPLETE_BROADCASTS_TASK: {"queue": MAINTENANCE_QUEUE},
            NOTIFY_COMPLETION_TASK: {"queue": CALLBACK_QUEUE},
            RELEASE_SCHEDULED_TASK: {"queue": MAINTENANCE_QUEUE},
            RELEASE_DEFERRED_TASK: {"queue": MAINTENANCE_QUEUE},
            COMPACT_MESSAGE_COUNTS_TASK: {"queue": MAINTENANCE_QUEUE},
            APPLY_RETENTION_TASK: {"queue": MAINTENANCE_QUEUE},
            TRIM_STATUS_STREAM_TASK: {"queue": MAINTENANCE_QUEUE},
        },
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
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0.1,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        worker_hijack_root_logger=False,
        beat_schedule={
            "sweep": {
                "task": SWEEP_TASK,
                "schedule": settings.sweeper_interval_seconds,
                "options": {"expires": 60},
            },
            # Each run drains the callback stream for a few seconds under one of a few consumer slots; runs
            # that find every slot taken return at once, and `expires` drops runs queued behind a long drain.
            "apply-status-events": {
                "task": APPLY_STATUS_EVENTS_TASK,
                "schedule": 1.0,
                "options": {"queue": STATUS_QUEUE, "expires": 5},
            },
            # Due delivery retries wait in PostgreSQL (messages.retry_due_at), never in long Celery countdowns.
            "release-due-retries": {
                "task": RELEASE_DUE_RETRIES_TASK,
                "schedule": settings.sweeper_interval_seconds,
                "options": {"queue": MAINTENANCE_QUEUE, "expires": 60},
            },
            # Scheduled broadcasts and quiet-hours deferrals wait in PostgreSQL, never in long Celery ETAs.
            "release-scheduled": {
                "task": RELEASE_SCHEDULED_TASK,
                "schedule": min(settings.sweeper_interval_seconds, 5.0),
                "options": {"queue": MAINTENANCE_QUEUE, "expires": 30},
            },
            "release-deferred": {
                "task": RELEASE_DEFERRED_TASK,
                "schedule": settings.sweeper_interval_seconds,
                "options": {"queue": MAINTENANCE_QUEUE, "expires": 60},
            },
            "complete-broadcasts": {
                "task": COMPLETE_BROADCASTS_TASK,
                "schedule": settings.sweeper_interval_seconds,
                "options": {"queue": MAINTENANCE_QUEUE, "expires": 60},
            },
            # Keeps each broadcast's maintained counts at a few rows, so reading them stays cheap.
            "compact-message-counts": {
                "task": COMPACT_MESSAGE_COUNTS_TASK,
                "schedule": settings.sweeper_interval_seconds,
                "options": {"queue": MAINTENANCE_QUEUE, "expires": 60},
            },
            "apply-retention": {
                "task": APPLY_RETENTION_TASK,
                "schedule": RETENTION_INTERVAL_SECONDS,
                "options": {"queue": MAINTENANCE_QUEUE, "expires": RETENTION_INTERVAL_SECONDS},
            },
            "trim-status-stream": {
                "task": TRIM_STATUS_STREAM_TASK,
                "schedule": 60.0,
                "options": {"queue": MAINTENANCE_QUEUE, "expires": 60},
            },
        },
    )
    return app


def enqueue_completion_callbacks(app: Celery, broadcast_ids: list[uuid.UUID]) -> None:
    """Publish one `sms.notify_completion` per broadcast whose completion callback is due, on `sms.callbacks`."""
    for broadcast_id in broadcast_ids:
        app.send_task(NOTIFY_COMPLETION_TASK, args=[str(broadcast_id)], queue=CALLBACK_QUEUE)


# Chunk messages written to Redis per round trip.
ENQUEUE_BATCH_SIZE = 1_000


def enqueue_chunks(
    app: Celery, broadcast_id: uuid.UUID | str, chunk_numbers: list[int] | range, *, ahead: bool = False
) -> None:
    """Publish one `sms.send_chunk` task per chunk, carrying ids only; `ahead`: at the head of the queue (taken
    next), for chunks whose task was lost and which have waited longest already.

    On Redis the messages are written with pipelined LPUSHes, 1,000 per round trip: a 1,000,000-recipient
    broadcast has 10,000 chunks, and `send_task` one by one costs ~0.4 ms each. Each message is a copy of one
    that Celery builds itself (protocol 2, as kombu's Redis transport stores it) with fresh ids and arguments.
    """
    with app.connection_for_write() as connection:
        if connection.transport.driver_type != "redis":
            _enqueue_chunks_one_by_one(app, str(broadcast_id), chunk_numbers)
            return
        template = _chunk_message_template(app, str(broadcast_id))
        client = connection.default_channel.client
        with client.pipeline(transaction=False) as pipeline:
            for position, chunk_number in enumerate(chunk_numbers, start=1):
                # kombu's Redis transport LPUSHes and workers BRPOP: the right end is the head of the queue.
                push = pipeline.rpush if ahead else pipeline.lpush
                push(SEND_QUEUE, _chunk_message(template, str(broadcast_id), int(chunk_number)))
                if position % ENQUEUE_BATCH_SIZE == 0:
                    pipeline.execute()
            pipeline.execute()


def _enqueue_chunks_one_by_one(app: Celery, broadcast_id: str, chunk_numbers: list[int] | range) -> None:
    with app.producer_or_acquire() as producer:
        for chunk_number in chunk_numbers:
            app.send_task(SEND_CHUNK_TASK, args=[broadcast_id, int(chunk_number)], queue=SEND_QUEUE, producer=producer)


def _chunk_message_template(app: Celery, broadcast_id: str) -> dict[str, Any]:
    """The message Celery's `send_task` would publish for chunk 0, as kombu's Redis transport stores it."""
    task_id = str(uuid.uuid4())
    task_message = app.amqp.as_task_v2(
        task_id, SEND_CHUNK_TASK, args=[broadcast_id, 0], reply_to=app.thread_oid, ignore_result=None
    )
    headers, properties, body = task_message.headers, task_message.properties, task_message.body
    return {
        "body": body,  # [args, kwargs, embed]
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            **properties,
            "delivery_mode": 2,  # persistent
            "delivery_info": {"exchange": "", "routing_key": SEND_QUEUE},
            "priority": 0,
            "body_encoding": "base64",
        },
    }


class TaskMessageFormatError(RuntimeError):
    """The hand-built chunk message no longer matches what Celery's `send_task` publishes (Celery or kombu
    changed their message format): workers could not read the intake's tasks, so the process refuses to start."""


# Fields that differ between any two messages by design: fresh ids per task.
_PER_MESSAGE_FIELDS = (("headers", "id"), ("headers", "root_id"), ("properties", "correlation_id"))


def check_chunk_message_format(app: Celery) -> None:
    """Compare the hand-built message for one chunk with the one `send_task` publishes, through kombu's in-memory
    transport (the same virtual-transport code that writes Redis' lists); raise TaskMessageFormatError on any
    difference beyond the per-message ids. The API and the worker run this at start-up."""
    broadcast_id = "00000000-0000-0000-0000-000000000000"
    with app.connection_for_write("memory://") as connection:
        channel = connection.default_channel
        app.send_task(SEND_CHUNK_TASK, args=[broadcast_id, 0], queue=SEND_QUEUE, connection=connection)
        published: dict[str, Any] = channel._get(SEND_QUEUE)
    hand_built: dict[str, Any] = json.loads(_chunk_message(_chunk_message_template(app, broadcast_id), broadcast_id, 0))
    expected, actual = _normalised(published), _normalised(hand_built)
    if expected != actual:
        differences = sorted(_differences(expected, actual))
        raise TaskMessageFormatError(
            "the intake's hand-built sms.send_chunk message no longer matches Celery's send_task "
            f"(celery/kombu upgraded?): {'; '.join(differences[:10])}. "
            "Fix shared/platform/task_queue.py::_chunk_message_template or pin the previous versions."
        )


def _normalised(message: dict[str, Any]) -> dict[str, Any]:
    """The message with its per-message ids replaced by markers (after checking that they agree with each other)
    and its delivery tag dropped (the transport's own bookkeeping), the body decoded."""
    copy = json.loads(json.dumps(message))
    task_id = copy.get("headers", {}).get("id")
    for section, name in _PER_MESSAGE_FIELDS:
        if copy.get(section, {}).get(name) == task_id:
            copy[section][name] = "<task id>"
    copy.get("properties", {}).pop("delivery_tag", None)
    if copy.get("properties", {}).get("body_encoding") == "base64":
        copy["body"] = json.loads(base64.b64decode(copy["body"]))
    return dict(copy)


def _differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    if isinstance(expected, dict) and isinstance(actual, dict):
        found = []
        for key in sorted(set(expected) | set(actual)):
            where = f"{path}.{key}" if path else str(key)
            if key not in actual:
                found.append(f"{where} missing")
            elif key not in expected:
                found.append(f"{where} not in send_task's message")
            else:
                found.extend(_differences(expected[key], actual[key], where))
        return found
    return [] if expected == actual else [f"{path}: send_task has {expected!r}, hand-built {actual!r}"]


def _chunk_message(template: dict[str, Any], broadcast_id: str, chunk_number: int) -> str:
    task_id = str(uuid.uuid4())
    args = [broadcast_id, chunk_number]
    _, kwargs, embed = template["body"]
    body = json.dumps([args, kwargs, embed]).encode("utf-8")
    message = {
        **template,
        "body": base64.b64encode(body).decode("ascii"),
        "headers": {**template["headers"], "id": task_id, "root_id": task_id, "argsrepr": repr(args)},
        "properties": {
            **template["properties"],
            "correlation_id": task_id,
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return json.dumps(message)
