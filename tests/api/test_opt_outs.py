"""The opt-out list over HTTP: STOP/START replies (signed like Twilio), the JSON API, CSV import and export."""

from __future__ import annotations

import csv
import io
from typing import Any
from urllib.parse import urlencode

import pytest
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.platform.settings import Settings
from shared.sending.claims import ClaimedMessage, record_opted_out_numbers
from shared.twilio.gateway import Permanent
from tests.status_callbacks import twilio_signature

TOKEN = "test-auth-token-0123456789abcdef"
INBOUND_URL = "http://localhost/webhooks/twilio/inbound"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


@pytest.fixture
def settings(api_settings: Settings) -> Settings:
    return api_settings.replace(twilio_auth_token=TOKEN)


def inbound(
    client: FlaskClient, body: str, sender: str = "+447700900123", *, forged: bool = False, **extra: str
) -> Any:
    parameters = {
        "MessageSid": "SM" + "c3" * 16,
        "AccountSid": "AC" + "a1" * 16,
        "From": sender,
        "To": "+15005550006",
        "Body": body,
        **extra,
    }
    signature = twilio_signature("wrong-token" if forged else TOKEN, INBOUND_URL, parameters)
    return client.post(
        "/webhooks/twilio/inbound",
        data=urlencode(parameters),
        content_type="application/x-www-form-urlencoded",
        headers={"X-Twilio-Signature": signature},
    )


def opted_out(db_session: Session) -> dict[str, str]:
    db_session.expire_all()
    rows = db_session.execute(text("SELECT phone_number, source FROM opted_out_numbers")).all()
    return {row.phone_number: row.source for row in rows}


@pytest.mark.parametrize("body", ["STOP", "  stop ", "Stop.", "unsubscribe!", "QUIT", "optout", "Revoke", "END"])
def test_a_stop_reply_opts_the_sender_out_and_answers_empty_twiml(
    client: FlaskClient, db_session: Session, body: str
) -> None:
    response = inbound(client, body)
    assert response.status_code == 200
    assert response.content_type.startswith("text/xml")
    assert response.get_data(as_text=True) == EMPTY_TWIML
    assert opted_out(db_session) == {"+447700900123": "inbound_stop"}


def test_start_opts_back_in_and_help_or_chatter_change_nothing(client: FlaskClient, db_session: Session) -> None:
    inbound(client, "STOP")
    assert inbound(client, "HELP").status_code == 200
    assert inbound(client, "Stop sending me these please").status_code == 200
    assert "+447700900123" in opted_out(db_session)
    inbound(client, "start")
    assert opted_out(db_session) == {}
    inbound(client, "Hello")
    assert opted_out(db_session) == {}
    inbound(client, "unstop")  # not on the list: still fine
    assert opted_out(db_session) == {}


def test_advanced_opt_out_type_wins_over_the_body(client: FlaskClient, db_session: Session) -> None:
    inbound(client, "ARRET", OptOutType="STOP")  # a custom keyword configured in Twilio's console
    assert "+447700900123" in opted_out(db_session)
    inbound(client, "STOP", OptOutType="HELP")  # Twilio says HELP: nothing changes
    assert "+447700900123" in opted_out(db_session)
    inbound(client, "volver", OptOutType="START")
    assert opted_out(db_session) == {}


def test_a_forged_or_unsigned_reply_is_refused_and_changes_nothing(client: FlaskClient, db_session: Session) -> None:
    assert inbound(client, "STOP", forged=True).status_code == 403
    response = client.post("/webhooks/twilio/inbound", data={"From": "+447700900123", "Body": "STOP"})
    assert response.status_code == 403
    assert response.content_type == "application/problem+json"
    assert opted_out(db_session) == {}


