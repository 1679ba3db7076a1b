"""Broadcast control through real workers, beat and the simulator: scheduled release, pause and resume with
every recipient sent exactly once, cancel mid-broadcast, and opt-outs (at intake and mid-broadcast)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from api.app import create_app
from shared.platform.api_keys import create_api_key
from shared.platform.settings import Settings
from tests.conftest import SimulatorControl, WorkerProcesses, wait_until
from tests.e2e.test_broadcast_delivery import broadcast_view, distinct_numbers, message_states

pytestmark = pytest.mark.e2e


@pytest.fixture
def settings(base_settings: Settings) -> Settings:
    # A cap of 20 in flight against a 150 ms simulator: about 130 msg/s, so a broadcast lasts long enough to act on.
    return base_settings.replace(twilio_max_concurrency=20, schedule_min_lead_seconds=1.0)


@pytest.fixture
def api_client(settings: Settings) -> FlaskClient:
    return create_app(settings).test_client()


@pytest.fixture
def auth(db_session: Session) -> dict[str, str]:
    _, plaintext = create_api_key(db_session, "e2e-controls")
    db_session.commit()
    return {"Authorization": f"Bearer {plaintext}"}


def submit(client: FlaskClient, auth: dict[str, str], recipients: list[str], **extra: Any) -> dict[str, Any]:
    response = client.post(
        "/v1/broadcasts", json={"message": "Polls open", "recipients": recipients, **extra}, headers=auth
    )
    assert response.status_code == 202, response.get_data(as_text=True)
    return dict(response.get_json())


def accepted_at_simulator(simulator: SimulatorControl) -> int:
    return int(simulator.summary()["accepted"])


def wait_until_stable(simulator: SimulatorControl, quiet_seconds: float = 2.0, timeout_seconds: float = 30) -> int:
    """The simulator's accepted count once it has not moved for `quiet_seconds` (in-flight requests finished)."""
    deadline = time.monotonic() + timeout_seconds
    last, since = accepted_at_simulator(simulator), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        current = accepted_at_simulator(simulator)
        if current != last:
            last, since = current, time.monotonic()
        elif time.monotonic() - since >= quiet_seconds:
            return current
    pytest.fail("the simulator kept receiving messages")


def wait_for_status(client: FlaskClient, auth: dict[str, str], broadcast_id: str, status: str, timeout: float) -> Any:
    def reached() -> dict[str, Any] | None:
        view = broadcast_view(client, auth["Authorization"].split(" ", 1)[1], broadcast_id)
        return view if view["status"] == status else None

    return wait_until(reached, timeout, interval=0.5, message=f"broadcast {broadcast_id} {status}")


def test_pause_then_resume_sends_every_recipient_exactly_once(
    api_client: FlaskClient,
    auth: dict[str, str],
    simulator: SimulatorControl,
    workers: WorkerProcesses,
    engine: Engine,
    redis_client: Any,
) -> None:
    simulator.configure(latency_ms=150)
    recipients = distinct_numbers(3000)
    workers.start_worker(concurrency=2)
    created = submit(api_client, auth, recipients)
    url = f"/v1/broadcasts/{created['id']}"
    wait_until(lambda: accepted_at_simulator(simulator) >= 300, 60, message="300 sent")

    assert api_client.post(f"{url}/pause", headers=auth).get_json()["status"] == "paused"
    sent_before_resume = wait_until_stable(simulator)
    assert sent_before_resume < 3000
    wait_until(lambda: "sending" not in message_states(engine, created["id"]), 20, message="claims released")
    time.sleep(2)
    assert accepted_at_simulator(simulator) == sent_before_resume  # nothing starts while paused
    states = message_states(engine, created["id"])
    assert states.get("accepted", 0) == sent_before_resume and states.get("pending", 0) == 3000 - sent_before_resume

    assert api_client.post(f"{url}/resume", headers=auth).get_json()["status"] == "sending"
    wait_for_status(api_client, auth, created["id"], "submitted", 120)
    summary = simulator.summary()
    assert summary["accepted"] == 3000
    assert summary["distinct_recipients"] == 3000
    assert summary["duplicate_count"] == 0
    assert message_states(engine, created["id"]) == {"accepted": 3000}


