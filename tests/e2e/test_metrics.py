"""Metrics written by real worker processes: after a broadcast, the API's `GET /metrics` shows what was sent, how
many requests Twilio answered and how fast, and the 20429 answers of a rate-limit storm."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from api.app import create_app
from shared.platform.api_keys import create_api_key
from shared.platform.settings import Settings
from tests.conftest import SimulatorControl, WorkerProcesses, wait_until
from tests.metrics_text import parse_exposition, total, value

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
REQUEST_COUNT = "bulksms_twilio_request_duration_seconds_count"


@pytest.fixture
def api_client(settings: Settings) -> FlaskClient:
    return create_app(settings).test_client()


@pytest.fixture
def api_key(db_session: Session) -> str:
    _, plaintext = create_api_key(db_session, "e2e-metrics")
    db_session.commit()
    return plaintext


def submit(client: FlaskClient, key: str, count: int) -> dict[str, Any]:
    recipients = [f"+1555{index:07d}" for index in range(count)]
    response = client.post(
        "/v1/broadcasts",
        json={"message": "Metrics", "recipients": recipients},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 202, response.get_data(as_text=True)
    return dict(response.get_json())


def scrape(client: FlaskClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    return parse_exposition(response.get_data(as_text=True))


def test_a_broadcast_sent_by_a_worker_shows_in_the_api_metrics(
    api_client: FlaskClient,
    api_key: str,
    workers: WorkerProcesses,
    simulator: SimulatorControl,
    settings: Settings,
    redis_client: redis.Redis,  # an empty Redis: counters start at zero
) -> None:
    submit(api_client, api_key, 250)  # three chunks
    workers.start_worker(concurrency=2)

    samples: Samples = wait_until(
        lambda: (
            (s := scrape(api_client))
            and (value(s, "bulksms_messages_sent_total", outcome="accepted") or 0) >= 250
            and s
        ),
        90,
        message="250 accepted sends in /metrics",
    )
    assert value(samples, "bulksms_messages_sent_total", outcome="accepted") == 250
    assert value(samples, "bulksms_messages_sent_total", outcome="failed") == 0
    assert value(samples, "bulksms_chunks_processed_total") == 3
    assert total(samples, REQUEST_COUNT) == simulator.summary()["requests"] == 250
    assert value(samples, "bulksms_twilio_requests_total", result="accepted") == 250
    assert value(samples, "bulksms_twilio_request_duration_seconds_bucket", result="accepted", le="+Inf") == 250
    assert value(samples, "bulksms_twilio_concurrency_limit") == settings.twilio_max_concurrency
    assert value(samples, "bulksms_twilio_rate_limited_total") == 0
    assert value(samples, "bulksms_queue_depth", queue="sms.send") == 0
    # Nothing is sending now: every slot went back to the semaphore.
    assert value(samples, "bulksms_twilio_in_flight") == 0


def test_a_rate_limit_storm_shows_as_20429_answers(
    api_client: FlaskClient,
    api_key: str,
    workers: WorkerProcesses,
    simulator: SimulatorControl,
    redis_client: redis.Redis,  # an empty Redis: counters start at zero
) -> None:
    # Twilio allows far fewer requests in flight than our cap (100): many first tries get 20429.
    simulator.configure(max_concurrency=4, latency_ms=30)
    submit(api_client, api_key, 200)
    workers.start_worker(concurrency=2)

    samples: Samples = wait_until(
        lambda: (
            (s := scrape(api_client))
            and (value(s, "bulksms_messages_sent_total", outcome="accepted") or 0) >= 200
            and s
        ),
        180,
        message="200 accepted sends in /metrics",
    )
    summary = simulator.summary()
    assert value(samples, "bulksms_messages_sent_total", outcome="accepted") == 200
    assert summary["rejected_429"] > 0, "the storm did not happen: the test proves nothing"
    assert value(samples, "bulksms_twilio_rate_limited_total") == summary["rejected_429"]
    assert value(samples, "bulksms_twilio_requests_total", result="rate_limited") == summary["rejected_429"]
    assert total(samples, REQUEST_COUNT) == summary["requests"]