def test_a_21610_refusal_shows_in_the_list_with_its_source(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    refused = ClaimedMessage(id=1, to_number="+15005550004", attempts=1)
    record_opted_out_numbers(db_session, [(refused, Permanent(21610, "unsubscribed recipient"))])
    db_session.commit()
    items = client.get("/v1/opt-outs", headers=auth).get_json()["items"]
    assert [(item["number"], item["source"]) for item in items] == [("+15005550004", "send_21610")]


def test_add_list_search_page_and_delete(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post(
        "/v1/opt-outs",
        json={"numbers": ["+44 7700 900001", "0044-7700-900002", "+12125550100"], "reason": "asked by phone"},
        headers=auth,
    )
    assert response.status_code == 201
    assert response.get_json()["added"] == ["+12125550100", "+447700900001", "+447700900002"]
    again = client.post("/v1/opt-outs", json={"number": "+12125550100"}, headers=auth)
    assert again.status_code == 200 and again.get_json()["already_present"] == ["+12125550100"]

    first = client.get("/v1/opt-outs?limit=2", headers=auth).get_json()
    assert [item["number"] for item in first["items"]] == ["+12125550100", "+447700900001"]
    assert first["items"][0]["reason"] == "asked by phone" and first["items"][0]["source"] == "api"
    second = client.get(first["links"]["next"], headers=auth).get_json()
    assert [item["number"] for item in second["items"]] == ["+447700900002"] and second["links"]["next"] is None

    by_prefix = client.get("/v1/opt-outs?search=%2B44", headers=auth).get_json()["items"]
    assert [item["number"] for item in by_prefix] == ["+447700900001", "+447700900002"]
    by_substring = client.get("/v1/opt-outs?search=0900002", headers=auth).get_json()["items"]
    assert [item["number"] for item in by_substring] == ["+447700900002"]

    assert client.delete("/v1/opt-outs/+447700900001", headers=auth).status_code == 204
    missing = client.delete("/v1/opt-outs/%2B447700900001", headers=auth)
    assert missing.status_code == 404 and missing.content_type == "application/problem+json"
    remaining = client.get("/v1/opt-outs", headers=auth).get_json()["items"]
    assert [item["number"] for item in remaining] == ["+12125550100", "+447700900002"]


def test_invalid_numbers_are_422_and_nothing_is_stored(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post("/v1/opt-outs", json={"numbers": ["+447700900001", "12345", 7]}, headers=auth)
    assert response.status_code == 422
    assert [entry["index"] for entry in response.get_json()["invalid"]] == [1, 2]
    assert client.get("/v1/opt-outs", headers=auth).get_json()["items"] == []
    assert client.get("/v1/opt-outs").status_code == 401


def test_csv_import_reports_lines_and_export_streams_the_list(client: FlaskClient, auth: dict[str, str]) -> None:
    client.post("/v1/opt-outs", json={"number": "+447700900009"}, headers=auth)
    content = (
        "phone,reason\n"
        "+44 7700 900001,complained\n"
        "not a number,\n"
        "+447700900009,again\n"
        "001 212 555 0100,\n"
        "+12125550100,duplicate in file\n"
        ",\n"
    )
    response = client.post("/v1/opt-outs", data=content, content_type="text/csv", headers=auth)
    assert response.status_code == 200, response.get_data(as_text=True)
    report = response.get_json()
    assert report["imported"] == 2
    assert report["already_present"] == 2
    assert report["invalid_count"] == 2
    assert [entry["line"] for entry in report["invalid"]] == [3, 7]

    bad = client.post("/v1/opt-outs", data="number\n+447700900001\n", content_type="text/csv", headers=auth)
    assert bad.status_code == 422

    export = client.get("/v1/opt-outs.csv", headers=auth)
    assert export.status_code == 200 and export.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(export.get_data(as_text=True))))
    assert {row["phone"]: row["reason"] for row in rows} == {
        "+12125550100": "",
        "+447700900001": "complained",
        "+447700900009": "",
    }
    assert {row["source"] for row in rows} == {"api", "csv_import"}
