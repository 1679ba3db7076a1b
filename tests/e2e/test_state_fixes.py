"""Broadcast and message state that must never get stuck, through real workers, beat and the simulator: attempts
count only requests that reached Twilio, a stale halt flag does not stop a resumed broadcast, a broadcast whose
recipients all opted out since intake still completes, and a chunk lost under steady traffic is sent."""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from api.app import create_app
from shared.broadcasts.control import halt_key
from shared.platform.api_keys import create_api_key
from shared.platform.settings import Settings
from shared.platform.task_queue import SEND_QUEUE
from tests.conftest import SimulatorControl, WorkerProcesses, wait_until
from tests.e2e.test_broadcast_delivery import broadcast_view, distinct_numbers, message_states

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture
def settings(base_settings: Settings) -> Settings:
    # One try per 20429 before a release, so a rate-limit storm releases (and re-claims) every message.
    return base_settings.replace(send_retry_max_attempts=1, completion_idle_seconds=2)


@pytest.fixture
def api_client(settings: Settings) -> FlaskClient:
    return create_app(settings).test_client()


@pytest.fixture
def auth(db_session: Session) -> dict[str, str]:
    _, plaintext = create_api_key(db_session, "e2e-state")
    db_session.commit()
    return {"Authorization": f"Bearer {plaintext}"}


def submit(client: FlaskClient, auth: dict[str, str], recipients: list[str]) -> str:
    response = client.post("/v1/broadcasts", json={"message": "Polls open", "recipients": recipients}, headers=auth)
    assert response.status_code == 202, response.get_data(as_text=True)
    return str(response.get_json()["id"])


def status_of(client: FlaskClient, auth: dict[str, str], broadcast_id: str) -> str:
    return str(broadcast_view(client, auth["Authorization"].split(" ", 1)[1], broadcast_id)["status"])


def test_a_rate_limit_storm_uses_up_no_attempts(
    api_client: FlaskClient, auth: dict[str, str], simulator: SimulatorControl, workers: WorkerProcesses, engine: Engine
) -> None:
    simulator.configure(latency_ms=20, error_rate_429=1.0)
    broadcast_id = submit(api_client, auth, distinct_numbers(40))
    workers.start_worker(concurrency=2)
    # Every message is refused with 20429 and released, then claimed again (the task retries after 5-15 s).
    wait_until(lambda: simulator.summary()["rejected_429"] >= 80, 60, message="two rounds of 20429s")
    simulator.configure(error_rate_429=0.0)
    wait_until(lambda: message_states(engine, broadcast_id) == {"accepted": 40}, 60, message="all accepted")

    messages = api_client.get(f"/v1/broadcasts/{broadcast_id}/messages?limit=100", headers=auth).get_json()["items"]
    # One request reached Twilio per recipient: the 30003/30008 delivery retries are all still there.
    assert sorted({message["attempts"] for message in messages}) == [1]


def test_a_stale_halt_flag_does_not_stop_a_resumed_broadcast(
    api_client: FlaskClient,
    auth: dict[str, str],
    simulator: SimulatorControl,
    workers: WorkerProcesses,
    engine: Engine,
    redis_client: Any,
) -> None:
    simulator.configure(latency_ms=50)
    broadcast_id = submit(api_client, auth, distinct_numbers(300))
    assert api_client.post(f"/v1/broadcasts/{broadcast_id}/pause", headers=auth).get_json()["status"] == "paused"
    assert api_client.post(f"/v1/broadcasts/{broadcast_id}/resume", headers=auth).status_code == 200
    # What a Redis blip during the resume leaves: PostgreSQL says sending, the halt flag is still set.
    redis_client.set(halt_key(broadcast_id), "paused", ex=24 * 3600)
    workers.start_worker(concurrency=2)

    wait_until(lambda: message_states(engine, broadcast_id) == {"accepted": 300}, 30, message="all accepted")
    assert not redis_client.exists(halt_key(broadcast_id))
    assert simulator.summary()["duplicate_count"] == 0


def test_a_broadcast_whose_recipients_all_opted_out_after_intake_completes(
    api_client: FlaskClient, auth: dict[str, str], workers: WorkerProcesses, engine: Engine
) -> None:
    recipients = distinct_numbers(150)  # two chunks
    broadcast_id = submit(api_client, auth, recipients)
    response = api_client.post("/v1/opt-outs", json={"numbers": recipients}, headers=auth)
    assert response.status_code in (200, 201), response.get_data(as_text=True)
    workers.start_worker(concurrency=2)
    workers.start_beat()

    wait_until(lambda: status_of(api_client, auth, broadcast_id) == "completed", 60, message="completed")
    assert message_states(engine, broadcast_id) == {"skipped": 150}
    view = broadcast_view(api_client, auth["Authorization"].split(" ", 1)[1], broadcast_id)
    assert view["submitted_at"] is not None  # it went through `submitted`, as every broadcast does


def test_a_chunk_lost_under_steady_traffic_is_sent_before_the_queue_empties(
    settings: Settings,
    auth: dict[str, str],
    simulator: SimulatorControl,
    workers: WorkerProcesses,
    engine: Engine,
    redis_client: Any,
) -> None:
    settings = settings.replace(sweeper_busy_grace_seconds=6, twilio_max_concurrency=4)
    workers.settings = settings
    client = create_app(settings).test_client()
    simulator.configure(latency_ms=200)
    lost = submit(client, auth, distinct_numbers(50, prefix="+1556"))
    redis_client.delete(SEND_QUEUE)  # its chunk task is lost (a worker died holding it, or Redis lost it)
    time.sleep(8)  # lost for a while before the traffic starts
    busy = submit(client, auth, distinct_numbers(3000))  # 30 chunks at ~20 messages a second: a steady backlog
    workers.start_worker(concurrency=1)
    workers.start_beat()

    wait_until(lambda: message_states(engine, lost) == {"accepted": 50}, 60, message="the lost chunk sent")
    assert redis_client.llen(SEND_QUEUE) > 0  # still under load: the queue never emptied
    assert message_states(engine, busy).get("pending", 0) > 0
