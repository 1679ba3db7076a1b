"""`estimated_seconds` / `estimated_finish_at` in the 202 and in GET: segments over the paced throughput."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from flask.testing import FlaskClient

from shared.platform.settings import Settings
from tests.api.conftest import phone_numbers, post_broadcast

TWO_SEGMENTS = "A message of two segments. " + "x" * 150


@pytest.fixture
def settings(api_settings: Settings) -> Settings:
    return api_settings.replace(twilio_segments_per_second="10")


def test_the_202_and_get_say_how_long_sending_takes_at_the_paced_rate(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    response = post_broadcast(client, auth, {"message": TWO_SEGMENTS, "recipients": phone_numbers(50)})
    assert response.status_code == 202
    body = response.get_json()
    assert body["estimated_seconds"] == 10.0  # 50 recipients x 2 segments at 10 segments/s
    finish = datetime.fromisoformat(body["estimated_finish_at"])
    created = datetime.fromisoformat(body["created_at"])
    assert timedelta(seconds=9) < finish - created < timedelta(seconds=20)

    shown = client.get(body["links"]["self"], headers=auth).get_json()
    assert shown["estimated_seconds"] == 10.0  # nothing sent yet: no worker runs here
