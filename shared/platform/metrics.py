"""Prometheus metrics kept in Redis, so every worker process and host adds to the same numbers.

Counters and histograms are Redis hashes (`bulksms:metrics:<name>`, one field per label set, histogram buckets
stored per bucket and made cumulative when rendered). A `MetricsRecorder` buffers increments in-process and
writes them with one pipelined round trip: a worker once per chunk, the webhook at most about once a second.
`render_metrics` builds the text exposition format (version 0.0.4) from those hashes plus gauges read at scrape
time: requests in flight against the cap, queue depths, the status stream, and (API only) a few cheap queries.
docs/operations.md, "Metrics": what each one means.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shared.messages.counts import unfinished_broadcast_state_counts
from shared.platform.settings import Settings
from shared.platform.task_queue import ALL_QUEUES
from shared.receipts.delivery_status import IGNORED_STATUSES, STATUS_RANK
from shared.receipts.status_queue import CONSUMER_GROUP, STREAM_KEY
from shared.sending.concurrency import concurrency_key
from shared.twilio.error_codes import describe_error_code

logger = logging.getLogger(__name__)

KEY_PREFIX = "bulksms:metrics:"
# Kombu's Redis transport keeps the tasks a worker took but has not acknowledged in this hash.
CELERY_UNACKED_KEY = "unacked"
# A recorder that cannot reach Redis keeps at most this many distinct series before dropping its buffer.
MAX_BUFFERED_SERIES = 10_000
DATABASE_TIMEOUT_MS = 2_000

COUNTER = "counter"
HISTOGRAM = "histogram"
GAUGE = "gauge"

TWILIO_LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
WEBHOOK_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

# Series names.
MESSAGES_SENT = "bulksms_messages_sent_total"
TWILIO_REQUESTS = "bulksms_twilio_requests_total"
TWILIO_REQUEST_DURATION = "bulksms_twilio_request_duration_seconds"
TWILIO_RATE_LIMITED = "bulksms_twilio_rate_limited_total"
TWILIO_ERRORS = "bulksms_twilio_errors_total"
CHUNKS_PROCESSED = "bulksms_chunks_processed_total"
CALLBACKS_RECEIVED = "bulksms_callbacks_received_total"
CALLBACKS_REJECTED = "bulksms_callbacks_rejected_total"
WEBHOOK_REQUEST_DURATION = "bulksms_webhook_request_duration_seconds"
CALLBACKS_APPLIED = "bulksms_callbacks_applied_total"
CALLBACKS_UNMATCHED = "bulksms_callbacks_unmatched_total"

SEND_OUTCOMES = ("accepted", "failed", "unknown", "released")
CALLBACK_STATUSES = (*sorted(STATUS_RANK), *sorted(IGNORED_STATUSES))
OTHER = "other"


@dataclass(frozen=True, slots=True)
class MetricDefinition:
    name: str
    kind: str
    help: str
    buckets: tuple[float, ...] = ()
    # Label sets always shown (at 0 before anything happened), so rate() and alerts see the series from the start.
    initial_labels: tuple[Mapping[str, str], ...] = ()


STORED_METRICS: tuple[MetricDefinition, ...] = (
    MetricDefinition(
        MESSAGES_SENT,
        COUNTER,
        "Messages whose send ended, by outcome (released: back to pending after 20429 / refused connections).",
        initial_labels=tuple({"outcome": outcome} for outcome in SEND_OUTCOMES),
    ),
    MetricDefinition(TWILIO_REQUESTS, COUNTER, "Requests to Twilio's Messages API, by result (rate_limited included)."),
    MetricDefinition(
        TWILIO_REQUEST_DURATION,
        HISTOGRAM,
        "Time from sending a request to Twilio to its answer.",
        TWILIO_LATENCY_BUCKETS,
    ),
    MetricDefinition(
        TWILIO_RATE_LIMITED,
        COUNTER,
        "Requests Twilio refused with 429 / 20429 (too many requests).",
        initial_labels=({},),
    ),
    MetricDefinition(TWILIO_ERRORS, COUNTER, "Sends Twilio refused permanently, by Twilio error code."),
    MetricDefinition(
        CHUNKS_PROCESSED, COUNTER, "Chunk tasks that claimed and sent at least one message.", initial_labels=({},)
    ),
    MetricDefinition(CALLBACKS_RECEIVED, COUNTER, "Status callbacks accepted by the webhook and queued, by status."),
    MetricDefinition(
        CALLBACKS_REJECTED, COUNTER, "Requests the Twilio webhooks refused (callbacks and replies), by reason."
    ),
    MetricDefinition(
        WEBHOOK_REQUEST_DURATION,
        HISTOGRAM,
        "Time the Twilio webhooks took to answer, by HTTP code.",
        WEBHOOK_LATENCY_BUCKETS,
    ),
    MetricDefinition(CALLBACKS_APPLIED, COUNTER, "Status callbacks the consumer committed to PostgreSQL, by status."),
    MetricDefinition(
        CALLBACKS_UNMATCHED,
        COUNTER,
        "Committed callbacks that matched no message yet (retried later).",
        initial_labels=({},),
    ),
)
_DEFINITIONS = {definition.name: definition for definition in STORED_METRICS}

_UNSAFE_LABEL_CHARACTERS = re.compile(r"[^A-Za-z0-9_.:-]")


def bounded_label(value: object, allowed: Iterable[str]) -> str:
    """`value` when it is one of `allowed`, else "other": labels never take free-form values (cardinality)."""
    text_value = str(value).strip().lower()
    return text_value if text_value in allowed else OTHER


def callback_status_label(status: object) -> str:
    return bounded_label(status, CALLBACK_STATUSES)


def _label_key(labels: Mapping[str, str] | None) -> str:
    if not labels:
        return ""
    return ",".join(
        f"{name}={_UNSAFE_LABEL_CHARACTERS.sub('_', str(value))[:64]}" for name, value in sorted(labels.items())
    )


def _bucket_index(buckets: Sequence[float], value: float) -> int:
    for index, bound in enumerate(buckets):
        if value <= bound:
            return index
    return len(buckets)  # +Inf


class MetricsRecorder:
    """Increments and observations buffered in this process, written to Redis in one pipelined round trip.

    Thread-safe (the webhook runs threads). `flush_if_due` writes at most once per `flush_interval_seconds`
    (or as soon as `flush_every` events are buffered); `flush` / `flush_async` write now. A failed write keeps
    the buffer for the next flush (up to MAX_BUFFERED_SERIES series): metrics never fail the caller.
    """

    def __init__(self, flush_interval_seconds: float = 1.0, flush_every: int = 1_000) -> None:
        self.flush_interval_seconds = flush_interval_seconds
        self.flush_every = flush_every
        self._lock = threading.Lock()
        self._counters: defaultdict[tuple[str, str], float] = defaultdict(float)
        self._buckets: defaultdict[tuple[str, str, int], int] = defaultdict(int)
        self._sums: defaultdict[tuple[str, str], float] = defaultdict(float)
        self._counts: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._unwritten: list[tuple[Any, ...]] = []
        self._events = 0
        self._last_flush = time.monotonic()

    def increment(self, name: str, labels: Mapping[str, str] | None = None, amount: float = 1) -> None:
        key = (name, _label_key(labels))
        with self._lock:
            self._counters[key] += amount
            self._events += 1

    def observe(self, name: str, labels: Mapping[str, str] | None, value: float) -> None:
        self.observe_many(name, labels, (value,))

    def observe_many(self, name: str, labels: Mapping[str, str] | None, values: Iterable[float]) -> None:
        buckets = _DEFINITIONS[name].buckets
        label_key = _label_key(labels)
        with self._lock:
            for value in values:
                self._buckets[(name, label_key, _bucket_index(buckets, value))] += 1
                self._sums[(name, label_key)] += value
                self._counts[(name, label_key)] += 1
                self._events += 1

    def is_due(self) -> bool:
        return self._events > 0 and (
            self._events >= self.flush_every or time.monotonic() - self._last_flush >= self.flush_interval_seconds
        )

    def take_commands(self) -> list[tuple[Any, ...]]:
        """The buffered increments as Redis commands, and an empty buffer."""
        with self._lock:
            counters, self._counters = self._counters, defaultdict(float)
            buckets, self._buckets = self._buckets, defaultdict(int)
            sums, self._sums = self._sums, defaultdict(float)
            counts, self._counts = self._counts, defaultdict(int)
            commands, self._unwritten = self._unwritten, []
            self._events = 0
            self._last_flush = time.monotonic()
        for (name, label_key), amount in counters.items():
            commands.append(_increment_command(KEY_PREFIX + name, label_key, amount))
        for (name, label_key, index), count in buckets.items():
            commands.append(("HINCRBY", KEY_PREFIX + name, f"{label_key}|b{index}", count))
        for (name, label_key), count in counts.items():
            commands.append(("HINCRBY", KEY_PREFIX + name, f"{label_key}|count", count))
            commands.append(("HINCRBYFLOAT", KEY_PREFIX + name, f"{label_key}|sum", repr(sums[(name, label_key)])))
        return commands

    def restore(self, commands: Sequence[tuple[Any, ...]]) -> None:
        """Keep commands whose write failed for the next flush, unless Redis has been gone for too long."""
        with self._lock:
            if len(self._unwritten) + len(commands) > MAX_BUFFERED_SERIES:
                logger.warning("dropping %d metric updates: Redis unreachable for too long", len(commands))
                return
            self._unwritten.extend(commands)

    def flush(self, client: redis.Redis) -> None:
        commands = self.take_commands()
        if not commands:
            return
        try:
            with client.pipeline(transaction=False) as pipeline:
                for command in commands:
                    pipeline.execute_command(*command)
                pipeline.execute()
        except redis.RedisError as error:
            logger.warning("metrics not written to Redis this time: %s", type(error).__name__)
            self.restore(commands)

    def flush_if_due(self, client: redis.Redis) -> None:
        if self.is_due():
            self.flush(client)

    async def flush_async(self, client: redis.asyncio.Redis) -> None:
        commands = self.take_commands()
        if not commands:
            return
        try:
            async with client.pipeline(transaction=False) as pipeline:
                for command in commands:
                    pipeline.execute_command(*command)
                await pipeline.execute()
        except redis.RedisError as error:
            logger.warning("metrics not written to Redis this time: %s", type(error).__name__)
            self.restore(commands)


def _increment_command(key: str, field: str, amount: float) -> tuple[Any, ...]:
    if float(amount).is_integer():
        return ("HINCRBY", key, field, int(amount))
    return ("HINCRBYFLOAT", key, field, repr(amount))


# ------------------------------------------------------------------------------------------------------ rendering


def _escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{_escape_label_value(value)}"' for name, value in labels.items()) + "}"


def _format_value(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def _parse_label_key(label_key: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for part in label_key.split(","):
        if part:
            name, _, value = part.partition("=")
            labels[name] = value
    return labels


class _Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def header(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, labels: Mapping[str, str], value: float) -> None:
        self.lines.append(f"{name}{_format_labels(labels)} {_format_value(value)}")

    def gauge(self, name: str, help_text: str, samples: Iterable[tuple[Mapping[str, str], float]]) -> None:
        self.header(name, GAUGE, help_text)
        for labels, value in samples:
            self.sample(name, labels, value)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _render_counter(out: _Exposition, definition: MetricDefinition, fields: Mapping[str, float]) -> None:
    out.header(definition.name, COUNTER, definition.help)
    values = {_label_key(labels): 0.0 for labels in definition.initial_labels}
    values.update(fields)
    for label_key in sorted(values):
        out.sample(definition.name, _parse_label_key(label_key), values[label_key])


def _render_histogram(out: _Exposition, definition: MetricDefinition, fields: Mapping[str, float]) -> None:
    out.header(definition.name, HISTOGRAM, definition.help)
    series: defaultdict[str, dict[str, float]] = defaultdict(dict)
    for field, value in fields.items():
        label_key, _, part = field.rpartition("|")
        series[label_key][part] = value
    for label_key in sorted(series):
        parts = series[label_key]
        labels = _parse_label_key(label_key)
        cumulative = 0.0
        for index, bound in enumerate((*definition.buckets, math.inf)):
            cumulative += parts.get(f"b{index}", 0.0)
            out.sample(f"{definition.name}_bucket", {**labels, "le": _format_value(bound)}, cumulative)
        out.sample(f"{definition.name}_sum", labels, parts.get("sum", 0.0))
        out.sample(f"{definition.name}_count", labels, parts.get("count", cumulative))


# Requests in flight: holders whose lease has not expired (read-only: expired ones are only purged by acquirers).
_IN_FLIGHT_SCRIPT = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
"""


