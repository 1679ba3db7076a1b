"""Scheduling, quiet hours, opt-outs at intake, and the pause / resume / cancel / reschedule transitions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.platform.task_queue import SEND_QUEUE
from tests.api.conftest import phone_numbers, post_broadcast

NEW_YORK, LONDON, SYDNEY = "+12125550100", "+442071234567", "+61291234567"


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def next_0300_utc() -> datetime:
    """New York (22:00 or 23:00) and London (03:00 or 04:00) are in a 21:00-08:00 window; Sydney is not."""
    now = datetime.now(UTC)
    moment = now.replace(hour=3, minute=0, second=0, microsecond=0)
    return moment if moment > now + timedelta(minutes=5) else moment + timedelta(days=1)


def states(db_session: Session, broadcast_id: str) -> dict[str, int]:
    rows = db_session.execute(
        text("SELECT state, count(*) FROM messages WHERE broadcast_id = :id GROUP BY state"), {"id": broadcast_id}
    )
    return {state: count for state, count in rows}


def queued_tasks(redis_client: redis.Redis) -> int:
    return int(redis_client.llen(SEND_QUEUE))


def scheduled(client: FlaskClient, auth: dict[str, str], **extra: Any) -> dict[str, Any]:
    body = {"message": "Polls open at 7", "recipients": phone_numbers(250), "send_at": iso(next_0300_utc()), **extra}
    response = post_broadcast(client, auth, body)
    assert response.status_code == 202, response.get_data(as_text=True)
    return dict(response.get_json())


def test_a_scheduled_broadcast_waits_unqueued(
    client: FlaskClient, auth: dict[str, str], redis_client: redis.Redis
) -> None:
    created = scheduled(client, auth)
    assert created["status"] == "scheduled"
    assert created["send_at"] == next_0300_utc().isoformat()
    assert created["enqueued_at"] is None
    assert queued_tasks(redis_client) == 0


@pytest.mark.parametrize(
    ("send_at", "reason"),
    [
        (lambda: iso(datetime.now(UTC) + timedelta(seconds=20)), "at least"),
        (lambda: iso(datetime.now(UTC) + timedelta(days=36)), "at most 35 days"),
        (lambda: (datetime.now(UTC) + timedelta(hours=1)).replace(tzinfo=None).isoformat(), ""),
        (lambda: "tomorrow", ""),
    ],
)
def test_send_at_too_soon_too_far_or_without_offset_is_422(
    client: FlaskClient, auth: dict[str, str], db_session: Session, send_at: Any, reason: str
) -> None:
    response = post_broadcast(client, auth, {"message": "x", "recipients": phone_numbers(1), "send_at": send_at()})
    assert response.status_code == 422
    assert "send_at" in response.get_json()["errors"]
    assert reason in str(response.get_json()["errors"]["send_at"])
    assert db_session.execute(text("SELECT count(*) FROM broadcasts")).scalar() == 0


def test_move_then_cancel_a_scheduled_broadcast(
    client: FlaskClient, auth: dict[str, str], db_session: Session, redis_client: redis.Redis
) -> None:
    created = scheduled(client, auth)
    url = f"/v1/broadcasts/{created['id']}"
    later = next_0300_utc() + timedelta(days=1)
    moved = client.patch(url, json={"send_at": iso(later)}, headers=auth)
    assert moved.status_code == 200 and moved.get_json()["send_at"] == later.isoformat()
    too_soon = client.patch(url, json={"send_at": iso(datetime.now(UTC))}, headers=auth)
    assert too_soon.status_code == 422

    canceled = client.post(f"{url}/cancel", headers=auth)
    assert canceled.status_code == 200
    assert canceled.get_json()["status"] == "canceled" and canceled.get_json()["canceled_at"]
    assert states(db_session, created["id"]) == {"canceled": 250}
    assert queued_tasks(redis_client) == 0

    again = client.patch(url, json={"send_at": iso(later)}, headers=auth)
    assert again.status_code == 409
    assert again.content_type == "application/problem+json"
    assert again.get_json()["type"] == "urn:bulksms:problem:invalid-transition"


def test_invalid_transitions_are_409(client: FlaskClient, auth: dict[str, str]) -> None:
    created = post_broadcast(client, auth, {"message": "hi", "recipients": phone_numbers(3)}).get_json()
    url = f"/v1/broadcasts/{created['id']}"
    assert client.post(f"{url}/resume", headers=auth).status_code == 409  # queued, not paused
    assert client.patch(url, json={"send_at": iso(next_0300_utc())}, headers=auth).status_code == 409
    assert client.post(f"{url}/pause", headers=auth).get_json()["status"] == "paused"
    assert client.post(f"{url}/pause", headers=auth).status_code == 409  # already paused
    assert client.post(f"{url}/cancel", headers=auth).get_json()["status"] == "canceled"
    for action in ("pause", "resume", "cancel"):
        response = client.post(f"{url}/{action}", headers=auth)
        assert response.status_code == 409, action
        assert "canceled" in response.get_json()["detail"]
    scheduled_one = scheduled(client, auth)
    assert client.post(f"/v1/broadcasts/{scheduled_one['id']}/pause", headers=auth).status_code == 409
    unknown = client.post("/v1/broadcasts/6f1d0c5e-8a53-4a4e-9a53-6c7d0e0b8f11/cancel", headers=auth)
    assert unknown.status_code == 404


def test_pause_then_resume_enqueues_the_pending_chunks_again(
    client: FlaskClient, auth: dict[str, str], redis_client: redis.Redis
) -> None:
    created = post_broadcast(client, auth, {"message": "hi", "recipients": phone_numbers(250)}).get_json()
    assert queued_tasks(redis_client) == 3
    redis_client.delete(SEND_QUEUE)
    paused = client.post(f"/v1/broadcasts/{created['id']}/pause", headers=auth).get_json()
    assert paused["status"] == "paused" and paused["paused_at"]
    resumed = client.post(f"/v1/broadcasts/{created['id']}/resume", headers=auth).get_json()
    assert resumed["status"] == "queued" and resumed["paused_at"] is None
    assert queued_tasks(redis_client) == 3


def test_intake_counts_opted_out_numbers_and_stores_them_skipped(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    recipients = phone_numbers(10)
    client.post("/v1/opt-outs", json={"numbers": [recipients[3], recipients[7], "+447700900999"]}, headers=auth)
    created = post_broadcast(client, auth, {"message": "hi", "recipients": recipients}).get_json()
    assert created["recipients"]["accepted"] == 10
    assert created["recipients"]["opted_out"] == 2
    assert states(db_session, created["id"]) == {"pending": 8, "skipped": 2}
    skipped = client.get(f"/v1/broadcasts/{created['id']}/messages?state=skipped", headers=auth).get_json()
    assert [item["to"] for item in skipped["items"]] == [recipients[3], recipients[7]]


def test_intake_reports_how_many_quiet_hours_defer_at_send_at(client: FlaskClient, auth: dict[str, str]) -> None:
    body = {
        "message": "Polls open at 7",
        "recipients": [NEW_YORK, LONDON, SYDNEY],
        "send_at": iso(next_0300_utc()),
        "quiet_hours": {"start": "21:00", "end": "08:00"},
    }
    created = post_broadcast(client, auth, body).get_json()
    assert created["recipients"]["deferred"] == 2
    assert created["quiet_hours"] == {"start": "21:00", "end": "08:00"}
    bad = post_broadcast(client, auth, {**body, "quiet_hours": {"start": "25:00", "end": "08:00"}})
    assert bad.status_code == 422 and "quiet_hours" in bad.get_json()["errors"]
