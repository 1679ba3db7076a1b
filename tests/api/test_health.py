"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from bulksms_tools.local_services import find_free_port
from shared.platform.settings import Settings
from tests.api.conftest import build_app


def test_healthz_answers_without_any_dependency(settings: Settings) -> None:
    closed_port = find_free_port()
    broken = settings.replace(
        database_url=f"postgresql://bulksms@127.0.0.1:{closed_port}/bulksms",
        redis_url=f"redis://127.0.0.1:{closed_port}/0",
    )
    for app in build_app(broken):
        response = app.test_client().get("/healthz")

        assert response.status_code == 200
        assert response.get_json() == {"status": "ok"}


def test_readyz_is_ready_when_postgres_redis_and_migrations_are(client: FlaskClient) -> None:
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.get_json() == {
        "status": "ready",
        "checks": {"postgres": "ok", "migrations": "ok", "redis": "ok"},
    }


def test_readyz_names_redis_when_it_is_unreachable(settings: Settings, engine: Any) -> None:
    for app in build_app(settings.replace(redis_url=f"redis://127.0.0.1:{find_free_port()}/0")):
        response = app.test_client().get("/readyz")

        assert response.status_code == 503
        assert response.content_type == "application/problem+json"
        assert response.get_json()["checks"] == {"postgres": "ok", "migrations": "ok", "redis": "unreachable"}


def test_readyz_names_postgres_when_it_is_unreachable(settings: Settings, redis_client: Any) -> None:
    closed_port = find_free_port()
    for app in build_app(settings.replace(database_url=f"postgresql://bulksms@127.0.0.1:{closed_port}/bulksms")):
        response = app.test_client().get("/readyz")

        assert response.status_code == 503
        assert response.get_json()["checks"]["postgres"] == "unreachable"
        assert "postgres" in response.get_json()["detail"]


def test_unknown_paths_and_wrong_methods_are_problem_documents(client: FlaskClient) -> None:
    missing = client.get("/v2/nothing")
    wrong_method = client.delete("/v1/broadcasts")

    assert missing.status_code == 404
    assert missing.content_type == "application/problem+json"
    assert wrong_method.status_code == 405
    assert wrong_method.content_type == "application/problem+json"
    assert "POST" in wrong_method.headers["Allow"]