def render_metrics(client: redis.Redis, session_factory: sessionmaker[Session] | None, settings: Settings) -> str:
    """The whole exposition: stored counters and histograms, then gauges read now (one Redis round trip, plus two
    bounded queries when `session_factory` is given)."""
    out = _Exposition()
    redis_up = 1.0
    results: list[Any] = []
    try:
        with client.pipeline(transaction=False) as pipeline:
            for definition in STORED_METRICS:
                pipeline.hgetall(KEY_PREFIX + definition.name)
            for queue in ALL_QUEUES:
                pipeline.llen(queue)
            pipeline.hlen(CELERY_UNACKED_KEY)
            pipeline.xlen(STREAM_KEY)
            pipeline.xpending(STREAM_KEY, CONSUMER_GROUP)
            if settings.twilio_account_sid:
                pipeline.eval(_IN_FLIGHT_SCRIPT, 1, concurrency_key(settings.twilio_account_sid))
            results = pipeline.execute(raise_on_error=False)
    except redis.RedisError as error:
        logger.warning("metrics: Redis unreachable: %s", type(error).__name__)
        redis_up = 0.0

    if results and all(isinstance(result, Exception) for result in results):
        redis_up = 0.0
    position = 0
    for definition in STORED_METRICS:
        raw = results[position] if results else {}
        position += 1
        fields = {} if isinstance(raw, Exception) else {_decode(k): float(v) for k, v in (raw or {}).items()}
        if definition.kind == HISTOGRAM:
            _render_histogram(out, definition, fields)
        else:
            _render_counter(out, definition, fields)

    def next_result() -> Any:
        nonlocal position
        value = results[position] if position < len(results) else None
        position += 1
        return None if isinstance(value, Exception) else value

    depths = [(queue, next_result()) for queue in ALL_QUEUES]
    out.gauge(
        "bulksms_queue_depth",
        "Celery tasks waiting in each Redis queue (not yet taken by a worker).",
        [({"queue": queue}, float(depth)) for queue, depth in depths if depth is not None],
    )
    unacked = next_result()
    out.gauge(
        "bulksms_celery_unacked_tasks",
        "Celery tasks taken by a worker and not yet acknowledged (running, or held by a worker that died).",
        [({}, float(unacked))] if unacked is not None else [],
    )
    stream_length = next_result()
    out.gauge(
        "bulksms_status_stream_length",
        "Status callbacks queued in the Redis stream and not yet applied to PostgreSQL.",
        [({}, float(stream_length))] if stream_length is not None else [],
    )
    pending = next_result()
    pending_count = None
    if isinstance(pending, dict):
        pending_count = pending.get("pending", 0)
    elif stream_length is not None:  # no consumer group yet: nothing can be pending
        pending_count = 0
    out.gauge(
        "bulksms_status_stream_pending",
        "Status callbacks read by a consumer and not yet acknowledged (a batch in progress, or a dead consumer's).",
        [({}, float(pending_count))] if pending_count is not None else [],
    )
    if settings.twilio_account_sid:
        in_flight = next_result()
        out.gauge(
            "bulksms_twilio_in_flight",
            "Twilio requests in flight now, across every worker (holders of the concurrency semaphore).",
            [({}, float(in_flight))] if in_flight is not None else [],
        )
    out.gauge(
        "bulksms_twilio_concurrency_limit",
        "The cap on Twilio requests in flight (TWILIO_MAX_CONCURRENCY).",
        [({}, float(settings.twilio_max_concurrency))],
    )
    sources: list[tuple[Mapping[str, str], float]] = [({"source": "redis"}, redis_up)]
    if session_factory is not None:
        database_up = _render_database_gauges(out, session_factory)
        sources.append(({"source": "postgres"}, database_up))
    out.gauge("bulksms_metrics_source_up", "Whether this scrape could read each source (1) or not (0).", sources)
    return out.text()


