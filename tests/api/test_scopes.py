"""Scopes: every route is in api.auth.ENDPOINT_SCOPES, and each scope reaches what docs/api.md says it does."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from api.auth import DASHBOARD, ENDPOINT_SCOPES, PUBLIC
from shared.platform.api_keys import SCOPES, create_api_key
from tests.api.conftest import phone_numbers


def test_every_route_of_the_api_has_a_scope(app: Flask) -> None:
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    assert endpoints - ENDPOINT_SCOPES.keys() == set(), "add these endpoints to api.auth.ENDPOINT_SCOPES"
    assert ENDPOINT_SCOPES.keys() - endpoints == set(), "these endpoints no longer exist"
    assert set(ENDPOINT_SCOPES.values()) <= {*SCOPES, PUBLIC, DASHBOARD}


def test_only_get_endpoints_are_open_to_read_keys(app: Flask) -> None:
    for rule in app.url_map.iter_rules():
        if ENDPOINT_SCOPES[rule.endpoint] == "read":
            assert rule.methods is not None and rule.methods - {"HEAD", "OPTIONS"} == {"GET"}, rule.endpoint


def headers_of(db_session: Session, scope: str) -> dict[str, str]:
    _, plaintext = create_api_key(db_session, f"{scope} key", scope=scope)
    return {"Authorization": f"Bearer {plaintext}"}


def status_codes(client: FlaskClient, headers: dict[str, str], broadcast_id: str) -> dict[str, int]:
    calls: dict[str, Any] = {
        "list": lambda: client.get("/v1/broadcasts", headers=headers),
        "show": lambda: client.get(f"/v1/broadcasts/{broadcast_id}", headers=headers),
        "messages.csv": lambda: client.get(f"/v1/broadcasts/{broadcast_id}/messages.csv", headers=headers),
        "create": lambda: client.post(
            "/v1/broadcasts", json={"message": "hi", "recipients": phone_numbers(1), "dry_run": True}, headers=headers
        ),
        "pause": lambda: client.post(f"/v1/broadcasts/{broadcast_id}/pause", headers=headers),
        "add opt-out": lambda: client.post("/v1/opt-outs", json={"number": "+447700900001"}, headers=headers),
        "list opt-outs": lambda: client.get("/v1/opt-outs", headers=headers),
        "export opt-outs": lambda: client.get("/v1/opt-outs.csv", headers=headers),
        "delete opt-out": lambda: client.delete("/v1/opt-outs/+447700900001", headers=headers),
        "erase recipient": lambda: client.delete("/v1/recipients/+447700900002", headers=headers),
    }
    return {name: call().status_code for name, call in calls.items()}


@pytest.mark.parametrize(
    ("scope", "refused"),
    [
        ("read", {"create", "pause", "add opt-out", "list opt-outs", "export opt-outs", "delete opt-out",
                  "erase recipient"}),
        ("send", {"list opt-outs", "export opt-outs", "delete opt-out", "erase recipient"}),
        ("admin", set()),
    ],
)  # fmt: skip
def test_what_each_scope_may_do(
    client: FlaskClient, db_session: Session, auth: dict[str, str], scope: str, refused: set[str]
) -> None:
    created = client.post("/v1/broadcasts", json={"message": "hi", "recipients": phone_numbers(2)}, headers=auth)
    assert created.status_code == 202
    headers = headers_of(db_session, scope)
    # Another key's broadcast is a 404 for any scope, so pausing needs one of its own: made by the admin fixture,
    # the broadcast is someone else's; a 404 there still proves the scope let the request through.
    codes = status_codes(client, headers, created.get_json()["id"])
    assert {name for name, code in codes.items() if code == 403} == refused, codes
    denied = client.delete("/v1/opt-outs/+447700900001", headers=headers)
    if scope != "admin":
        assert denied.mimetype == "application/problem+json"
        assert denied.get_json()["type"] == "urn:bulksms:problem:insufficient-scope"
        assert denied.get_json()["required_scope"] == "admin"


def test_a_revoked_or_missing_key_is_still_401_before_any_scope(client: FlaskClient) -> None:
    response = client.get("/v1/broadcasts")
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
