"""Every API request: an X-Request-Id echoed back, and a JSON log line carrying it, without the key."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from shared.platform.logging_config import configure_logging
from shared.platform.settings import Settings

from .conftest import phone_numbers, post_broadcast


@pytest.fixture
def log_stream(settings: Settings) -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging(settings.replace(log_format="json"), "api", stream=stream)
    yield stream
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def log_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_request_id_is_echoed_and_carried_by_the_log_lines(
    client: FlaskClient, auth: dict[str, str], api_key: str, log_stream: io.StringIO
) -> None:
    response = post_broadcast(
        client, auth, {"message": "Hello", "recipients": phone_numbers(3)}, **{"X-Request-Id": "trace-123"}
    )
    assert response.status_code == 202
    assert response.headers["X-Request-Id"] == "trace-123"
    lines = log_lines(log_stream)
    request_line = next(line for line in lines if line["logger"] == "api.requests")
    assert request_line["request_id"] == "trace-123"
    assert request_line["path"] == "/v1/broadcasts" and request_line["status"] == 202
    accepted = next(line for line in lines if "accepted in" in str(line["message"]))
    assert accepted["request_id"] == "trace-123"
    assert api_key not in log_stream.getvalue()
    assert api_key.split("_", 2)[2] not in log_stream.getvalue()


def test_a_request_id_is_generated_when_absent_or_unusable(client: FlaskClient, log_stream: io.StringIO) -> None:
    first = client.get("/healthz")
    second = client.get("/healthz", headers={"X-Request-Id": "bad id\twith spaces" + "x" * 200})
    assert len(first.headers["X-Request-Id"]) == 32
    assert second.headers["X-Request-Id"] not in ("", first.headers["X-Request-Id"])
    assert [line["request_id"] for line in log_lines(log_stream)] == [
        first.headers["X-Request-Id"],
        second.headers["X-Request-Id"],
    ]


def test_phone_numbers_in_paths_are_masked(client: FlaskClient, auth: dict[str, str], log_stream: io.StringIO) -> None:
    client.delete("/v1/opt-outs/+447700900123", headers=auth)
    output = log_stream.getvalue()
    assert "+447700900123" not in output
    assert "*********0123" in output
