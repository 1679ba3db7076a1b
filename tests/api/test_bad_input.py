"""Every bad input is a 4xx problem+json, never a 500, and a refused request stores nothing: the inputs that once
gave 500s, then hypothesis over the intake schema and the paging cursors."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.broadcasts.options import BROADCAST_OPTIONS
from shared.platform.api_keys import create_api_key
from tests.api.conftest import phone_numbers, post_broadcast

PROBLEM_JSON = "application/problem+json"


@pytest.fixture
def api_key(db_session: Session) -> str:
    """Hypothesis sends hundreds of requests a minute with one key: its own limits must not be what answers."""
    _, plaintext = create_api_key(
        db_session, "property tests", scope="admin", rate_limit_per_minute=1_000_000, daily_message_limit=10**9
    )
    return plaintext


def row_counts(db_session: Session) -> tuple[int, int, int]:
    db_session.rollback()  # a fresh snapshot
    return tuple(
        db_session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()  # noqa: S608 - fixed names
        for table in ("broadcasts", "messages", "message_attempts")
    )  # type: ignore[return-value]


def post_raw(client: FlaskClient, auth: dict[str, str], body: Any) -> Any:
    # ensure_ascii: a lone surrogate travels as the escape `\ud800`, as a client's JSON library would write it.
    return client.post(
        "/v1/broadcasts",
        data=json.dumps(body, ensure_ascii=True),
        headers={**auth, "Content-Type": "application/json"},
    )


def assert_refused_and_nothing_stored(response: Any, before: tuple[int, int, int], db_session: Session) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.get_data(as_text=True)[:500])
    assert response.headers["Content-Type"].startswith(PROBLEM_JSON)
    assert row_counts(db_session) == before


@pytest.mark.parametrize(
    ("body", "expected_status"),
    [
        ({"message": "hi", "recipients": ["+15550000001"], "max_segments": 2**31}, 422),
        ({"message": "hi", "recipients": ["+15550000001"], "max_segments": 10**30}, 422),
        ({"message": "hi", "recipients": ["+15550000001"], "max_cost": 1e10}, 422),
        ({"message": "hi", "recipients": ["+15550000001"], "max_cost": 1e300}, 422),
        ({"message": "hi", "recipients": ["\u0000"], "on_invalid": "skip"}, 422),
        ({"message": "hi \ud800", "recipients": ["+15550000001"]}, 400),
        ({"message": "hi {name}", "recipients": [{"to": "+15550000001", "vars": {"name": "\udfff!"}}]}, 400),
        ({"message": "hi {name}", "recipients": [{"to": "+15550000001", "vars": {"\ud800": "x"}}]}, 400),
    ],
)
def test_inputs_that_once_gave_500_are_refused_and_store_nothing(
    client: FlaskClient, auth: dict[str, str], db_session: Session, body: dict[str, Any], expected_status: int
) -> None:
    before = row_counts(db_session)
    response = post_raw(client, auth, body)
    assert response.status_code == expected_status, response.get_data(as_text=True)
    assert_refused_and_nothing_stored(response, before, db_session)


def test_a_nul_recipient_is_skipped_with_on_invalid_skip(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    response = post_raw(client, auth, {"message": "hi", "recipients": ["+15550000001", "\u0000"], "on_invalid": "skip"})
    assert response.status_code == 202, response.get_data(as_text=True)
    assert response.get_json()["recipients"]["invalid"] == 1
    assert row_counts(db_session)[1] == 1


def test_escaped_surrogate_pairs_are_text_and_accepted(client: FlaskClient, auth: dict[str, str]) -> None:
    response = post_raw(client, auth, {"message": "Polls close at 10pm \U0001f5f3", "recipients": phone_numbers(1)})
    assert response.status_code == 202, response.get_data(as_text=True)


def cursor_of(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor_value",
    [
        {"created_at": "2026-01-01T00:00:00+00:00", "id": 5},
        {"created_at": 5, "id": "6f1d2c3e-0000-4000-8000-000000000000"},
        {"created_at": "2026-01-01T00:00:00", "id": "6f1d2c3e-0000-4000-8000-000000000000"},
        {"after": True},
        {"after": 2**70},
        {"after": -1},
        {"after": 1.5},
        [1],
    ],
)
def test_cursors_that_once_gave_500_are_400(client: FlaskClient, auth: dict[str, str], cursor_value: Any) -> None:
    created = post_broadcast(client, auth, {"message": "hi", "recipients": phone_numbers(3)})
    broadcast_id = created.get_json()["id"]
    for path in ("/v1/broadcasts", f"/v1/broadcasts/{broadcast_id}/messages"):
        response = client.get(path, query_string={"cursor": cursor_of(cursor_value)}, headers=auth)
        if path.endswith("/messages") and isinstance(cursor_value, dict) and "after" not in cursor_value:
            assert response.status_code == 400
        assert response.status_code in (200, 400), (path, response.get_data(as_text=True))
        if response.status_code == 400:
            assert response.get_json()["type"] == "urn:bulksms:problem:invalid-cursor"


# ------------------------------------------------------------------------------------------ property-based

# Any text, often with a lone surrogate, NUL or a brace put in (drawn characters almost never are one).
TEXT = st.builds(
    lambda before, inserted, after: before + inserted + after,
    st.text(st.characters(exclude_categories=()), max_size=6),
    st.sampled_from(["", "\ud800", "\udfff", "\x00", "{", "}"]),
    st.text(max_size=6),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 1, 2**31 - 1, 2**31, 2**63, 1e10, 9_999_999_999.99, 1e-9, -1]),
    TEXT,
    st.sampled_from(["reject", "skip", "21:00", "08:00", "GB", "US", "2030-01-01T09:00:00+00:00", "https://x.test/a"]),
)
JSON = st.recursive(
    SCALARS, lambda children: st.lists(children, max_size=3) | st.dictionaries(TEXT, children, max_size=3), max_leaves=8
)
VALID_NUMBERS = st.sampled_from(["+15550000001", "+15550000002", "+447700900123"])
NUMBERS = st.one_of(VALID_NUMBERS, VALID_NUMBERS, st.sampled_from(["0044 7700 900124", "\u0000", "", "12"]))
RECIPIENT = st.one_of(
    NUMBERS,
    st.fixed_dictionaries({"to": NUMBERS}, optional={"vars": st.dictionaries(TEXT, st.one_of(TEXT, SCALARS))}),
    st.fixed_dictionaries({"to": VALID_NUMBERS, "vars": st.fixed_dictionaries({"name": TEXT})}),
    JSON,
)
OPTION_NAMES = [option.name for option in BROADCAST_OPTIONS if option.name not in ("message", "recipients")]
# Mostly well-formed bodies with one to three fields drawn from anything, so a bad value reaches the code past
# the schema (storage, COPY, rendering) rather than being stopped by an unrelated mistake.
INTAKE_BODIES = st.fixed_dictionaries(
    {
        "message": st.one_of(
            st.sampled_from(["hi", "hi {name|there}"]), TEXT.map(lambda text: "hi {name|there} " + text), JSON
        ),
        "recipients": st.one_of(
            st.lists(VALID_NUMBERS, min_size=1, max_size=3) | st.lists(RECIPIENT, min_size=1, max_size=4), JSON
        ),
        "on_invalid": st.sampled_from(["skip", "skip", "reject"]),
    },
).flatmap(
    lambda body: st.dictionaries(
        st.sampled_from([*OPTION_NAMES, "unknown_field"]), st.one_of(SCALARS, JSON), max_size=1
    ).map(lambda options: {**body, **options})
)
CURSOR_VALUES = st.one_of(
    st.fixed_dictionaries({}, optional={"after": SCALARS, "created_at": SCALARS, "id": SCALARS}),
    JSON,
)
PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(body=st.one_of(INTAKE_BODIES, JSON))
def test_no_intake_body_gives_a_5xx_and_a_refused_one_stores_nothing(
    client: FlaskClient, auth: dict[str, str], db_session: Session, body: Any
) -> None:
    before = row_counts(db_session)
    response = post_raw(client, auth, body)
    assert response.status_code < 500, (body, response.get_data(as_text=True)[:500])
    if response.status_code >= 400:
        assert_refused_and_nothing_stored(response, before, db_session)


@PROPERTY_SETTINGS
@given(cursor=st.one_of(CURSOR_VALUES.map(cursor_of), st.text(max_size=40)))
def test_no_cursor_gives_a_5xx(client: FlaskClient, auth: dict[str, str], cursor: str) -> None:
    listed = client.get("/v1/broadcasts", headers=auth).get_json()["items"]
    if not listed:  # the messages cursor is only read for a broadcast of this key
        listed = [post_broadcast(client, auth, {"message": "hi", "recipients": phone_numbers(3)}).get_json()]
    for path in ("/v1/broadcasts", f"/v1/broadcasts/{listed[0]['id']}/messages"):
        response = client.get(path, query_string={"cursor": cursor}, headers=auth)
        assert response.status_code < 500, (cursor, response.get_data(as_text=True)[:300])
        if response.status_code >= 400:
            assert response.headers["Content-Type"].startswith(PROBLEM_JSON)
