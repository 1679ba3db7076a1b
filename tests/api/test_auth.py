"""API keys: creating, listing and revoking them; what the API does with missing, wrong or revoked keys."""

from __future__ import annotations

import hashlib

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.platform.api_keys import authenticate_api_key, create_api_key, list_api_keys, revoke_api_key
from shared.platform.models import ApiKey, Broadcast
from tests.api.conftest import post_broadcast

BROADCAST = {"message": "hi", "recipients": ["+447700900123"]}


def test_a_created_key_authenticates_and_only_its_digest_is_stored(db_session: Session) -> None:
    api_key, plaintext = create_api_key(db_session, "marketing")

    assert plaintext.startswith(f"bsk_{api_key.prefix}_")
    assert len(plaintext.split("_", 2)[2]) >= 32
    stored = db_session.scalars(select(ApiKey)).one()
    assert stored.secret_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    assert plaintext not in (stored.name, stored.prefix, stored.secret_hash)
    authenticated = authenticate_api_key(db_session, plaintext)
    assert authenticated is not None and authenticated.id == api_key.id


@pytest.mark.parametrize(
    "presented",
    ["", "bsk", "bsk__secret", "Bearer", "bsk_abcdefgh_wrong", "xyz_abcdefgh_secret"],
)
def test_unknown_or_malformed_keys_do_not_authenticate(db_session: Session, presented: str) -> None:
    create_api_key(db_session, "marketing")

    assert authenticate_api_key(db_session, presented) is None


def test_a_key_with_the_right_prefix_and_a_wrong_secret_does_not_authenticate(db_session: Session) -> None:
    api_key, plaintext = create_api_key(db_session, "marketing")

    assert authenticate_api_key(db_session, plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")) is None
    assert authenticate_api_key(db_session, f"bsk_{api_key.prefix}_") is None


def test_a_revoked_key_no_longer_authenticates(db_session: Session) -> None:
    api_key, plaintext = create_api_key(db_session, "marketing")

    assert revoke_api_key(db_session, api_key.id) is True
    assert authenticate_api_key(db_session, plaintext) is None
    assert revoke_api_key(db_session, 987654) is False
    assert [(key.name, key.revoked_at is not None) for key in list_api_keys(db_session)] == [("marketing", True)]


def test_list_shows_every_key_oldest_first(db_session: Session) -> None:
    create_api_key(db_session, "first")
    create_api_key(db_session, "second")

    assert [key.name for key in list_api_keys(db_session)] == ["first", "second"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer bsk_abcdefgh_not-a-real-key"},
    ],
    ids=["missing", "empty", "wrong-scheme", "unknown-key"],
)
def test_requests_without_a_valid_key_are_401(
    client: FlaskClient, api_key: str, db_session: Session, headers: dict[str, str]
) -> None:
    for response in (
        client.post("/v1/broadcasts", json=BROADCAST, headers=headers),
        client.get("/v1/broadcasts", headers=headers),
    ):
        assert response.status_code == 401
        assert response.content_type == "application/problem+json"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert db_session.scalar(select(func.count()).select_from(Broadcast)) == 0


def test_a_revoked_key_is_401(client: FlaskClient, db_session: Session) -> None:
    api_key, plaintext = create_api_key(db_session, "old")
    revoke_api_key(db_session, api_key.id)

    response = post_broadcast(client, {"Authorization": f"Bearer {plaintext}"}, BROADCAST)

    assert response.status_code == 401
    assert db_session.scalar(select(func.count()).select_from(Broadcast)) == 0


def test_a_key_only_sees_its_own_broadcasts(client: FlaskClient, auth: dict[str, str], db_session: Session) -> None:
    _, other_key = create_api_key(db_session, "other team")
    other = {"Authorization": f"Bearer {other_key}"}
    broadcast_id = post_broadcast(client, auth, BROADCAST).get_json()["id"]

    assert client.get(f"/v1/broadcasts/{broadcast_id}", headers=other).status_code == 404
    assert client.get(f"/v1/broadcasts/{broadcast_id}/messages", headers=other).status_code == 404
    assert client.get("/v1/broadcasts", headers=other).get_json()["items"] == []
    assert client.get(f"/v1/broadcasts/{broadcast_id}", headers=auth).status_code == 200