def _render_database_gauges(out: _Exposition, session_factory: sessionmaker[Session]) -> float:
    """Broadcasts by status, and messages by state for unfinished broadcasts only, from the maintained counts
    (no scan of their messages); each query bounded by a statement timeout."""
    broadcasts: list[tuple[Mapping[str, str], float]] = []
    messages: list[tuple[Mapping[str, str], float]] = []
    up = 1.0
    try:
        with session_factory() as session:
            session.execute(text(f"SET LOCAL statement_timeout = {DATABASE_TIMEOUT_MS}"))
            for status, count in session.execute(
                text("SELECT status, count(*) FROM broadcasts GROUP BY status ORDER BY status")
            ):
                broadcasts.append(({"status": str(status)}, float(count)))
            for state, count in unfinished_broadcast_state_counts(session).items():
                messages.append(({"state": state}, float(count)))
            session.rollback()
    except SQLAlchemyError as error:  # a scrape must still answer with what it has
        logger.warning("metrics: database gauges unavailable: %s", type(error).__name__)
        up = 0.0
    out.gauge("bulksms_broadcasts", "Broadcasts by status.", broadcasts)
    out.gauge("bulksms_unfinished_broadcast_messages", "Messages of broadcasts not yet completed, by state.", messages)
    return up


# ------------------------------------------------------------------------------------------- recording helpers


