"""POST /v1/broadcasts with numbers as people write them: default regions, strict numbers, allowed countries,
counts per country and per-country prices. The parsing itself is tested in tests/shared/compliance."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.platform.api_keys import create_api_key
from shared.platform.models import Broadcast, Message
from shared.platform.settings import Settings
from tests.api.conftest import build_app, post_broadcast
from tests.api.test_create_broadcast import PROBLEM_JSON, stored_counts

PEOPLES_FORMATS = ["+44 (0)7700 900123", "07700900123", "0044 7700 900123", "07700 900124", "+1 (202) 555-0142"]


def stored_numbers(db_session: Session) -> list[str]:
    return list(db_session.scalars(select(Message.to_number).order_by(Message.id)))


def key_with(db_session: Session, **rules: Any) -> dict[str, str]:
    _, plaintext = create_api_key(db_session, "numbers", **rules)
    return {"Authorization": f"Bearer {plaintext}"}


def test_national_numbers_are_read_in_the_broadcasts_default_region(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    response = post_broadcast(client, auth, {"message": "hi", "recipients": PEOPLES_FORMATS, "default_region": "gb"})

    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["default_region"] == "GB"
    assert body["strict_numbers"] is False
    assert body["recipients"]["duplicates"] == 2  # the same person written three ways
    assert body["recipients"]["by_country"] == {"GB": 2, "US": 1}
    assert stored_numbers(db_session) == ["+447700900123", "+447700900124", "+12025550142"]


def test_without_a_default_region_national_numbers_are_refused_with_a_reason(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    response = post_broadcast(client, auth, {"message": "hi", "recipients": PEOPLES_FORMATS})

    assert response.status_code == 422
    problem = response.get_json()
    assert problem["invalid"] == [
        {
            "index": 1,
            "value": "07700900123",
            "reason": "missing country code: start with + or 00, or set default_region",
        },
        {
            "index": 3,
            "value": "07700 900124",
            "reason": "missing country code: start with + or 00, or set default_region",
        },
    ]
    assert stored_counts(db_session) == (0, 0)


def test_the_api_keys_default_region_applies_unless_the_broadcast_names_one(
    client: FlaskClient, db_session: Session
) -> None:
    auth = key_with(db_session, default_region="FR")

    from_key = post_broadcast(client, auth, {"message": "hi", "recipients": ["06 12 34 56 78"]})
    from_request = post_broadcast(
        client, auth, {"message": "hi", "recipients": ["07700 900123"], "default_region": "GB"}
    )

    assert (from_key.status_code, from_key.get_json()["default_region"]) == (202, "FR")
    assert (from_request.status_code, from_request.get_json()["default_region"]) == (202, "GB")
    assert stored_numbers(db_session) == ["+33612345678", "+447700900123"]


def test_the_default_region_setting_applies_last(
    settings: Settings, engine: Any, redis_client: redis.Redis, db_session: Session
) -> None:
    auth = key_with(db_session)
    for app in build_app(settings.replace(default_region="DE")):
        response = post_broadcast(app.test_client(), auth, {"message": "hi", "recipients": ["030 1234567"]})
        assert response.status_code == 202, response.get_json()
        assert response.get_json()["default_region"] == "DE"
    assert stored_numbers(db_session) == ["+49301234567"]


@pytest.mark.parametrize("region", ["UK", "XX", "GBR", "001", 44])
def test_an_unknown_default_region_is_422(
    client: FlaskClient, auth: dict[str, str], db_session: Session, region: Any
) -> None:
    response = post_broadcast(
        client, auth, {"message": "hi", "recipients": ["+447700900123"], "default_region": region}
    )

    assert response.status_code == 422
    assert response.content_type == PROBLEM_JSON
    assert "default_region" in response.get_json()["errors"]
    assert stored_counts(db_session) == (0, 0)


def test_strict_numbers_refuses_numbers_in_no_assigned_range_but_keeps_fictional_ones(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    recipients = ["+447700900123", "+15550000000", "+12025550142"]
    lenient = post_broadcast(client, auth, {"message": "hi", "recipients": recipients, "dry_run": True})
    strict = post_broadcast(client, auth, {"message": "hi", "recipients": recipients, "strict_numbers": True})

    assert lenient.status_code == 200
    assert lenient.get_json()["recipients"]["not_valid"] == 1  # reported, not refused
    assert strict.status_code == 422
    assert strict.get_json()["invalid"] == [
        {"index": 1, "value": "+15550000000", "reason": "not a valid number for US"}
    ]
    assert stored_counts(db_session) == (0, 0)


def test_countries_outside_allowed_countries_are_refused_with_their_own_reason(
    settings: Settings, engine: Any, redis_client: redis.Redis, db_session: Session
) -> None:
    recipients = ["+447700900123", "+33612345678", "+353851234567", "+14165550142"]
    narrower = key_with(db_session, allowed_countries=["GB", "FR", "CA"])
    any_country = key_with(db_session)
    for app in build_app(settings.replace(allowed_countries="GB,IE,FR")):
        client = app.test_client()
        refused = post_broadcast(client, any_country, {"message": "hi", "recipients": recipients})
        skipped = post_broadcast(client, narrower, {"message": "hi", "recipients": recipients, "on_invalid": "skip"})

        assert refused.status_code == 422
        assert refused.get_json()["invalid"] == [
            {"index": 3, "value": "+14165550142", "reason": "CA is not among the allowed countries"}
        ]
        # The key allows CA but the account (ALLOWED_COUNTRIES) does not; the account allows IE, the key does not.
        assert skipped.status_code == 202
        assert [entry["reason"] for entry in skipped.get_json()["invalid"]] == [
            "IE is not among the allowed countries",
            "CA is not among the allowed countries",
        ]
        assert skipped.get_json()["recipients"]["by_country"] == {"FR": 1, "GB": 1}
    assert stored_numbers(db_session) == ["+447700900123", "+33612345678"]


def test_the_cost_estimate_prices_each_recipient_by_its_country(
    settings: Settings, engine: Any, redis_client: redis.Redis, auth: dict[str, str], db_session: Session
) -> None:
    recipients = ["+447700900123", "+447700900124", "+14165550142", "+12025550142", "+18765550100"]
    for app in build_app(settings.replace(price_table="GB=0.04,CA=0.01,+1876=0.1")):
        response = post_broadcast(app.test_client(), auth, {"message": "hi", "recipients": recipients})

        assert response.status_code == 202
        body = response.get_json()
        # 2 x GB 0.04 + CA 0.01 + US at PRICE_PER_SEGMENT 0.0083 + JM by its +1876 prefix 0.1
        assert body["cost"]["estimated"] == pytest.approx(0.1983)
        assert body["cost"]["price_per_segment_by_country"] == {"CA": 0.01, "GB": 0.04}
        assert body["recipients"]["by_country"] == {"GB": 2, "CA": 1, "JM": 1, "US": 1}
    broadcast = db_session.scalars(select(Broadcast)).one()
    assert broadcast.recipients_by_country == {"GB": 2, "CA": 1, "JM": 1, "US": 1}


def test_a_csv_upload_takes_default_region_and_strict_numbers_as_options(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    text = "phone;name\n07700 900123;Ann\n'07700 900124;Bob\n"
    response = client.post(
        "/v1/broadcasts",
        query_string={"message": "Hi {name}", "default_region": "GB", "strict_numbers": "true"},
        data=text.encode(),
        headers={**auth, "Content-Type": "text/csv"},
    )

    assert response.status_code == 202, response.get_json()
    assert (response.get_json()["default_region"], response.get_json()["strict_numbers"]) == ("GB", True)
    assert stored_numbers(db_session) == ["+447700900123", "+447700900124"]
