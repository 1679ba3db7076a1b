"""Metrics of the status consumer and the pure parts of shared.platform.metrics (labels, the exposition text)."""

from __future__ import annotations

from typing import Any

import redis

from shared.platform.db import create_session_factory
from shared.platform.metrics import MetricsRecorder, bounded_label, callback_status_label, render_metrics
from shared.platform.settings import Settings
from shared.receipts.events import drain_status_stream
from shared.receipts.status_queue import push_callback
from tests.metrics_text import parse_exposition, value
from tests.status_callbacks import callback_parameters, new_sid


def test_labels_never_take_free_form_values() -> None:
    assert callback_status_label("Delivered") == "delivered"
    assert callback_status_label("+15555550100") == "other"
    assert bounded_label("accepted", ("accepted",)) == "accepted"
    assert bounded_label("SM" + "0" * 32, ("accepted",)) == "other"


def test_the_consumer_counts_committed_callbacks_by_status(
    engine: Any, redis_client: redis.Redis, settings: Settings
) -> None:
    for status in ("delivered", "delivered", "undelivered"):
        push_callback(redis_client, callback_parameters(new_sid(), status), None, None)

    report = drain_status_stream(create_session_factory(engine), redis_client, settings, budget_seconds=2)

    assert report.callbacks == 3
    samples = parse_exposition(render_metrics(redis_client, None, settings))
    assert value(samples, "bulksms_callbacks_applied_total", status="delivered") == 2
    assert value(samples, "bulksms_callbacks_applied_total", status="undelivered") == 1
    # No message has those SIDs: stored, not applied yet (retried by a later pass).
    assert value(samples, "bulksms_callbacks_unmatched_total") == 3
    assert value(samples, "bulksms_status_stream_length") == 0


def test_label_values_are_escaped_and_histograms_are_cumulative(redis_client: redis.Redis, settings: Settings) -> None:
    recorder = MetricsRecorder()
    recorder.observe_many("bulksms_webhook_request_duration_seconds", {"code": "204"}, [0.0001, 0.003, 5.0])
    recorder.flush(redis_client)
    text = render_metrics(redis_client, None, settings)
    samples = parse_exposition(text)
    name = "bulksms_webhook_request_duration_seconds"
    buckets = [number for (sample, _), number in samples.items() if sample == f"{name}_bucket"]
    assert buckets == sorted(buckets) and buckets[-1] == 3
    assert value(samples, f"{name}_bucket", code="204", le="0.0005") == 1
    assert value(samples, f"{name}_count", code="204") == 3
