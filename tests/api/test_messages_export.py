"""GET /v1/broadcasts/{id}/messages.csv: every message once, the right columns, the state filter, visibility."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from flask.testing import FlaskClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared.messages.export import EXPORT_COLUMNS
from shared.platform.api_keys import create_api_key
from shared.platform.models import Message
from tests.api.conftest import phone_numbers, post_broadcast


def create(client: FlaskClient, auth: dict[str, str], count: int) -> str:
    response = post_broadcast(client, auth, {"message": "hi", "recipients": phone_numbers(count)})
    assert response.status_code == 202
    return str(response.get_json()["id"])


def rows_of(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_export_streams_every_message_once_with_its_columns(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    broadcast_id = create(client, auth, 12_345)  # more than two pages of 5,000
    first_id = db_session.scalar(select(Message.id).where(Message.broadcast_id == broadcast_id).order_by(Message.id))
    assert first_id is not None
    sent = datetime(2026, 11, 29, 17, 0, tzinfo=UTC)
    db_session.execute(
        update(Message)
        .where(Message.id == first_id)
        .values(
            state="undelivered",
            twilio_sid="SM" + "a" * 32,
            twilio_status="undelivered",
            error_code=30003,
            error_message="Unreachable, destination handset",
            attempts=2,
            sent_at=sent,
            last_receipt_at=sent,
            final_at=sent,
        )
    )
    db_session.commit()

    response = client.get(f"/v1/broadcasts/{broadcast_id}/messages.csv", headers=auth)

    assert response.status_code == 200
    assert response.is_streamed
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == f'attachment; filename="broadcast-{broadcast_id}.csv"'
    text = response.get_data(as_text=True)
    assert text.splitlines()[0] == ",".join(EXPORT_COLUMNS)
    rows = rows_of(text)
    assert [row["number"] for row in rows] == phone_numbers(12_345)
    assert rows[0] == {
        "number": "+15550000000",
        "state": "undelivered",
        "twilio_sid": "SM" + "a" * 32,
        "twilio_status": "undelivered",
        "error_code": "30003",
        "error_message": "Unreachable, destination handset",
        "attempts": "2",
        "created_at": rows[0]["created_at"],
        "sent_at": "2026-11-29T17:00:00+00:00",
        "last_receipt_at": "2026-11-29T17:00:00+00:00",
        "final_at": "2026-11-29T17:00:00+00:00",
        "client_reference": "",  # the broadcast has none
        "test": "false",  # an ordinary key's broadcast
    }
    assert datetime.fromisoformat(rows[0]["created_at"]).tzinfo is not None
    assert rows[1]["state"] == "pending" and rows[1]["twilio_sid"] == "" and rows[1]["error_code"] == ""


def test_export_filters_by_state(client: FlaskClient, auth: dict[str, str], db_session: Session) -> None:
    broadcast_id = create(client, auth, 30)
    ids = list(db_session.scalars(select(Message.id).where(Message.broadcast_id == broadcast_id).order_by(Message.id)))
    db_session.execute(update(Message).where(Message.id.in_(ids[5:9])).values(state="failed", error_code=21211))
    db_session.commit()

    failed = rows_of(client.get(f"/v1/broadcasts/{broadcast_id}/messages.csv?state=failed", headers=auth).text)
    assert [row["number"] for row in failed] == phone_numbers(30)[5:9]
    assert {row["error_code"] for row in failed} == {"21211"}
    pending = rows_of(client.get(f"/v1/broadcasts/{broadcast_id}/messages.csv?state=pending", headers=auth).text)
    assert len(pending) == 26
    refused = client.get(f"/v1/broadcasts/{broadcast_id}/messages.csv?state=lost", headers=auth)
    assert refused.status_code == 422 and "state" in refused.get_json()["errors"]


def test_another_keys_broadcast_is_404_and_no_key_is_401(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    broadcast_id = create(client, auth, 3)
    _, other_key = create_api_key(db_session, "other")

    response = client.get(
        f"/v1/broadcasts/{broadcast_id}/messages.csv", headers={"Authorization": f"Bearer {other_key}"}
    )
    assert response.status_code == 404
    assert response.content_type == "application/problem+json"
    assert client.get(f"/v1/broadcasts/{broadcast_id}/messages.csv").status_code == 401


def test_every_row_carries_the_broadcasts_client_reference(client: FlaskClient, auth: dict[str, str]) -> None:
    reference = 'crm, "spring" 2026 · é'  # a comma and quotes: quoted as CSV
    body = {"message": "hi", "recipients": phone_numbers(3), "client_reference": reference}
    broadcast_id = post_broadcast(client, auth, body).get_json()["id"]

    response = client.get(f"/v1/broadcasts/{broadcast_id}/messages.csv", headers=auth)

    assert response.status_code == 200
    header = response.get_data(as_text=True).splitlines()[0]
    assert header.endswith(",final_at,client_reference,test")
    assert [row["client_reference"] for row in rows_of(response.get_data(as_text=True))] == [reference] * 3
