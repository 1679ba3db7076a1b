"""What a client reads about a broadcast's progress and completion, and the callback_url it may give."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.platform.api_keys import authenticate_api_key
from tests.api.conftest import phone_numbers, post_broadcast


def create(client: FlaskClient, auth: dict[str, str], count: int, **fields: Any) -> dict[str, Any]:
    response = post_broadcast(client, auth, {"message": "hi", "recipients": phone_numbers(count), **fields})
    assert response.status_code == 202, response.get_data(as_text=True)
    return dict(response.get_json())


def set_states(db_session: Session, broadcast_id: str, states: list[tuple[str, int | None]]) -> None:
    ids = db_session.execute(
        text("SELECT id FROM messages WHERE broadcast_id = :id ORDER BY id"), {"id": broadcast_id}
    ).scalars()
    for message_id, (state, code) in zip(ids, states, strict=False):
        db_session.execute(
            text("UPDATE messages SET state = :state, error_code = :code WHERE id = :id"),
            {"state": state, "code": code, "id": message_id},
        )
    db_session.commit()


def test_progress_shows_shares_delivery_rate_and_error_codes(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    broadcast = create(client, auth, 20)
    set_states(
        db_session,
        broadcast["id"],
        [("delivered", None)] * 6
        + [("undelivered", 30007)] * 2
        + [("undelivered", 30003)]
        + [("failed", 21211)] * 3
        + [("retry_scheduled", 30003)] * 2  # not counted among error codes: another attempt is coming
        + [("sent", None)] * 2
        + [("accepted", None)]
        + [("sending", None)]
        + [("unknown", None)],  # the last one stays pending
    )

    body = client.get(f"/v1/broadcasts/{broadcast['id']}", headers=auth).get_json()

    assert body["messages"] == {
        "total": 20,
        "pending": 1,
        "sending": 1,
        "accepted": 1,
        "failed": 3,
        "unknown": 1,
        "sent": 2,
        "delivered": 6,
        "undelivered": 3,
        "retry_scheduled": 2,
        "skipped": 0,
        "canceled": 0,
        "expired": 0,
    }
    assert body["progress"] == {
        "submitted": 17,
        "submitted_percent": 85.0,
        "final": 12,
        "final_percent": 60.0,
        "delivered": 6,
        "delivery_rate_percent": 50.0,
        "retry_scheduled": 2,
        "awaiting_receipt": 3,
    }
    assert body["error_codes"] == [
        {"error_code": 21211, "count": 3},
        {"error_code": 30007, "count": 2},
        {"error_code": 30003, "count": 1},
    ]
    assert body["completion"] is None
    for timing in ("created_at", "first_send_at", "last_send_at", "last_receipt_at", "submitted_at", "completed_at"):
        assert timing in body
    assert body["created_at"] is not None and body["completed_at"] is None


def test_a_fresh_broadcast_has_no_rates_yet(client: FlaskClient, auth: dict[str, str]) -> None:
    broadcast = create(client, auth, 3)

    body = client.get(f"/v1/broadcasts/{broadcast['id']}", headers=auth).get_json()

    assert body["progress"]["submitted_percent"] == 0.0
    assert body["progress"]["delivery_rate_percent"] is None
    assert body["error_codes"] == []


def test_a_completed_broadcast_says_how_it_completed(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    broadcast = create(client, auth, 3)
    set_states(db_session, broadcast["id"], [("delivered", None), ("delivered", None), ("sent", None)])
    db_session.execute(
        text("UPDATE broadcasts SET status = 'completed', completed_at = now() WHERE id = :id"), {"id": broadcast["id"]}
    )
    db_session.commit()

    body = client.get(f"/v1/broadcasts/{broadcast['id']}", headers=auth).get_json()

    assert body["status"] == "completed" and body["completed_at"] is not None
    assert body["completion"] == "no_receipt_timeout"
    assert body["progress"]["awaiting_receipt"] == 1


def test_callback_url_is_stored_and_shown(client: FlaskClient, auth: dict[str, str], db_session: Session) -> None:
    broadcast = create(client, auth, 2, callback_url="https://hooks.example.com/bulksms?campaign=7")

    stored = db_session.execute(
        text("SELECT callback_url FROM broadcasts WHERE id = :id"), {"id": broadcast["id"]}
    ).scalar_one()
    assert stored == "https://hooks.example.com/bulksms?campaign=7"
    body = client.get(f"/v1/broadcasts/{broadcast['id']}", headers=auth).get_json()
    assert body["callback_url"] == stored
    assert (body["callback_sent_at"], body["callback_attempts"]) == (None, 0)


def test_plain_http_callback_url_is_accepted_for_local_development(client: FlaskClient, auth: dict[str, str]) -> None:
    create(client, auth, 1, callback_url="http://localhost:8080/done")
    create(client, auth, 1, callback_url="http://127.0.0.1:8080/done")


@pytest.mark.parametrize(
    "callback_url", ["ftp://example.com/done", "http://example.com/done", "https://", "example.com/done", 42]
)
def test_a_bad_callback_url_is_refused_and_nothing_is_stored(
    client: FlaskClient, auth: dict[str, str], db_session: Session, callback_url: Any
) -> None:
    response = post_broadcast(
        client, auth, {"message": "hi", "recipients": ["+15551234567"], "callback_url": callback_url}
    )

    assert response.status_code == 422
    assert response.content_type == "application/problem+json"
    assert "callback_url" in response.get_json()["errors"]
    assert db_session.execute(text("SELECT count(*) FROM broadcasts")).scalar_one() == 0


def test_a_key_without_signing_secret_cannot_ask_for_a_callback(
    client: FlaskClient, auth: dict[str, str], api_key: str, db_session: Session
) -> None:
    key = authenticate_api_key(db_session, api_key)
    assert key is not None and key.signing_secret is not None and len(key.signing_secret) == 64
    db_session.execute(text("UPDATE api_keys SET signing_secret = NULL"))  # a key from before signing secrets
    db_session.commit()

    refused = post_broadcast(
        client, auth, {"message": "hi", "recipients": ["+15551234567"], "callback_url": "https://example.com/x"}
    )
    without_callback = post_broadcast(client, auth, {"message": "hi", "recipients": ["+15551234567"]})

    assert refused.status_code == 422
    assert "signing secret" in refused.get_json()["detail"]
    assert without_callback.status_code == 202


def test_the_idempotency_fingerprint_covers_the_callback_url(client: FlaskClient, auth: dict[str, str]) -> None:
    body = {"message": "hi", "recipients": ["+15551234567"], "callback_url": "https://example.com/a"}
    first = post_broadcast(client, auth, body, **{"Idempotency-Key": "k1"})
    same = post_broadcast(client, auth, body, **{"Idempotency-Key": "k1"})
    other = post_broadcast(client, auth, {**body, "callback_url": "https://example.com/b"}, **{"Idempotency-Key": "k1"})

    assert (first.status_code, same.status_code, other.status_code) == (202, 200, 409)
