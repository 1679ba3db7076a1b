"""DELETE /v1/recipients/{number}: one person's number leaves every broadcast's messages, their raw callbacks and
every export; unsent messages to it are canceled; the opt-out list keeps it; Twilio's copies go on request."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from bulksms_tools.local_services import ManagedProcess, find_free_port, wait_for_port
from shared.compliance.opt_outs import add_opt_outs
from shared.messages import counts
from shared.platform.settings import Settings
from shared.receipts.events import ReceivedEvent, store_events
from tests.api.conftest import build_app
from tests.conftest import REPOSITORY_ROOT, TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, TEST_MESSAGING_SERVICE_SID
from tests.factories import create_broadcast, messages_of, numbers, set_messages

PERSON = "+15550000003"


def received(sid: str, to: str, message_id: int | None = None) -> ReceivedEvent:
    from datetime import UTC, datetime

    return ReceivedEvent(
        sid, "delivered", None, message_id, 1, {"MessageSid": sid, "To": to, "SmsStatus": "x"}, datetime.now(UTC)
    )


def test_erasure_removes_the_number_everywhere_and_keeps_the_suppression(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    from shared.platform.api_keys import create_api_key

    owner, owner_key = create_api_key(db_session, "owner")
    sent = create_broadcast(db_session, numbers(5), api_key=owner)
    unsent = create_broadcast(db_session, numbers(5), api_key=owner)
    set_messages(db_session, sent.id, state="delivered")
    person_sent = next(m for m in messages_of(db_session, sent.id) if m.to_number == PERSON)
    db_session.execute(
        text("UPDATE messages SET twilio_sid = :sid WHERE id = :id"), {"sid": "SM" + "a" * 32, "id": person_sent.id}
    )
    store_events(
        db_session,
        [
            received("SM" + "a" * 32, PERSON),
            received("SM" + "b" * 32, PERSON, person_sent.id),
            received("SM" + "c" * 32, "+15550000004"),
        ],
    )
    add_opt_outs(db_session, [PERSON], source="api", reason="STOP")
    db_session.commit()

    response = client.delete(f"/v1/recipients/{PERSON}", headers=auth)

    assert response.status_code == 200, response.text
    assert response.get_json() == {
        "number": PERSON,
        "messages_erased": 2,
        "messages_canceled": 1,
        "status_events_redacted": 2,
        "kept_on_opt_out_list": True,
        "twilio": {"requested": False, "messages": 1},
    }
    remaining = db_session.execute(text("SELECT count(*) FROM messages WHERE to_number = :n"), {"n": PERSON})
    assert remaining.scalar_one() == 0
    assert [m.state for m in messages_of(db_session, unsent.id) if m.to_number is None] == ["canceled"]
    assert counts.state_counts(db_session, unsent.id)["canceled"] == 1
    parameters = db_session.execute(text("SELECT message_sid, parameters FROM status_events ORDER BY id")).all()
    assert [p.parameters for p in parameters[:2]] == [
        {"MessageSid": "SM" + "a" * 32, "SmsStatus": "x"},
        {"MessageSid": "SM" + "b" * 32, "SmsStatus": "x"},
    ]
    assert parameters[2].parameters["To"] == "+15550000004"  # someone else's callback is untouched
    export = client.get(f"/v1/broadcasts/{sent.id}/messages.csv", headers={"Authorization": f"Bearer {owner_key}"}).text
    assert PERSON not in export and "+15550000004" in export
    assert db_session.execute(text("SELECT phone_number FROM opted_out_numbers")).scalars().all() == [PERSON]

    again = client.delete(f"/v1/recipients/{PERSON}", headers=auth)
    assert again.status_code == 200 and again.get_json()["messages_erased"] == 0


def test_a_send_in_flight_to_the_number_refuses_the_erasure_and_changes_nothing(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    broadcast = create_broadcast(db_session, numbers(5))
    set_messages(db_session, broadcast.id, state="sending")

    response = client.delete(f"/v1/recipients/{PERSON}", headers=auth)

    assert response.status_code == 409 and response.headers["Retry-After"] == "60"
    assert response.get_json()["type"].endswith("send-in-flight")
    assert PERSON in [m.to_number for m in messages_of(db_session, broadcast.id)]


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/recipients/not-a-number", "number"),
        (f"/v1/recipients/{PERSON}?delete_at_twilio=maybe", "delete_at_twilio"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(client: FlaskClient, auth: dict[str, str], path: str, field: str) -> None:
    response = client.delete(path, headers=auth)
    assert response.status_code == 422
    assert field in response.get_json()["errors"]


def test_erasure_needs_an_api_key(client: FlaskClient) -> None:
    assert client.delete(f"/v1/recipients/{PERSON}").status_code == 401


@pytest.fixture(scope="module")
def simulator_for_deletions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = find_free_port()
    process = ManagedProcess(
        "simulator-erasure",
        [sys.executable, "-m", "bulksms_tools.simulator", "--host", "127.0.0.1", "--port", str(port),
         "--account-sid", TEST_ACCOUNT_SID, "--auth-token", TEST_AUTH_TOKEN, "--latency-ms", "1"],
        dict(os.environ),
        log_path=Path(tmp_path_factory.mktemp("simulator")) / "simulator.log",
        working_directory=REPOSITORY_ROOT,
    ).start()  # fmt: skip
    wait_for_port(port)
    yield f"http://127.0.0.1:{port}"
    process.stop()


@pytest.fixture
def twilio_app(settings: Settings, simulator_for_deletions: str, engine: Any, redis_client: Any) -> Iterator[Flask]:
    yield from build_app(
        settings.replace(
            twilio_account_sid=TEST_ACCOUNT_SID,
            twilio_auth_token=TEST_AUTH_TOKEN,
            twilio_messaging_service_sid=TEST_MESSAGING_SERVICE_SID,
            twilio_api_base_url=simulator_for_deletions,
        )
    )


def test_with_delete_at_twilio_the_messages_are_deleted_at_twilio(
    twilio_app: Flask, simulator_for_deletions: str, db_session: Session
) -> None:
    from shared.platform.api_keys import create_api_key

    _, key = create_api_key(db_session, "erasure", scope="admin")
    db_session.commit()
    account = f"{simulator_for_deletions}/2010-04-01/Accounts/{TEST_ACCOUNT_SID}"
    created = requests.post(
        f"{account}/Messages.json",
        data={"To": PERSON, "Body": "hello", "MessagingServiceSid": TEST_MESSAGING_SERVICE_SID},
        auth=(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN),
        timeout=10,
    ).json()
    broadcast = create_broadcast(db_session, numbers(5))
    set_messages(db_session, broadcast.id, state="delivered")
    person = next(m for m in messages_of(db_session, broadcast.id) if m.to_number == PERSON)
    db_session.execute(
        text("UPDATE messages SET twilio_sid = :sid WHERE id = :id"), {"sid": created["sid"], "id": person.id}
    )
    db_session.execute(
        text("INSERT INTO message_attempts (message_id, attempt_number, twilio_sid) VALUES (:id, 0, :sid)"),
        {"id": person.id, "sid": "SM" + "f" * 32},  # an archived attempt Twilio no longer has
    )
    db_session.commit()

    response = twilio_app.test_client().delete(
        f"/v1/recipients/{PERSON}?delete_at_twilio=true", headers={"Authorization": f"Bearer {key}"}
    )

    assert response.status_code == 200, response.text
    assert response.get_json()["twilio"] == {
        "requested": True,
        "messages": 2,
        "deleted": 1,
        "not_found": 1,
        "failed": [],
    }
    fetched = requests.get(
        f"{account}/Messages/{created['sid']}.json", auth=(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN), timeout=10
    )
    assert fetched.status_code == 404
