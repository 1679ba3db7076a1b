"""API test fixtures: the Flask app on the test database and Redis, and a valid API key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from api import create_app
from api.context import EXTENSION_NAME
from shared.platform.api_keys import create_api_key
from shared.platform.db import create_database_engine
from shared.platform.settings import Settings, load_settings


# The API never talks to Twilio: these replace the suite-wide fixtures of the same names (which also start the
# Twilio simulator) with the same test database and Redis, and nothing else.
@pytest.fixture(scope="session")
def api_settings(database_url: str, redis_url: str) -> Settings:
    # Like the suite's base settings, callback URLs may be local receivers; tests of the refusal turn it off.
    return load_settings(
        {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "ALLOW_PRIVATE_CALLBACK_URLS": "true"}, dotenv_path=None
    )


@pytest.fixture
def settings(api_settings: Settings) -> Settings:
    return api_settings


@pytest.fixture(scope="session")
def engine(api_settings: Settings) -> Iterator[Any]:
    engine = create_database_engine(api_settings)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def redis_client(api_settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(str(api_settings.redis_url))
    yield client
    client.close()


def build_app(settings: Settings) -> Iterator[Flask]:
    app = create_app(settings)
    app.config["TESTING"] = True
    yield app
    services = app.extensions[EXTENSION_NAME]
    services.engine.dispose()
    services.redis_client.close()


@pytest.fixture
def app(settings: Settings, engine: Any, redis_client: Any) -> Iterator[Flask]:
    """`engine` and `redis_client` are requested so that tables and Redis start empty."""
    yield from build_app(settings)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def api_key(db_session: Session) -> str:
    _, plaintext = create_api_key(db_session, "tests", scope="admin")
    return plaintext


@pytest.fixture
def auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def phone_numbers(count: int, start: int = 0) -> list[str]:
    """`count` distinct valid E.164 numbers."""
    return [f"+1555{start + index:07d}" for index in range(count)]


def post_broadcast(client: FlaskClient, auth: dict[str, str], body: Any, **headers: str) -> Any:
    return client.post("/v1/broadcasts", json=body, headers={**auth, **headers})
