"""POST /v1/broadcasts content features: cost report, dry run, limits, templates, MMS options, smart encoding."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.platform.models import Broadcast, Message
from shared.platform.settings import Settings
from shared.platform.task_queue import SEND_QUEUE
from tests.api.conftest import build_app, phone_numbers, post_broadcast

CURLY = "Don\u2019t forget: polls close at 10pm"


@pytest.fixture
def priced_app(settings: Settings, engine: Any, redis_client: Any) -> Iterator[Flask]:
    yield from build_app(settings.replace(price_per_segment=0.01, price_table="+44=0.04,+447700=0.05"))


@pytest.fixture
def priced_client(priced_app: Flask) -> FlaskClient:
    return priced_app.test_client()


def stored(db_session: Session) -> tuple[int, int]:
    db_session.rollback()
    return (
        db_session.scalar(select(func.count()).select_from(Broadcast)) or 0,
        db_session.scalar(select(func.count()).select_from(Message)) or 0,
    )


def test_the_202_reports_segments_per_recipient_ucs2_characters_and_cost(
    priced_client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    recipients = ["+15550000001", "+441234567890", "+447700900123"]
    response = post_broadcast(priced_client, auth, {"message": CURLY + " " + "a" * 40, "recipients": recipients})

    assert response.status_code == 202
    body = response.get_json()
    assert body["message"]["encoding"] == "UCS-2"
    assert body["message"]["segments"] == 2  # 74 UCS-2 units
    assert body["message"]["segments_per_recipient"] == {"min": 2, "max": 2, "total": 6}
    assert body["message"]["ucs2_characters"] == [{"position": 3, "character": "\u2019"}]
    assert body["cost"]["estimated"] == pytest.approx(0.2)  # 2 x (0.01 + 0.04 + 0.05)
    assert body["cost"]["currency"] == "USD"
    assert body["cost"]["price_per_segment_by_prefix"] == {"+44": 0.04, "+447700": 0.05}
    broadcast = db_session.get(Broadcast, body["id"])
    assert broadcast is not None
    assert (broadcast.segments_total, broadcast.segments_min, broadcast.segments_max) == (6, 2, 2)
    assert float(broadcast.estimated_cost or 0) == pytest.approx(0.2)


def test_smart_encoding_counts_a_curly_quote_message_as_gsm7(
    settings: Settings, engine: Any, redis_client: Any, auth: dict[str, str]
) -> None:
    for smart, encoding in ((False, "UCS-2"), (True, "GSM-7")):
        for app in build_app(settings.replace(smart_encoding=smart)):
            response = post_broadcast(app.test_client(), auth, {"message": CURLY, "recipients": ["+15550000001"]})
            message = response.get_json()["message"]
            assert (message["encoding"], message["smart_encoded"]) == (encoding, smart)
            assert message["ucs2_characters"] == ([] if smart else [{"position": 3, "character": "\u2019"}])


def test_a_dry_run_stores_and_queues_nothing_and_reports_cost(
    priced_client: FlaskClient, auth: dict[str, str], db_session: Session, redis_client: redis.Redis
) -> None:
    response = post_broadcast(
        priced_client,
        auth,
        {
            "message": "a" * 200,
            "recipients": [*phone_numbers(3), "+447700900123", "oops"],
            "on_invalid": "skip",
            "dry_run": True,
        },
    )

    assert response.status_code == 200
    body = response.get_json()
    assert body["dry_run"] is True
    assert body["id"] is None
    assert {key: body["recipients"][key] for key in ("received", "accepted", "invalid")} == {
        "received": 5,
        "accepted": 4,
        "invalid": 1,
    }
    assert body["message"]["segments_per_recipient"] == {"min": 2, "max": 2, "total": 8}
    assert body["cost"]["estimated"] == pytest.approx(2 * (3 * 0.01 + 0.05))
    assert stored(db_session) == (0, 0)
    assert redis_client.llen(SEND_QUEUE) == 0


def test_over_max_segments_or_max_cost_is_refused_with_the_numbers(
    priced_client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    request = {"message": "a" * 200, "recipients": phone_numbers(10)}

    too_long = post_broadcast(priced_client, auth, {**request, "max_segments": 1})
    too_dear = post_broadcast(priced_client, auth, {**request, "max_cost": 0.19})
    within = post_broadcast(priced_client, auth, {**request, "max_segments": 2, "max_cost": 0.2})

    assert too_long.status_code == 422
    assert too_long.get_json()["max_segments"] == 1
    assert too_long.get_json()["segments_per_recipient"] == {"min": 2, "max": 2, "total": 20}
    assert too_dear.status_code == 422
    assert too_dear.get_json()["max_cost"] == 0.19
    assert too_dear.get_json()["estimated_cost"] == pytest.approx(0.2)
    assert within.status_code == 202
    assert within.get_json()["cost"]["max_cost"] == 0.2
    assert stored(db_session) == (1, 10)


def test_template_with_missing_values_is_refused_listing_recipients_and_names(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    recipients: list[Any] = [{"to": "+15550000001", "vars": {"first_name": "Ann", "code": "A1"}}]
    recipients += [{"to": f"+1555100{index:04d}", "vars": {"code": "B"}} for index in range(150)]
    response = post_broadcast(client, auth, {"message": "Hi {first_name}, code {code}", "recipients": recipients})

    assert response.status_code == 422
    problem = response.get_json()
    assert problem["type"].endswith("template-variables")
    assert problem["recipients_count"] == 150
    assert len(problem["recipients"]) == 100
    assert problem["recipients"][0] == {"index": 1, "to": "+15551000000", "missing": ["first_name"]}
    assert stored(db_session) == (0, 0)


def test_template_defaults_store_variables_and_count_each_rendered_message(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    recipients = [
        {"to": "+15550000001", "vars": {"first_name": "Ann"}},
        "+15550000002",  # strings and objects may mix
        {"to": "+15550000003", "vars": {"first_name": "x" * 160}},
    ]
    response = post_broadcast(client, auth, {"message": "Hi {first_name|there}!", "recipients": recipients})

    assert response.status_code == 202
    body = response.get_json()
    assert body["message"]["template"] is True
    assert body["message"]["segments_per_recipient"] == {"min": 1, "max": 2, "total": 4}
    db_session.rollback()
    rows = db_session.execute(select(Message.to_number, Message.variables).order_by(Message.id)).all()
    assert [tuple(row) for row in rows] == [
        ("+15550000001", {"first_name": "Ann"}),
        ("+15550000002", None),
        ("+15550000003", {"first_name": "x" * 160}),
    ]
    broadcast = db_session.get(Broadcast, body["id"])
    assert broadcast is not None and broadcast.is_template and broadcast.body == "Hi {first_name|there}!"


def test_braces_are_escaped_by_doubling_and_a_stray_brace_is_refused(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    escaped = post_broadcast(client, auth, {"message": "Use code {{VOTE}}", "recipients": ["+15550000001"]})
    stray = post_broadcast(client, auth, {"message": "Use code {VOTE now", "recipients": ["+15550000001"]})

    assert escaped.status_code == 202
    db_session.rollback()
    assert db_session.scalar(select(Broadcast.body)) == "Use code {VOTE}"
    assert stray.status_code == 422
    assert "message" in stray.get_json()["errors"]


def test_recipient_objects_work_without_a_template(client: FlaskClient, auth: dict[str, str]) -> None:
    response = post_broadcast(
        client,
        auth,
        {"message": "Hello", "recipients": [{"to": "+15550000001"}, "+15550000002", {"to": 5}], "on_invalid": "skip"},
    )

    assert response.status_code == 202
    assert response.get_json()["recipients"]["accepted"] == 2
    assert response.get_json()["invalid"][0]["index"] == 2


def test_mms_without_text_reports_mms_and_stores_the_options(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    media = ["https://example.com/a.png", "https://cdn.example.org/b.jpg?size=2"]
    response = post_broadcast(
        client, auth, {"recipients": ["+15550000001"], "media_urls": media, "validity_period": 600}
    )

    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["message"]["mms"] is True
    assert body["message"]["segments"] is None
    assert body["message"]["segments_per_recipient"] is None
    assert body["cost"]["estimated"] is None
    assert "MMS" in body["cost"]["note"]
    db_session.rollback()
    broadcast = db_session.get(Broadcast, body["id"])
    assert broadcast is not None
    assert (broadcast.media_urls, broadcast.validity_period, broadcast.body) == (media, 600, "")


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"media_urls": ["http://example.com/a.png"]}, "media_urls"),
        ({"media_urls": ["https://example.com/a.png"] * 11}, "media_urls"),
        ({"media_urls": ["https:///nohost"]}, "media_urls"),
        ({"media_urls": ["not a url"]}, "media_urls"),
        ({"media_urls": "https://example.com/a.png"}, "media_urls"),
        ({"validity_period": 0}, "validity_period"),
        ({"validity_period": 36001}, "validity_period"),
        ({"max_segments": 0}, "max_segments"),
        ({"max_cost": -1}, "max_cost"),
    ],
)
def test_invalid_options_are_422(
    client: FlaskClient, auth: dict[str, str], db_session: Session, extra: dict[str, Any], field: str
) -> None:
    response = post_broadcast(client, auth, {"message": "hi", "recipients": ["+15550000001"], **extra})

    assert response.status_code == 422
    assert field in response.get_json()["errors"], json.dumps(response.get_json())
    assert stored(db_session) == (0, 0)


def test_an_empty_message_needs_media(client: FlaskClient, auth: dict[str, str]) -> None:
    response = post_broadcast(client, auth, {"message": "", "recipients": ["+15550000001"]})

    assert response.status_code == 422
    assert "message" in response.get_json()["errors"]
