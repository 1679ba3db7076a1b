"""Content through a real worker to the simulator: rendered templates, MMS options, SmartEncoded."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from api.app import create_app
from shared.platform.api_keys import create_api_key
from shared.platform.settings import Settings
from tests.conftest import SimulatorControl, WorkerProcesses, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def api_key(db_session: Session) -> str:
    _, plaintext = create_api_key(db_session, "e2e-content")
    db_session.commit()
    return plaintext


def submit(client: FlaskClient, key: str, request: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/broadcasts", json=request, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 202, response.get_data(as_text=True)
    return dict(response.get_json())


def wait_until_submitted(client: FlaskClient, key: str, broadcast_id: str) -> None:
    def submitted() -> bool:
        response = client.get(f"/v1/broadcasts/{broadcast_id}", headers={"Authorization": f"Bearer {key}"})
        return bool(response.get_json()["status"] == "submitted")

    wait_until(submitted, 90, interval=0.5, message=f"broadcast {broadcast_id} submitted")


def received(simulator: SimulatorControl, to: str) -> list[dict[str, Any]]:
    """What the simulator stored for one number: body, segments and the request's optional parameters."""
    response = requests.get(f"{simulator.url}/_simulator/messages", params={"to": to}, timeout=10)
    response.raise_for_status()
    return list(response.json()["messages"])


def test_each_recipient_receives_their_own_rendered_message(
    settings: Settings, api_key: str, workers: WorkerProcesses, simulator: SimulatorControl
) -> None:
    client = create_app(settings).test_client()
    names = {f"+1555200{index:04d}": f"Person{index}" for index in range(150)}  # two chunks
    recipients: list[Any] = [{"to": number, "vars": {"first_name": name}} for number, name in names.items()]
    recipients.append("+15553000000")  # no vars: the default
    intake = submit(
        client,
        api_key,
        {"message": "Hi {first_name|there}, polls close at 10pm. {{Reply STOP}}", "recipients": recipients},
    )

    workers.start_worker()
    wait_until_submitted(client, api_key, intake["id"])

    for number in ["+15552000000", "+15552000149"]:
        assert [m["body"] for m in received(simulator, number)] == [
            f"Hi {names[number]}, polls close at 10pm. {{Reply STOP}}"
        ]
    assert [m["body"] for m in received(simulator, "+15553000000")] == ["Hi there, polls close at 10pm. {Reply STOP}"]
    assert simulator.summary()["accepted"] == 151


def test_mms_parameters_and_smart_encoding_reach_twilio(
    settings: Settings, api_key: str, workers: WorkerProcesses, simulator: SimulatorControl
) -> None:
    mms_client = create_app(settings).test_client()
    smart_client = create_app(settings.replace(smart_encoding=True)).test_client()
    media = ["https://example.com/poster.png", "https://example.com/map.jpg"]
    mms = submit(
        mms_client,
        api_key,
        {"message": "", "recipients": ["+15554000001"], "media_urls": media, "validity_period": 3600},
    )
    smart = submit(smart_client, api_key, {"message": "Don\u2019t forget \u2014 vote!", "recipients": ["+15554000002"]})
    assert smart["message"]["encoding"] == "GSM-7"

    workers.start_worker()
    wait_until_submitted(mms_client, api_key, mms["id"])
    wait_until_submitted(smart_client, api_key, smart["id"])

    [sent_mms] = received(simulator, "+15554000001")
    assert sent_mms["parameters"] == {"MediaUrl": media, "ValidityPeriod": "3600"}
    assert (sent_mms["body"], sent_mms["num_media"]) == (None, 2)
    [sent_smart] = received(simulator, "+15554000002")
    assert sent_smart["parameters"] == {"SmartEncoded": "true"}
    assert sent_smart["body"] == "Don\u2019t forget \u2014 vote!"  # Twilio replaces; we send the original
    assert sent_smart["num_segments"] == 1