def record_send_metrics(
    recorder: MetricsRecorder, outcomes: Mapping[str, int], error_codes: Iterable[int | None]
) -> None:
    """One chunk's final outcomes (as recorded) and its permanent error codes (known codes only, else "other")."""
    for outcome, count in outcomes.items():
        if count:
            recorder.increment(MESSAGES_SENT, {"outcome": outcome}, count)
    for code in error_codes:
        known = code is not None and describe_error_code(code) is not None
        recorder.increment(TWILIO_ERRORS, {"error_code": str(code) if known else OTHER})
    recorder.increment(CHUNKS_PROCESSED)


WEBHOOK_REJECTION_REASONS = {
    400: "missing_fields",
    403: "invalid_signature",
    408: "body_too_slow",
    413: "body_too_large",
    503: "redis_unavailable",
}


def record_webhook_request(recorder: MetricsRecorder, client: redis.Redis, code: int, seconds: float) -> None:
    """One Twilio webhook request: its latency by HTTP code, a rejection by reason; written when due."""
    recorder.observe(WEBHOOK_REQUEST_DURATION, {"code": str(code)}, seconds)
    if code >= 300:
        recorder.increment(CALLBACKS_REJECTED, {"reason": WEBHOOK_REJECTION_REASONS.get(code, OTHER)})
    recorder.flush_if_due(client)


def record_applied_callbacks(client: redis.Redis, statuses: Iterable[str], report: Any) -> None:
    """A committed batch of callbacks, by status, and how many matched nothing yet (one round trip per batch).

    `report` is the batch's `shared.receipts.events.ApplyReport`.
    """
    recorder = MetricsRecorder()
    counts: defaultdict[str, int] = defaultdict(int)
    for status in statuses:
        counts[callback_status_label(status)] += 1
    for status, count in counts.items():
        recorder.increment(CALLBACKS_APPLIED, {"status": status}, count)
    if report.unmatched:
        recorder.increment(CALLBACKS_UNMATCHED, None, report.unmatched)
    recorder.flush(client)
