"""Test keys end to end: API, queue, worker, receipts, all real processes. A test key's broadcast goes to the test
account (a second simulator, as the compose `simulator` service), never to the live one; its receipts, signed with
the test account's token, are applied; that token changes no live message and no opt-out."""

from __future__ import annotations

import csv
import io
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
import redis
import requests
from flask.testing import FlaskClient
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from bulksms_tools.local_services import ManagedProcess, find_free_port, wait_for_port
from shared.platform.api_keys import create_api_key
from shared.platform.settings import Settings
from tests.api.conftest import build_app
from tests.conftest import REPOSITORY_ROOT, SimulatorControl, WorkerProcesses, wait_until
from tests.status_callbacks import twilio_signature

pytestmark = pytest.mark.e2e

TEST_ACCOUNT_SID = "AC" + "7e" * 16
TEST_ACCOUNT_TOKEN = "the-test-accounts-own-token-0123"
TEST_SERVICE_SID = "MG" + "7e" * 16


@pytest.fixture(scope="module")
def test_account_simulator(artifacts_directory: Path) -> Iterator[str]:
    """The deployment's simulator service: the test account, with its own SID and token."""
    port = find_free_port()
    process = ManagedProcess(
        "test-account-simulator",
        [sys.executable, "-m", "bulksms_tools.simulator", "--host", "127.0.0.1", "--port", str(port),
         "--account-sid", TEST_ACCOUNT_SID, "--auth-token", TEST_ACCOUNT_TOKEN, "--latency-ms", "5"],
        environment=dict(os.environ),
        log_path=artifacts_directory / "test-account-simulator.log",
        working_directory=REPOSITORY_ROOT,
    ).start()  # fmt: skip
    wait_for_port(port)
    yield f"http://127.0.0.1:{port}"
    process.stop()


@pytest.fixture
def settings(base_settings: Settings, webhook_port: int, test_account_simulator: str) -> Settings:
    return base_settings.replace(
        public_base_url=f"http://127.0.0.1:{webhook_port}",
        test_twilio_account_sid=TEST_ACCOUNT_SID,
        test_twilio_auth_token=TEST_ACCOUNT_TOKEN,
        test_twilio_messaging_service_sid=TEST_SERVICE_SID,
        test_twilio_base_url=test_account_simulator,
    )


@pytest.fixture
def api(settings: Settings, engine: Engine, redis_client: redis.Redis) -> Iterator[FlaskClient]:
    for app in build_app(settings):
        yield app.test_client()


def bearer(db_session: Session, name: str, is_test: bool) -> dict[str, str]:
    _, plaintext = create_api_key(db_session, name, is_test=is_test)
    return {"Authorization": f"Bearer {plaintext}"}


def states(engine: Engine, broadcast_id: str) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT state, count(*) FROM messages WHERE broadcast_id = :id GROUP BY state"), {"id": broadcast_id}
        )
        return {state: count for state, count in rows}


def post_callback(webhook_port: int, token: str, path: str, parameters: dict[str, str], query: str = "") -> int:
    url = f"http://127.0.0.1:{webhook_port}{path}" + (f"?{query}" if query else "")
    response = requests.post(
        url,
        data=urlencode(parameters),
        headers={
            "X-Twilio-Signature": twilio_signature(token, url, parameters),
            "Content-Type": "application/x-www-form-urlencoded",
        },
        timeout=10,
    )
    return response.status_code


