"""Reading broadcasts back: progress counts, message paging, the newest-first list."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from flask.testing import FlaskClient
from sqlalchemy import Engine, event, update
from sqlalchemy.orm import Session

from shared.platform.models import Message
from tests.api.conftest import phone_numbers, post_broadcast


def create(client: FlaskClient, auth: dict[str, str], count: int, start: int = 0) -> str:
    response = post_broadcast(client, auth, {"message": "hi", "recipients": phone_numbers(count, start)})
    assert response.status_code == 202
    return str(response.get_json()["id"])


def set_state(db_session: Session, broadcast_id: str, ids: list[int], state: str) -> None:
    db_session.execute(
        update(Message).where(Message.broadcast_id == broadcast_id, Message.id.in_(ids)).values(state=state)
    )
    db_session.commit()


def test_progress_counts_messages_in_each_state(client: FlaskClient, auth: dict[str, str], db_session: Session) -> None:
    broadcast_id = create(client, auth, 20)
    ids = [item["id"] for item in client.get(f"/v1/broadcasts/{broadcast_id}/messages", headers=auth).json["items"]]
    set_state(db_session, broadcast_id, ids[:5], "accepted")
    set_state(db_session, broadcast_id, ids[5:7], "failed")
    set_state(db_session, broadcast_id, ids[7:8], "unknown")
    set_state(db_session, broadcast_id, ids[8:11], "sending")

    response = client.get(f"/v1/broadcasts/{broadcast_id}", headers=auth)

    assert response.status_code == 200
    body = response.get_json()
    assert body["messages"] == {
        "total": 20,
        "pending": 9,
        "sending": 3,
        "accepted": 5,
        "failed": 2,
        "unknown": 1,
        "sent": 0,
        "delivered": 0,
        "undelivered": 0,
        "retry_scheduled": 0,
        "skipped": 0,
        "canceled": 0,
        "expired": 0,
    }
    assert body["status"] == "queued"
    assert body["body"] == "hi"
    assert body["recipients"]["accepted"] == 20
    assert body["created_at"] is not None and body["enqueued_at"] is not None
    assert body["first_send_at"] is None and body["submitted_at"] is None


def test_message_paging_walks_every_message_exactly_once_in_order(client: FlaskClient, auth: dict[str, str]) -> None:
    broadcast_id = create(client, auth, 250)
    create(client, auth, 30, start=5000)  # another broadcast's messages must not appear

    seen: list[str] = []
    url: str | None = f"/v1/broadcasts/{broadcast_id}/messages?limit=37"
    pages = 0
    while url is not None:
        page = client.get(url, headers=auth).get_json()
        seen.extend(item["to"] for item in page["items"])
        url = page["links"]["next"]
        pages += 1

    assert seen == phone_numbers(250)
    assert pages == 7
    first = client.get(f"/v1/broadcasts/{broadcast_id}/messages?limit=1", headers=auth).get_json()["items"][0]
    assert set(first) >= {
        "id", "to", "state", "attempts", "twilio_sid", "twilio_status", "error_code", "error_message",
        "created_at", "sent_at", "updated_at",
    }  # fmt: skip
    assert first["state"] == "pending" and first["attempts"] == 0


def test_message_paging_filters_by_state_and_keeps_the_filter_in_the_next_link(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    broadcast_id = create(client, auth, 10)
    items = client.get(f"/v1/broadcasts/{broadcast_id}/messages", headers=auth).get_json()["items"]
    failed_ids = [item["id"] for item in items[::3]]
    set_state(db_session, broadcast_id, failed_ids, "failed")

    first = client.get(f"/v1/broadcasts/{broadcast_id}/messages?state=failed&limit=2", headers=auth).get_json()
    assert parse_qs(urlsplit(first["links"]["next"]).query)["state"] == ["failed"]
    second = client.get(first["links"]["next"], headers=auth).get_json()

    assert [item["id"] for item in first["items"] + second["items"]] == failed_ids
    assert second["links"]["next"] is None


def test_bad_paging_parameters_are_refused(client: FlaskClient, auth: dict[str, str]) -> None:
    broadcast_id = create(client, auth, 3)
    base = f"/v1/broadcasts/{broadcast_id}/messages"

    bad_cursor = client.get(f"{base}?cursor=not-a-cursor", headers=auth)
    bad_state = client.get(f"{base}?state=lost", headers=auth)
    bad_limit = client.get(f"{base}?limit=0", headers=auth)

    assert bad_cursor.status_code == 400 and "cursor" in bad_cursor.get_json()["errors"]
    assert bad_state.status_code == 422 and "state" in bad_state.get_json()["errors"]
    assert bad_limit.status_code == 422 and "limit" in bad_limit.get_json()["errors"]


def test_broadcast_list_is_newest_first_and_pages_through_all(client: FlaskClient, auth: dict[str, str]) -> None:
    created = [create(client, auth, 1, start=index) for index in range(5)]

    seen: list[str] = []
    url: str | None = "/v1/broadcasts?limit=2"
    while url is not None:
        page = client.get(url, headers=auth).get_json()
        seen.extend(item["id"] for item in page["items"])
        url = page["links"]["next"]

    assert seen == list(reversed(created))


def test_unknown_broadcast_is_404(client: FlaskClient, auth: dict[str, str]) -> None:
    for path in (
        "/v1/broadcasts/00000000-0000-4000-8000-000000000000",
        "/v1/broadcasts/00000000-0000-4000-8000-000000000000/messages",
        "/v1/broadcasts/not-a-uuid",
    ):
        response = client.get(path, headers=auth)
        assert response.status_code == 404
        assert response.content_type == "application/problem+json"


def create_with_reference(client: FlaskClient, auth: dict[str, str], reference: str | None, start: int) -> str:
    body = {"message": "hi", "recipients": phone_numbers(1, start), "client_reference": reference}
    response = post_broadcast(client, auth, body)
    assert response.status_code == 202, response.get_json()
    return str(response.get_json()["id"])


def test_the_client_reference_is_shown_by_the_broadcast_and_the_list(client: FlaskClient, auth: dict[str, str]) -> None:
    with_reference = create_with_reference(client, auth, "crm-7", 0)
    without = create_with_reference(client, auth, None, 1)

    detail = client.get(f"/v1/broadcasts/{with_reference}", headers=auth).get_json()
    listed = {item["id"]: item for item in client.get("/v1/broadcasts", headers=auth).get_json()["items"]}

    assert detail["client_reference"] == "crm-7"
    assert listed[with_reference]["client_reference"] == "crm-7"
    assert listed[without]["client_reference"] is None


def test_the_list_filters_by_exact_client_reference_for_the_key_only(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    from shared.platform.api_keys import create_api_key

    matching = [create_with_reference(client, auth, "crm-7", index) for index in range(3)]
    create_with_reference(client, auth, "crm-77", 3)
    create_with_reference(client, auth, "CRM-7", 4)
    create_with_reference(client, auth, None, 5)
    _, other_key = create_api_key(db_session, "other team")
    create_with_reference(client, {"Authorization": f"Bearer {other_key}"}, "crm-7", 6)

    seen: list[str] = []
    url: str | None = "/v1/broadcasts?client_reference=crm-7&limit=2"
    while url is not None:
        page = client.get(url, headers=auth).get_json()
        seen.extend(item["id"] for item in page["items"])
        url = page["links"]["next"]
        assert url is None or parse_qs(urlsplit(url).query)["client_reference"] == ["crm-7"]

    assert seen == list(reversed(matching))
    nothing = client.get("/v1/broadcasts?client_reference=crm-8", headers=auth)
    assert nothing.status_code == 200 and nothing.get_json()["items"] == []


def test_a_bad_client_reference_filter_is_422(client: FlaskClient, auth: dict[str, str]) -> None:
    for value in ("", "x" * 257, "crm%0A7"):
        response = client.get(f"/v1/broadcasts?client_reference={value}", headers=auth)
        assert response.status_code == 422, value
        assert response.content_type == "application/problem+json"
        assert "client_reference" in response.get_json()["errors"]


def test_the_client_reference_filter_is_answered_from_its_index(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    create_with_reference(client, auth, "crm-7", 0)
    statements: list[tuple[str, Any]] = []

    def capture(_connection: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        if "client_reference =" in statement:
            statements.append((statement, parameters))

    event.listen(Engine, "before_cursor_execute", capture)  # every engine: the app has its own
    try:
        assert client.get("/v1/broadcasts?client_reference=crm-7", headers=auth).status_code == 200
    finally:
        event.remove(Engine, "before_cursor_execute", capture)

    [(statement, parameters)] = statements
    raw = db_session.connection().connection.dbapi_connection
    assert raw is not None
    with raw.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # a handful of rows would otherwise be read in full
        cursor.execute("EXPLAIN " + statement, parameters)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    db_session.rollback()
    assert "ix_broadcasts_client_reference" in plan, plan
    assert "Sort" not in plan, plan  # newest first straight from the index
