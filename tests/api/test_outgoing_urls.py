"""URLs a client gives us that lead into our own network are refused at intake (400 problem+json, nothing
stored), unless ALLOW_PRIVATE_CALLBACK_URLS is on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.platform.settings import Settings
from tests.api.conftest import build_app, phone_numbers, post_broadcast


@pytest.fixture
def settings(api_settings: Settings) -> Settings:
    return api_settings.replace(allow_private_callback_urls=False)


def stored_rows(db_session: Session) -> tuple[int, int]:
    db_session.rollback()
    return (
        db_session.execute(text("SELECT count(*) FROM broadcasts")).scalar_one(),
        db_session.execute(text("SELECT count(*) FROM messages")).scalar_one(),
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"callback_url": "http://127.0.0.1:8000/done"},
        {"callback_url": "http://localhost:6379/"},
        {"callback_url": "https://169.254.169.254/latest/meta-data/iam/"},
        {"callback_url": "https://[fd00:ec2::254]/latest/"},
        {"callback_url": "https://[::ffff:127.0.0.1]/done"},
        {"callback_url": "https://10.0.0.8/hooks"},
        {"callback_url": "https://192.168.1.1/admin"},
        {"media_urls": ["https://169.254.169.254/latest/meta-data/a.png"]},
        {"media_urls": ["https://cdn.example.net/a.png", "https://10.0.0.1/a.png"]},
    ],
)
def test_a_url_into_our_network_is_refused_with_400_and_nothing_stored(
    client: FlaskClient, auth: dict[str, str], db_session: Session, fields: dict[str, Any]
) -> None:
    before = stored_rows(db_session)

    response = post_broadcast(client, auth, {"message": "hi", "recipients": phone_numbers(3), **fields})

    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.headers["Content-Type"].startswith("application/problem+json")
    problem = response.get_json()
    assert problem["type"] == "urn:bulksms:problem:url-not-allowed"
    [field] = fields
    assert field in problem["errors"]
    assert stored_rows(db_session) == before


def test_a_public_or_unresolvable_host_is_accepted(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    response = post_broadcast(
        client,
        auth,
        {"message": "hi", "recipients": phone_numbers(1), "callback_url": "https://93.184.215.14/hooks/bulksms"},
    )
    assert response.status_code == 202, response.get_data(as_text=True)
    # No resolver reaches this name now: it leads nowhere, and each POST checks it again first.
    response = post_broadcast(
        client, auth, {"message": "hi", "recipients": phone_numbers(1, 1), "callback_url": "https://hooks.invalid/x"}
    )
    assert response.status_code == 202, response.get_data(as_text=True)


@pytest.fixture
def development_app(api_settings: Settings, engine: Any, redis_client: Any) -> Iterator[Flask]:
    yield from build_app(api_settings.replace(allow_private_callback_urls=True))


def test_allow_private_callback_urls_lets_development_receivers_through(
    development_app: Flask, auth: dict[str, str]
) -> None:
    response = post_broadcast(
        development_app.test_client(),
        auth,
        {"message": "hi", "recipients": phone_numbers(2), "callback_url": "http://127.0.0.1:8000/done"},
    )
    assert response.status_code == 202, response.get_data(as_text=True)
