"""`GET /metrics` on the API and on the webhook service: valid exposition text, counters shared through Redis,
gauges read at scrape time (queue depths, requests in flight against the cap, the status stream)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from api.webhook_app import create_webhook_app
from shared.platform.metrics import STORED_METRICS, MetricsRecorder, render_metrics
from shared.platform.settings import Settings
from shared.platform.task_queue import create_celery_app, enqueue_chunks
from shared.receipts.status_queue import STREAM_KEY, push_callback
from shared.sending.concurrency import concurrency_key
from tests.api.conftest import build_app, phone_numbers, post_broadcast
from tests.metrics_text import parse_exposition, total, value
from tests.status_callbacks import CALLBACK_PATH, callback_parameters, new_sid, twilio_signature

ACCOUNT_SID = "AC" + "a1" * 16
TOKEN = "test-auth-token-0123456789abcdef"
PUBLIC_URL = "https://sms.example.com"
METRICS_TOKEN = "metrics-token-4f1c2a9e"


@pytest.fixture
def settings(api_settings: Settings) -> Settings:
    return api_settings.replace(
        twilio_account_sid=ACCOUNT_SID, twilio_max_concurrency=7, twilio_auth_token=TOKEN, public_base_url=PUBLIC_URL
    )


@pytest.fixture
def app(settings: Settings, engine: Any, redis_client: Any) -> Iterator[Flask]:
    yield from build_app(settings)


def scrape(client: FlaskClient, token: str | None = None) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = client.get("/metrics", headers={"Authorization": f"Bearer {token}"} if token else {})
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=0.0.4")
    return parse_exposition(response.get_data(as_text=True))


def test_api_metrics_parse_and_show_every_metric_and_the_cap(client: FlaskClient) -> None:
    text = client.get("/metrics").get_data(as_text=True)
    samples = parse_exposition(text)
    for definition in STORED_METRICS:
        assert f"# TYPE {definition.name} {definition.kind}" in text
    assert value(samples, "bulksms_twilio_concurrency_limit") == 7
    assert value(samples, "bulksms_twilio_in_flight") == 0
    for outcome in ("accepted", "failed", "unknown", "released"):
        assert value(samples, "bulksms_messages_sent_total", outcome=outcome) == 0
    assert value(samples, "bulksms_metrics_source_up", source="redis") == 1
    assert value(samples, "bulksms_metrics_source_up", source="postgres") == 1


def test_queue_depths_count_enqueued_tasks_and_stream_entries(
    client: FlaskClient, settings: Settings, redis_client: redis.Redis
) -> None:
    enqueue_chunks(create_celery_app(settings), uuid.uuid4(), range(5))
    for _ in range(3):
        push_callback(redis_client, callback_parameters(new_sid(), "sent"), "1", "1")
    samples = scrape(client)
    assert value(samples, "bulksms_queue_depth", queue="sms.send") == 5
    assert value(samples, "bulksms_queue_depth", queue="sms.maintenance") == 0
    assert value(samples, "bulksms_queue_depth", queue="sms.status") == 0
    assert value(samples, "bulksms_status_stream_length") == 3
    assert value(samples, "bulksms_status_stream_pending") == 0


def test_in_flight_counts_only_unexpired_slot_leases(client: FlaskClient, redis_client: redis.Redis) -> None:
    now_ms = int(time.time() * 1000)
    key = concurrency_key(ACCOUNT_SID)
    redis_client.zadd(key, {"held-1": now_ms + 60_000, "held-2": now_ms + 60_000, "expired": now_ms - 60_000})
    assert value(scrape(client), "bulksms_twilio_in_flight") == 2
    assert redis_client.zcard(key) == 3  # a scrape never changes the semaphore


def test_broadcasts_by_status_and_unfinished_messages_by_state(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    response = post_broadcast(client, auth, {"message": "Hi", "recipients": phone_numbers(4)})
    assert response.status_code == 202, response.get_data(as_text=True)
    samples = scrape(client)
    assert value(samples, "bulksms_broadcasts", status="queued") == 1
    assert value(samples, "bulksms_unfinished_broadcast_messages", state="pending") == 4


def test_counters_from_several_recorders_add_up_in_redis(client: FlaskClient, redis_client: redis.Redis) -> None:
    first, second = MetricsRecorder(), MetricsRecorder()
    first.increment("bulksms_messages_sent_total", {"outcome": "accepted"}, 3)
    second.increment("bulksms_messages_sent_total", {"outcome": "accepted"}, 4)
    first.observe_many("bulksms_twilio_request_duration_seconds", {"result": "accepted"}, [0.01, 0.2, 0.7])
    second.observe_many("bulksms_twilio_request_duration_seconds", {"result": "accepted"}, [20.0, 99.0])
    first.flush(redis_client)
    second.flush(redis_client)
    samples = scrape(client)
    assert value(samples, "bulksms_messages_sent_total", outcome="accepted") == 7
    histogram = "bulksms_twilio_request_duration_seconds"
    assert value(samples, f"{histogram}_count", result="accepted") == 5
    assert value(samples, f"{histogram}_sum", result="accepted") == pytest.approx(119.91)
    assert value(samples, f"{histogram}_bucket", result="accepted", le="0.025") == 1
    assert value(samples, f"{histogram}_bucket", result="accepted", le="1") == 3
    assert value(samples, f"{histogram}_bucket", result="accepted", le="30") == 4
    assert value(samples, f"{histogram}_bucket", result="accepted", le="+Inf") == 5


def test_a_recorder_keeps_its_counts_while_redis_is_unreachable(redis_client: redis.Redis) -> None:
    recorder = MetricsRecorder()
    recorder.increment("bulksms_twilio_rate_limited_total", None, 2)
    unreachable = redis.Redis(host="127.0.0.1", port=9, socket_connect_timeout=0.2)
    recorder.flush(unreachable)  # logs a warning, never raises
    recorder.flush(redis_client)
    assert redis_client.hget("bulksms:metrics:bulksms_twilio_rate_limited_total", "") == b"2"


def test_without_redis_the_scrape_still_answers_with_redis_down(settings: Settings) -> None:
    down = settings.replace(redis_url="redis://127.0.0.1:9/0")
    text = render_metrics(redis.Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.2), None, down)
    samples = parse_exposition(text)
    assert value(samples, "bulksms_metrics_source_up", source="redis") == 0
    assert value(samples, "bulksms_twilio_concurrency_limit") == 7


def post_signed(client: FlaskClient, parameters: dict[str, str], signature: str | None = None) -> Any:
    query = "message_id=42&attempt=1"
    signed = signature or twilio_signature(TOKEN, f"{PUBLIC_URL}{CALLBACK_PATH}?{query}", parameters)
    return client.post(f"{CALLBACK_PATH}?{query}", data=parameters, headers={"X-Twilio-Signature": signed})


def test_webhook_metrics_count_callbacks_by_status_and_time_them(settings: Settings, redis_client: redis.Redis) -> None:
    app = create_webhook_app(settings.replace(database_url=None, metrics_token=METRICS_TOKEN))
    client = app.test_client()
    for status in ("delivered", "delivered", "sent", "no-such-status"):
        assert post_signed(client, callback_parameters(new_sid(), status)).status_code == 204
    assert post_signed(client, callback_parameters(new_sid(), "sent"), signature="forged").status_code == 403
    samples = scrape(client, METRICS_TOKEN)
    assert value(samples, "bulksms_callbacks_received_total", status="delivered") == 2
    assert value(samples, "bulksms_callbacks_received_total", status="sent") == 1
    assert value(samples, "bulksms_callbacks_received_total", status="other") == 1
    assert value(samples, "bulksms_callbacks_rejected_total", reason="invalid_signature") == 1
    assert value(samples, "bulksms_webhook_request_duration_seconds_count", code="204") == 4
    assert value(samples, "bulksms_webhook_request_duration_seconds_count", code="403") == 1
    assert value(samples, "bulksms_status_stream_length") == 4
    assert redis_client.xlen(STREAM_KEY) == 4
    # The webhook service has no database: no database gauges, no postgres source.
    assert value(samples, "bulksms_metrics_source_up", source="postgres") is None
    assert total(samples, "bulksms_broadcasts") == 0


def test_with_a_metrics_token_every_scrape_must_present_it(settings: Settings, engine: Any, redis_client: Any) -> None:
    for app in (
        next(build_app(settings.replace(metrics_token=METRICS_TOKEN))),
        create_webhook_app(settings.replace(database_url=None, metrics_token=METRICS_TOKEN)),
    ):
        client = app.test_client()
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {METRICS_TOKEN}"}):
            refused = client.get("/metrics", headers=headers)
            assert refused.status_code == 401
            assert refused.content_type == "application/problem+json"
            assert refused.headers["WWW-Authenticate"].startswith("Bearer")
            assert "bulksms_" not in refused.get_data(as_text=True)
        assert value(scrape(client, METRICS_TOKEN), "bulksms_metrics_source_up", source="redis") == 1


def test_without_a_token_the_api_serves_metrics_and_the_internet_facing_webhook_does_not(
    client: FlaskClient, settings: Settings
) -> None:
    assert value(scrape(client), "bulksms_metrics_source_up", source="redis") == 1
    webhook = create_webhook_app(settings.replace(database_url=None)).test_client()
    assert webhook.get("/metrics").status_code == 404
    assert webhook.get("/healthz").status_code == 200