def test_a_test_keys_broadcast_runs_the_whole_pipeline_against_the_test_account_only(
    settings: Settings,
    api: FlaskClient,
    engine: Engine,
    db_session: Session,
    simulator: SimulatorControl,
    test_account_simulator: str,
    workers: WorkerProcesses,
    webhook_service: None,
    webhook_port: int,
) -> None:
    live_numbers = [f"+1555{index:07d}" for index in range(10)]
    test_numbers = [f"+1555{index:07d}" for index in range(100, 120)]
    test_key = bearer(db_session, "integrator trying the API", is_test=True)
    live_key = bearer(db_session, "production", is_test=False)
    test_broadcast = api.post(
        "/v1/broadcasts", json={"message": "try me", "recipients": test_numbers}, headers=test_key
    )
    live_broadcast = api.post("/v1/broadcasts", json={"message": "real", "recipients": live_numbers}, headers=live_key)
    assert (test_broadcast.status_code, live_broadcast.status_code) == (202, 202)
    assert (test_broadcast.get_json()["test"], live_broadcast.get_json()["test"]) == (True, False)
    test_id, live_id = test_broadcast.get_json()["id"], live_broadcast.get_json()["id"]
    workers.start_worker()
    workers.start_beat()

    # Receipts from both accounts arrive through the webhook and are applied.
    wait_until(lambda: states(engine, test_id) == {"delivered": 20}, 90, interval=0.5, message="test receipts")
    wait_until(lambda: states(engine, live_id) == {"delivered": 10}, 90, interval=0.5, message="live receipts")
    test_account = SimulatorControl(test_account_simulator)
    assert [len(test_account.received(number)) for number in test_numbers] == [1] * 20
    assert [len(simulator.received(number)) for number in test_numbers] == [0] * 20  # the live account: never
    assert [len(test_account.received(number)) for number in live_numbers] == [0] * 10

    # Marked test in every view the integrator sees.
    assert api.get(f"/v1/broadcasts/{test_id}", headers=test_key).get_json()["test"] is True
    assert [item["test"] for item in api.get("/v1/broadcasts", headers=test_key).get_json()["items"]] == [True]
    export = api.get(f"/v1/broadcasts/{test_id}/messages.csv", headers=test_key).get_data(as_text=True)
    assert {row["test"] for row in csv.DictReader(io.StringIO(export))} == {"true"}

    # The test account's token is no key to live messages or to the opt-out list.
    with engine.connect() as connection:
        live_message = connection.execute(
            text("SELECT id, twilio_sid, attempts FROM messages WHERE broadcast_id = :id LIMIT 1"), {"id": live_id}
        ).one()
    forged = {"MessageSid": live_message.twilio_sid, "MessageStatus": "undelivered", "ErrorCode": "30007",
              "AccountSid": TEST_ACCOUNT_SID}  # fmt: skip
    query = f"message_id={live_message.id}&attempt={live_message.attempts}"
    assert post_callback(webhook_port, TEST_ACCOUNT_TOKEN, "/webhooks/twilio/status", forged, query) == 204
    stop = {"MessageSid": "SM" + "5" * 32, "From": live_numbers[0], "To": "+15005550006", "Body": "STOP",
            "AccountSid": TEST_ACCOUNT_SID}  # fmt: skip
    assert post_callback(webhook_port, TEST_ACCOUNT_TOKEN, "/webhooks/twilio/inbound", stop) == 403
    time.sleep(3)  # the status consumer drains the stream about every second
    assert states(engine, live_id) == {"delivered": 10}
    with engine.connect() as connection:
        stored = connection.execute(
            text("SELECT count(*) FROM status_events WHERE message_sid = :sid AND message_status = 'undelivered'"),
            {"sid": live_message.twilio_sid},
        ).scalar_one()
        opted_out = connection.execute(text("SELECT count(*) FROM opted_out_numbers")).scalar_one()
    assert (stored, opted_out) == (0, 0)


def test_without_a_test_account_a_test_broadcast_waits_and_never_reaches_the_live_account(
    settings: Settings,
    api: FlaskClient,
    engine: Engine,
    db_session: Session,
    simulator: SimulatorControl,
    artifacts_directory: Path,
) -> None:
    """The worker picks the account per broadcast and has no fallback: with TEST_TWILIO_* unset, a test key's
    broadcast stays pending (and the worker says why) while a live one is sent."""
    unconfigured = settings.replace(
        test_twilio_account_sid=None,
        test_twilio_auth_token=None,
        test_twilio_messaging_service_sid=None,
        test_twilio_base_url=None,
    )
    test_numbers = [f"+1555{index:07d}" for index in range(200, 205)]
    live_numbers = [f"+1555{index:07d}" for index in range(300, 305)]
    test_id = api.post(
        "/v1/broadcasts", json={"message": "try", "recipients": test_numbers}, headers=bearer(db_session, "t", True)
    ).get_json()["id"]
    live_id = api.post(
        "/v1/broadcasts", json={"message": "real", "recipients": live_numbers}, headers=bearer(db_session, "l", False)
    ).get_json()["id"]
    processes = WorkerProcesses(unconfigured, artifacts_directory)
    try:
        log = artifacts_directory / "worker-without-test-account.log"
        logged_before = log.stat().st_size if log.exists() else 0
        processes.start_worker(name="worker-without-test-account")
        wait_until(lambda: states(engine, live_id).get("pending", 0) == 0, 60, message="the live broadcast sent")
        time.sleep(2)
        assert states(engine, test_id) == {"pending": 5}
        assert [len(simulator.received(number)) for number in test_numbers] == [0] * 5
        assert "TEST_TWILIO_ACCOUNT_SID" in log.read_bytes()[logged_before:].decode()
    finally:
        processes.stop_all()
