"""Per-key limits: requests per minute and recipients per UTC day, counted in Redis for every API process."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.platform.api_keys import create_api_key, update_api_key
from shared.platform.models import Broadcast
from shared.platform.settings import Settings
from tests.api.conftest import build_app, phone_numbers, post_broadcast


def bearer(db_session: Session, **options: Any) -> dict[str, str]:
    _, plaintext = create_api_key(db_session, "limited", **options)
    return {"Authorization": f"Bearer {plaintext}"}


def assert_429(response: Any, problem: str, longest_wait: int) -> None:
    assert response.status_code == 429, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["type"] == f"urn:bulksms:problem:{problem}"
    assert 1 <= int(response.headers["Retry-After"]) <= longest_wait


@pytest.fixture
def second_app(settings: Settings, engine: Any, redis_client: Any) -> Any:
    """Another API process of the same deployment (same PostgreSQL and Redis)."""
    yield from build_app(settings)


def test_the_request_limit_is_per_key_and_shared_by_every_api_process(
    client: FlaskClient, second_app: Flask, db_session: Session, auth: dict[str, str]
) -> None:
    limited = bearer(db_session, scope="read", rate_limit_per_minute=4)
    other_process = second_app.test_client()
    answers = [(client if index % 2 else other_process).get("/v1/broadcasts", headers=limited) for index in range(4)]
    assert [answer.status_code for answer in answers] == [200] * 4
    assert_429(client.get("/v1/broadcasts", headers=limited), "rate-limited", 60)
    assert_429(other_process.get("/v1/broadcasts", headers=limited), "rate-limited", 60)
    assert client.get("/v1/broadcasts", headers=auth).status_code == 200  # another key: its own count


def test_the_setting_applies_to_keys_without_their_own_limit(
    settings: Settings, engine: Any, redis_client: Any, db_session: Session
) -> None:
    app = next(build_app(settings.replace(rate_limit_per_minute=2)))
    client = app.test_client()
    headers = bearer(db_session, scope="read")
    assert [client.get("/v1/broadcasts", headers=headers).status_code for _ in range(3)] == [200, 200, 429]


def test_the_daily_limit_counts_accepted_recipients_and_refuses_what_does_not_fit(
    client: FlaskClient, db_session: Session
) -> None:
    headers = bearer(db_session, daily_message_limit=10)
    assert post_broadcast(client, headers, {"message": "hi", "recipients": phone_numbers(6)}).status_code == 202
    # Invalid recipients skipped and duplicates are not accepted, so not counted; a dry run counts nothing.
    body = {"message": "hi", "recipients": [*phone_numbers(2, 100), "+4470", "+4470"], "on_invalid": "skip"}
    assert post_broadcast(client, headers, body).status_code == 202  # 8 of 10
    dry = {"message": "hi", "recipients": phone_numbers(50, 200), "dry_run": True}
    assert post_broadcast(client, headers, dry).status_code == 200
    # Refused before anything is stored (a 422 does not use the allowance either).
    refused = post_broadcast(client, headers, {"message": "hi", "recipients": phone_numbers(3, 300)})
    assert_429(refused, "daily-limit", 86_400)
    assert refused.get_json()["limit"] == 10
    assert post_broadcast(client, headers, {"message": "hi", "recipients": ["nope", "+44"]}).status_code == 422
    assert db_session.scalar(select(func.count()).select_from(Broadcast)) == 2
    assert post_broadcast(client, headers, {"message": "hi", "recipients": phone_numbers(2, 400)}).status_code == 202


def test_an_operator_raises_a_keys_daily_limit(client: FlaskClient, db_session: Session) -> None:
    api_key, plaintext = create_api_key(db_session, "limited", daily_message_limit=1)
    headers = {"Authorization": f"Bearer {plaintext}"}
    assert post_broadcast(client, headers, {"message": "hi", "recipients": phone_numbers(2)}).status_code == 429
    update_api_key(db_session, api_key.id, daily_message_limit=5)
    assert post_broadcast(client, headers, {"message": "hi", "recipients": phone_numbers(2)}).status_code == 202