def test_cancel_mid_broadcast_stops_sending_and_cancels_the_rest(
    api_client: FlaskClient,
    auth: dict[str, str],
    simulator: SimulatorControl,
    workers: WorkerProcesses,
    engine: Engine,
    redis_client: Any,
) -> None:
    simulator.configure(latency_ms=150)
    workers.start_worker(concurrency=2)
    created = submit(api_client, auth, distinct_numbers(2000))
    wait_until(lambda: accepted_at_simulator(simulator) >= 200, 60, message="200 sent")

    canceled = api_client.post(f"/v1/broadcasts/{created['id']}/cancel", headers=auth)
    assert canceled.status_code == 200 and canceled.get_json()["status"] == "canceled"
    sent = wait_until_stable(simulator)
    wait_until(lambda: set(message_states(engine, created["id"])) <= {"accepted", "canceled"}, 30, message="settled")
    time.sleep(2)
    assert accepted_at_simulator(simulator) == sent < 2000
    states = message_states(engine, created["id"])
    assert states == {"accepted": sent, "canceled": 2000 - sent}
    view = broadcast_view(api_client, auth["Authorization"].split(" ", 1)[1], created["id"])
    assert view["status"] == "canceled" and view["messages"]["canceled"] == 2000 - sent
    assert api_client.post(f"/v1/broadcasts/{created['id']}/resume", headers=auth).status_code == 409


def test_opted_out_numbers_are_never_sent_at_intake_or_mid_broadcast(
    api_client: FlaskClient,
    auth: dict[str, str],
    simulator: SimulatorControl,
    workers: WorkerProcesses,
    engine: Engine,
    redis_client: Any,
) -> None:
    simulator.configure(latency_ms=150)
    recipients = distinct_numbers(1500)
    api_client.post("/v1/opt-outs", json={"numbers": recipients[:3]}, headers=auth)
    workers.start_worker(concurrency=2)
    created = submit(api_client, auth, recipients)
    assert created["recipients"]["opted_out"] == 3
    wait_until(lambda: accepted_at_simulator(simulator) >= 100, 60, message="100 sent")
    late = recipients[-10:]  # the last chunk: not claimed yet
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO opted_out_numbers (phone_number, source) SELECT unnest(CAST(:n AS text[])), 'test'"),
            {"n": late},
        )
    wait_for_status(api_client, auth, created["id"], "submitted", 120)
    summary = simulator.summary()
    assert summary["accepted"] == 1500 - 13 and summary["distinct_recipients"] == 1500 - 13
    with engine.connect() as connection:
        skipped = set(
            connection.execute(
                text("SELECT to_number FROM messages WHERE broadcast_id = :id AND state = 'skipped'"),
                {"id": created["id"]},
            ).scalars()
        )
    assert skipped == set(recipients[:3]) | set(late)


def test_a_scheduled_broadcast_is_released_by_beat_at_send_at(
    api_client: FlaskClient,
    auth: dict[str, str],
    simulator: SimulatorControl,
    workers: WorkerProcesses,
    engine: Engine,
    redis_client: Any,
) -> None:
    workers.start_worker(concurrency=2)
    workers.start_beat()
    send_at = (datetime.now(UTC) + timedelta(seconds=4)).replace(microsecond=0)
    created = submit(api_client, auth, distinct_numbers(200), send_at=send_at.isoformat())
    assert created["status"] == "scheduled"
    time.sleep(2)
    assert accepted_at_simulator(simulator) == 0  # not before send_at
    view = wait_for_status(api_client, auth, created["id"], "submitted", 60)
    assert datetime.fromisoformat(view["first_send_at"]) >= send_at
    assert simulator.summary()["accepted"] == 200
