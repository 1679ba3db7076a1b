"""`priority` and `deadline` at intake: their rules, what the 202 shows, the `warnings`, and the first window."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.platform.settings import Settings
from shared.platform.task_queue import SEND_QUEUE
from tests.api.conftest import build_app, phone_numbers, post_broadcast


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def in_(**delta: float) -> str:
    return iso(datetime.now(UTC) + timedelta(**delta))


@pytest.mark.parametrize(
    ("priority", "window"), [("high", 8), ("normal", 4), ("bulk", 2), (None, 4)], ids=["high", "normal", "bulk", "none"]
)
def test_intake_publishes_only_the_first_window_of_chunks_sized_by_priority(
    client: FlaskClient, auth: dict[str, str], redis_client: redis.Redis, priority: str | None, window: int
) -> None:
    body: dict[str, Any] = {"message": "Polls open at 7", "recipients": phone_numbers(2_000)}  # 20 chunks
    if priority is not None:
        body["priority"] = priority
    response = post_broadcast(client, auth, body)
    assert response.status_code == 202, response.get_data(as_text=True)
    created = response.get_json()
    assert created["priority"] == (priority or "normal")
    assert created["chunks"] == 20
    assert redis_client.llen(SEND_QUEUE) == window
    assert created["warnings"] == []


def test_an_unknown_priority_is_422(client: FlaskClient, auth: dict[str, str]) -> None:
    response = post_broadcast(client, auth, {"message": "x", "recipients": phone_numbers(1), "priority": "urgent"})
    assert response.status_code == 422 and "priority" in response.get_json()["errors"]


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (lambda: {"deadline": in_(seconds=-5)}, "future"),
        (lambda: {"deadline": in_(hours=73)}, "72 hours"),
        (lambda: {"deadline": in_(hours=1), "send_at": in_(hours=2)}, "after send_at"),
        (lambda: {"deadline": (datetime.now(UTC) + timedelta(hours=1)).replace(tzinfo=None).isoformat()}, ""),
        (lambda: {"deadline": "tonight"}, ""),
    ],
    ids=["past", "too-far", "before-send_at", "no-offset", "not-a-time"],
)
def test_a_deadline_in_the_past_too_far_or_before_send_at_is_refused(
    client: FlaskClient, auth: dict[str, str], db_session: Session, extra: Any, reason: str
) -> None:
    response = post_broadcast(client, auth, {"message": "x", "recipients": phone_numbers(1), **extra()})
    assert response.status_code == 422
    assert reason in str(response.get_json()["errors"]["deadline"])
    assert db_session.execute(text("SELECT count(*) FROM broadcasts")).scalar() == 0


def test_a_deadline_is_stored_and_shown(client: FlaskClient, auth: dict[str, str]) -> None:
    deadline = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    response = post_broadcast(client, auth, {"message": "x", "recipients": phone_numbers(3), "deadline": iso(deadline)})
    assert response.status_code == 202
    assert datetime.fromisoformat(response.get_json()["deadline"]) == deadline
    assert response.get_json()["warnings"] == []  # unpaced, no known throughput: no estimate, no warning
    shown = client.get(response.headers["Location"], headers=auth).get_json()
    assert datetime.fromisoformat(shown["deadline"]) == deadline
    assert shown["messages"]["expired"] == 0


class TestWarnings:
    @pytest.fixture
    def app(self, settings: Settings, engine: Any, redis_client: Any) -> Iterator[Flask]:
        # The pool's throughput as TWILIO_SEGMENTS_PER_SECOND gives it: 10 segments a second.
        yield from build_app(dataclasses.replace(settings, twilio_segments_per_second="10"))

    def test_the_202_warns_when_the_estimate_passes_the_deadline(
        self, client: FlaskClient, auth: dict[str, str]
    ) -> None:
        # 1,000 one-segment messages at 10 segments a second: about 100 s.
        late = post_broadcast(
            client, auth, {"message": "x", "recipients": phone_numbers(1_000), "deadline": in_(seconds=60)}
        )
        assert late.status_code == 202
        [warning] = late.get_json()["warnings"]
        assert "100 s" in warning and "deadline" in warning

        in_time = post_broadcast(
            client, auth, {"message": "x", "recipients": phone_numbers(1_000), "deadline": in_(seconds=300)}
        )
        assert in_time.status_code == 202 and in_time.get_json()["warnings"] == []


def test_a_scheduled_broadcast_cannot_be_moved_past_its_deadline(client: FlaskClient, auth: dict[str, str]) -> None:
    response = post_broadcast(
        client,
        auth,
        {"message": "x", "recipients": phone_numbers(3), "send_at": in_(hours=1), "deadline": in_(hours=2)},
    )
    assert response.status_code == 202
    moved = client.patch(response.headers["Location"], json={"send_at": in_(hours=3)}, headers=auth)
    assert moved.status_code == 422
    assert "deadline" in moved.get_data(as_text=True)
