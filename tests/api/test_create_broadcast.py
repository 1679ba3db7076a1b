"""POST /v1/broadcasts: what is stored, what is queued, and every way a request is refused."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bulksms_tools.local_services import find_free_port
from shared.platform.models import Broadcast, Message
from shared.platform.settings import Settings
from shared.platform.task_queue import SEND_CHUNK_TASK, SEND_QUEUE
from tests.api.conftest import build_app, phone_numbers, post_broadcast

PROBLEM_JSON = "application/problem+json"


def stored_counts(db_session: Session) -> tuple[int, int]:
    db_session.rollback()  # see what other sessions committed
    return (
        db_session.scalar(select(func.count()).select_from(Broadcast)) or 0,
        db_session.scalar(select(func.count()).select_from(Message)) or 0,
    )


def queued_tasks(redis_client: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in redis_client.lrange(SEND_QUEUE, 0, -1)]


def test_accepts_a_broadcast_stores_every_recipient_and_queues_one_task_per_chunk(
    client: FlaskClient,
    auth: dict[str, str],
    db_session: Session,
    redis_client: redis.Redis,
    settings: Settings,
) -> None:
    recipients = phone_numbers(250)
    response = post_broadcast(client, auth, {"message": "Hello from the council", "recipients": recipients})

    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "queued"
    assert body["recipients"] == {
        "received": 250,
        "accepted": 250,
        "duplicates": 0,
        "invalid": 0,
        "opted_out": 0,
        "deferred": 0,
        "not_valid": 250,  # +1 555: a possible length, but an area code no one has
        "by_country": {"US": 250},
    }
    assert body["invalid"] == []
    assert {key: body["message"][key] for key in ("characters", "encoding", "segments")} == {
        "characters": 22,
        "encoding": "GSM-7",
        "segments": 1,
    }
    assert body["chunks"] == 3  # SEND_CHUNK_SIZE is 100
    assert body["links"] == {
        "self": f"/v1/broadcasts/{body['id']}",
        "messages": f"/v1/broadcasts/{body['id']}/messages",
    }
    assert response.headers["Location"] == body["links"]["self"]

    stored = db_session.execute(
        select(Message.to_number, Message.chunk_number, Message.state).order_by(Message.id)
    ).all()
    assert [row.to_number for row in stored] == recipients
    assert [row.chunk_number for row in stored] == [index // settings.send_chunk_size for index in range(250)]
    assert {row.state for row in stored} == {"pending"}
    broadcast = db_session.get(Broadcast, body["id"])
    assert broadcast is not None and broadcast.enqueued_at is not None

    tasks = queued_tasks(redis_client)
    assert redis_client.llen(SEND_QUEUE) == 3
    assert sorted(json.loads(base64.b64decode(task["body"]))[0][1] for task in tasks) == [0, 1, 2]
    for task in tasks:
        assert task["headers"]["task"] == SEND_CHUNK_TASK
        args = json.loads(base64.b64decode(task["body"]))[0]
        assert args[0] == body["id"]
    raw_queue = b"".join(redis_client.lrange(SEND_QUEUE, 0, -1))
    decoded_bodies = "".join(base64.b64decode(task["body"]).decode() for task in tasks)
    assert "+1555" not in raw_queue.decode() and "+1555" not in decoded_bodies  # ids only, never numbers


def test_normalises_numbers_and_collapses_duplicates(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    recipients = ["+44 7700 900123", "0044-7700-900123", "(+1) 202.555.0100", "+12025550100", "+33612345678"]
    response = post_broadcast(client, auth, {"message": "hi", "recipients": recipients})

    assert response.status_code == 202
    assert response.get_json()["recipients"] == {
        "received": 5,
        "accepted": 3,
        "duplicates": 2,
        "invalid": 0,
        "opted_out": 0,
        "deferred": 0,
        "not_valid": 0,
        "by_country": {"FR": 1, "GB": 1, "US": 1},
    }
    stored = db_session.scalars(select(Message.to_number).order_by(Message.id)).all()
    assert stored == ["+447700900123", "+12025550100", "+33612345678"]


def test_reject_mode_lists_invalid_entries_and_stores_nothing(
    client: FlaskClient, auth: dict[str, str], db_session: Session, redis_client: redis.Redis
) -> None:
    recipients = ["+447700900123", "07700 900123", 447700900124, "+0123", "+1234567890123456"]
    response = post_broadcast(client, auth, {"message": "hi", "recipients": recipients})

    assert response.status_code == 422
    assert response.content_type == PROBLEM_JSON
    problem = response.get_json()
    assert problem["invalid_count"] == 4
    assert [(entry["index"], entry["value"]) for entry in problem["invalid"]] == [
        (1, "07700 900123"),
        (2, 447700900124),
        (3, "+0123"),
        (4, "+1234567890123456"),
    ]
    assert all(entry["reason"] for entry in problem["invalid"])
    assert stored_counts(db_session) == (0, 0)
    assert redis_client.llen(SEND_QUEUE) == 0


def test_invalid_values_are_echoed_at_most_64_characters_with_control_characters_escaped(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    long_value = "+44 7700 900123\x1b[31m" + "9" * 10_000
    body = {"message": "hi", "recipients": ["+447700900123", long_value, {"to": ["x"] * 1_000}]}
    response = post_broadcast(client, auth, body)

    assert response.status_code == 422
    echoed = [entry["value"] for entry in response.get_json()["invalid"]]
    assert echoed[0] == "+44 7700 900123\\x1b[31m" + "9" * 40 + "…"
    assert echoed[1] == ('["x"' + ',"x"' * 15)[:63] + "…"
    assert all(len(value) <= 64 for value in echoed)
    assert stored_counts(db_session) == (0, 0)


def test_reject_mode_reports_only_the_first_hundred_invalid_entries(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    response = post_broadcast(client, auth, {"message": "hi", "recipients": ["nope"] * 150 + ["+447700900123"]})

    assert response.status_code == 422
    problem = response.get_json()
    assert problem["invalid_count"] == 150
    assert [entry["index"] for entry in problem["invalid"]] == list(range(100))
    assert stored_counts(db_session) == (0, 0)


def test_skip_mode_sends_to_the_valid_numbers_and_reports_the_rest(
    client: FlaskClient, auth: dict[str, str], db_session: Session, redis_client: redis.Redis
) -> None:
    recipients = ["+447700900123", "not a number", "+447700900124", "+447700900123"]
    response = post_broadcast(client, auth, {"message": "hi", "recipients": recipients, "on_invalid": "skip"})

    assert response.status_code == 202
    body = response.get_json()
    assert body["recipients"] == {
        "received": 4,
        "accepted": 2,
        "duplicates": 1,
        "invalid": 1,
        "opted_out": 0,
        "deferred": 0,
        "not_valid": 0,
        "by_country": {"GB": 2},
    }
    assert [(entry["index"], entry["value"]) for entry in body["invalid"]] == [(1, "not a number")]
    assert db_session.scalars(select(Message.to_number).order_by(Message.id)).all() == [
        "+447700900123",
        "+447700900124",
    ]
    assert redis_client.llen(SEND_QUEUE) == 1


def test_skip_mode_with_no_valid_number_is_refused(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    response = post_broadcast(client, auth, {"message": "hi", "recipients": ["x", "12"], "on_invalid": "skip"})

    assert response.status_code == 422
    assert response.get_json()["invalid_count"] == 2
    assert stored_counts(db_session) == (0, 0)


def test_same_idempotency_key_and_body_returns_the_original_broadcast(
    client: FlaskClient, auth: dict[str, str], db_session: Session, redis_client: redis.Redis
) -> None:
    request_body = {"message": "hi", "recipients": phone_numbers(150)}
    first = post_broadcast(client, auth, request_body, **{"Idempotency-Key": "order-42"})
    again = post_broadcast(client, auth, request_body, **{"Idempotency-Key": "order-42"})

    assert first.status_code == 202
    assert again.status_code == 200
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.headers["Location"] == first.headers["Location"]
    assert stored_counts(db_session) == (1, 150)
    assert redis_client.llen(SEND_QUEUE) == 2  # the replay queued nothing more


def test_same_idempotency_key_with_a_different_body_is_a_conflict(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    first = post_broadcast(client, auth, {"message": "hi", "recipients": ["+447700900123"]}, **{"Idempotency-Key": "k"})
    other = post_broadcast(
        client, auth, {"message": "hello", "recipients": ["+447700900123"]}, **{"Idempotency-Key": "k"}
    )

    assert first.status_code == 202
    assert other.status_code == 409
    assert other.content_type == PROBLEM_JSON
    assert other.get_json()["broadcast_id"] == first.get_json()["id"]
    assert stored_counts(db_session) == (1, 1)


def test_idempotency_keys_are_scoped_to_the_api_key(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    from shared.platform.api_keys import create_api_key

    _, other_key = create_api_key(db_session, "other team")
    request_body = {"message": "hi", "recipients": ["+447700900123"]}
    first = post_broadcast(client, auth, request_body, **{"Idempotency-Key": "k"})
    second = post_broadcast(client, {"Authorization": f"Bearer {other_key}"}, request_body, **{"Idempotency-Key": "k"})

    assert (first.status_code, second.status_code) == (202, 202)
    assert first.get_json()["id"] != second.get_json()["id"]


@pytest.mark.parametrize(
    ("request_body", "field"),
    [
        ({"message": "", "recipients": ["+447700900123"]}, "message"),
        ({"message": "x" * 1601, "recipients": ["+447700900123"]}, "message"),
        ({"message": 42, "recipients": ["+447700900123"]}, "message"),
        ({"recipients": ["+447700900123"]}, "message"),
        ({"message": "hi", "recipients": []}, "recipients"),
        ({"message": "hi", "recipients": "+447700900123"}, "recipients"),
        ({"message": "hi"}, "recipients"),
        ({"message": "hi", "recipients": ["+447700900123"], "on_invalid": "ignore"}, "on_invalid"),
        ({"message": "hi", "recipients": ["+447700900123"], "colour": "blue"}, "colour"),
        (["+447700900123"], "_schema"),
    ],
    ids=[
        "empty-message",
        "message-1601-characters",
        "message-not-a-string",
        "message-missing",
        "recipients-empty",
        "recipients-not-a-list",
        "recipients-missing",
        "on-invalid-unknown",
        "unknown-field",
        "body-not-an-object",
    ],
)
def test_invalid_requests_are_422_with_the_failing_field(
    client: FlaskClient, auth: dict[str, str], db_session: Session, request_body: Any, field: str
) -> None:
    response = post_broadcast(client, auth, request_body)

    assert response.status_code == 422
    assert response.content_type == PROBLEM_JSON
    problem = response.get_json()
    assert problem["status"] == 422
    assert field in problem["errors"]
    assert stored_counts(db_session) == (0, 0)


def test_a_1600_character_message_is_accepted(client: FlaskClient, auth: dict[str, str]) -> None:
    response = post_broadcast(client, auth, {"message": "x" * 1600, "recipients": ["+447700900123"]})

    assert response.status_code == 202
    message = response.get_json()["message"]
    assert (message["characters"], message["encoding"], message["segments"]) == (1600, "GSM-7", 11)


def test_malformed_json_is_400(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post(
        "/v1/broadcasts",
        data=b'{"message": "hi", "recipients": [',
        headers={**auth, "Content-Type": "application/json"},
    )

    assert response.status_code == 400
    assert response.content_type == PROBLEM_JSON
    assert "Traceback" not in response.get_data(as_text=True)


def test_a_body_that_is_not_json_is_415(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post("/v1/broadcasts", data="message=hi", headers={**auth, "Content-Type": "text/plain"})

    assert response.status_code == 415
    assert response.content_type == PROBLEM_JSON


def test_a_body_over_the_size_limit_is_413_and_stores_nothing(
    settings: Settings, engine: Any, redis_client: redis.Redis, auth: dict[str, str], db_session: Session
) -> None:
    for app in build_app(settings.replace(max_request_bytes=2_000)):
        response = post_broadcast(app.test_client(), auth, {"message": "hi", "recipients": phone_numbers(200)})

        assert response.status_code == 413
        assert response.content_type == PROBLEM_JSON
        assert stored_counts(db_session) == (0, 0)


def test_redis_unreachable_is_503_and_stores_nothing(
    settings: Settings, engine: Any, auth: dict[str, str], db_session: Session
) -> None:
    closed_port = find_free_port()
    for app in build_app(settings.replace(redis_url=f"redis://127.0.0.1:{closed_port}/0")):
        response = post_broadcast(app.test_client(), auth, {"message": "hi", "recipients": ["+447700900123"]})

        assert response.status_code == 503
        assert response.content_type == PROBLEM_JSON
        assert "Redis" in response.get_json()["detail"]
        assert stored_counts(db_session) == (0, 0)


def test_postgres_unreachable_is_503(settings: Settings, redis_client: redis.Redis) -> None:
    closed_port = find_free_port()
    unreachable = settings.replace(database_url=f"postgresql://bulksms@127.0.0.1:{closed_port}/bulksms")
    for app in build_app(unreachable):
        response = post_broadcast(
            app.test_client(),
            {"Authorization": "Bearer bsk_00000000_secret"},
            {"message": "hi", "recipients": ["+447700900123"]},
        )

        assert response.status_code == 503
        assert response.content_type == PROBLEM_JSON
        assert "PostgreSQL" in response.get_json()["detail"]
        assert redis_client.llen(SEND_QUEUE) == 0


def test_a_client_reference_is_stored_and_echoed_by_intake_and_its_replay(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    reference = "crm/campaign 2026-11-29 · é" + "x" * 228  # 256 characters
    request_body = {"message": "hi", "recipients": ["+447700900123"], "client_reference": reference}

    first = post_broadcast(client, auth, request_body, **{"Idempotency-Key": "with-reference"})
    replay = post_broadcast(client, auth, request_body, **{"Idempotency-Key": "with-reference"})
    dry_run = post_broadcast(client, auth, {**request_body, "dry_run": True})

    assert (first.status_code, replay.status_code, dry_run.status_code) == (202, 200, 200)
    assert first.get_json()["client_reference"] == reference
    assert replay.get_json()["client_reference"] == reference
    assert dry_run.get_json()["client_reference"] == reference
    db_session.rollback()
    assert db_session.scalars(select(Broadcast.client_reference)).all() == [reference]


def test_without_a_client_reference_it_is_null(client: FlaskClient, auth: dict[str, str], db_session: Session) -> None:
    response = post_broadcast(client, auth, {"message": "hi", "recipients": ["+447700900123"]})

    assert response.status_code == 202
    assert response.get_json()["client_reference"] is None


def test_the_idempotency_fingerprint_covers_the_client_reference_only_when_given(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    plain = {"message": "hi", "recipients": ["+447700900123"]}
    first = post_broadcast(client, auth, plain, **{"Idempotency-Key": "k"})
    with_reference = post_broadcast(client, auth, {**plain, "client_reference": "crm-1"}, **{"Idempotency-Key": "k"})
    null_reference = post_broadcast(client, auth, {**plain, "client_reference": None}, **{"Idempotency-Key": "k"})

    assert first.status_code == 202
    assert with_reference.status_code == 409  # another request under the same key
    assert null_reference.status_code == 200  # null is "not given": the same request as the first
    assert stored_counts(db_session) == (1, 1)


@pytest.mark.parametrize(
    ("reference", "reason"),
    [
        ("", "1 to 256 characters"),
        ("x" * 257, "1 to 256 characters"),
        ("crm\t1", "control characters"),
        ("crm\n1", "control characters"),
        ("crm\x001", "control characters"),
        ("crm\x7f1", "control characters"),
        (42, "Not a valid string"),
    ],
    ids=["empty", "257-characters", "tab", "line-break", "nul", "delete", "not-a-string"],
)
def test_a_bad_client_reference_is_422_and_stores_nothing(
    client: FlaskClient, auth: dict[str, str], db_session: Session, reference: Any, reason: str
) -> None:
    response = post_broadcast(
        client, auth, {"message": "hi", "recipients": ["+447700900123"], "client_reference": reference}
    )

    assert response.status_code == 422
    assert response.content_type == PROBLEM_JSON
    [message] = response.get_json()["errors"]["client_reference"]
    assert reason in message
    assert stored_counts(db_session) == (0, 0)
