"""POST /v1/broadcasts with a CSV body or upload: columns as template variables, bad rows by line, limits."""

from __future__ import annotations

import io
from typing import Any

import redis
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.platform.models import Broadcast, Message
from shared.platform.settings import Settings
from tests.api.conftest import build_app, phone_numbers
from tests.api.test_create_broadcast import PROBLEM_JSON, stored_counts


def post_csv(client: FlaskClient, auth: dict[str, str], text: str | bytes, **options: str) -> Any:
    return client.post(
        "/v1/broadcasts",
        query_string=options,
        data=text.encode() if isinstance(text, str) else text,
        headers={**auth, "Content-Type": "text/csv"},
    )


def stored_messages(db_session: Session) -> list[tuple[str, dict[str, str] | None]]:
    db_session.rollback()
    rows = db_session.execute(select(Message.to_number, Message.variables).order_by(Message.id))
    return [(number, variables) for number, variables in rows]


def test_csv_columns_become_each_recipients_template_variables(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    text = "phone,first_name,ward\n+15550000001,Ann,North\n+15550000002,,South\n+15550000003,Bob,East\n"

    response = post_csv(client, auth, text, message="Hi {first_name|there}, vote today.")

    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["recipients"]["accepted"] == 3
    assert body["message"]["template"] is True
    # `ward` is not in the template, and an empty cell is no value: the default applies at send time.
    assert stored_messages(db_session) == [
        ("+15550000001", {"first_name": "Ann"}),
        ("+15550000002", None),
        ("+15550000003", {"first_name": "Bob"}),
    ]
    broadcast = db_session.get(Broadcast, body["id"])
    assert broadcast is not None and broadcast.body == "Hi {first_name|there}, vote today."


def test_a_plain_message_ignores_the_other_columns(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    response = post_csv(client, auth, "phone,first_name\n+15550000001,Ann\n+15550000001,Ann\n", message="Polls open")

    assert response.status_code == 202
    assert response.get_json()["recipients"]["duplicates"] == 1
    assert stored_messages(db_session) == [("+15550000001", None)]


def test_a_custom_phone_column_is_matched_ignoring_case(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    text = "Name,Mobile Number\nAnn,+44 7700 900123\nBob,0044-7700-900124\n"

    response = post_csv(client, auth, text, message="Hi {Name}", phone_column="mobile number")

    assert response.status_code == 202, response.get_json()
    assert stored_messages(db_session) == [("+447700900123", {"Name": "Ann"}), ("+447700900124", {"Name": "Bob"})]


def test_a_csv_without_the_phone_column_is_422_naming_the_columns_found(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    response = post_csv(client, auth, "name,number\nAnn,+15550000001\n", message="hi")

    assert response.status_code == 422
    assert response.content_type == PROBLEM_JSON
    body = response.get_json()
    assert body["columns"] == ["name", "number"]
    assert "'name', 'number'" in body["detail"] and "phone" in body["detail"]
    assert "phone_column" in body["errors"]
    assert stored_counts(db_session) == (0, 0)


BAD_ROWS = 'phone,first_name\n+15550000001,Ann\n\n12345,Bob\n+15550000002,"Cy\nwith a line break"\nnot a number,Di\n'


def test_bad_rows_are_reported_by_line_and_reject_stores_nothing(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    response = post_csv(client, auth, BAD_ROWS, message="Hi {first_name}")

    assert response.status_code == 422
    body = response.get_json()
    assert body["invalid_count"] == 2
    assert [(entry["line"], entry["index"], entry["value"]) for entry in body["invalid"]] == [
        (4, 1, "12345"),
        (7, 3, "not a number"),
    ]
    assert stored_counts(db_session) == (0, 0)


def test_bad_rows_are_skipped_with_on_invalid_skip(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    response = post_csv(client, auth, BAD_ROWS, message="Hi {first_name}", on_invalid="skip")

    assert response.status_code == 202
    body = response.get_json()
    assert body["recipients"]["accepted"] == 2 and body["recipients"]["invalid"] == 2
    assert [entry["line"] for entry in body["invalid"]] == [4, 7]
    assert stored_messages(db_session) == [
        ("+15550000001", {"first_name": "Ann"}),
        ("+15550000002", {"first_name": "Cy\nwith a line break"}),
    ]


def test_a_missing_template_value_is_reported_by_line(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    response = post_csv(client, auth, "phone,ward\n+15550000001,North\n+15550000002,\n", message="Your ward: {ward}")

    assert response.status_code == 422
    assert response.get_json()["recipients"] == [{"index": 1, "to": "+15550000002", "missing": ["ward"], "line": 3}]
    assert stored_counts(db_session) == (0, 0)


def test_multipart_upload_with_options_as_form_fields(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    upload = b"mobile,first_name\n+15550000001,Ann\noops,Bob\n+15550000002,Cy\n"

    response = client.post(
        "/v1/broadcasts",
        data={
            "file": (io.BytesIO(upload), "voters.csv", "text/csv"),
            "message": "Hello {first_name}",
            "phone_column": "mobile",
            "on_invalid": "skip",
        },
        headers=auth,
        content_type="multipart/form-data",
    )

    assert response.status_code == 202, response.get_json()
    assert response.get_json()["invalid"] == [{"index": 1, "value": "oops", "reason": "contains letters", "line": 3}]
    assert stored_messages(db_session) == [
        ("+15550000001", {"first_name": "Ann"}),
        ("+15550000002", {"first_name": "Cy"}),
    ]


def test_multipart_without_a_file_part_is_422(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post("/v1/broadcasts", data={"message": "hi"}, headers=auth, content_type="multipart/form-data")

    assert response.status_code == 422
    assert "file" in response.get_json()["errors"]


def test_a_byte_order_mark_and_crlf_line_endings_are_read(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    text = "\ufeffPhone,first_name\r\n+15550000001,Ann\r\n+15550000002,Bob\r\n".encode("utf-8")

    response = post_csv(client, auth, text, message="Hi {first_name}")

    assert response.status_code == 202, response.get_json()
    assert stored_messages(db_session) == [
        ("+15550000001", {"first_name": "Ann"}),
        ("+15550000002", {"first_name": "Bob"}),
    ]


def test_an_excel_csv_with_semicolons_and_phone_cells_kept_as_text_is_read(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    lines = ["\ufeffphone;first_name", "'+15550000001;Ann", '"=""+15550000002""";Bob', "=+15550000003;Cy"]
    text = ("\r\n".join(lines) + "\r\n").encode("utf-8")

    response = post_csv(client, auth, text, message="Hi {first_name}")

    assert response.status_code == 202, response.get_json()
    assert stored_messages(db_session) == [
        ("+15550000001", {"first_name": "Ann"}),
        ("+15550000002", {"first_name": "Bob"}),
        ("+15550000003", {"first_name": "Cy"}),
    ]


def test_quoted_fields_keep_their_commas_and_quotes(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    text = 'phone,station\n"+1 555 000 0001","St Mary\'s Hall, Church Road"\n+15550000002,"The ""Old"" School"\n'

    response = post_csv(client, auth, text, message="Vote at {station}")

    assert response.status_code == 202, response.get_json()
    assert stored_messages(db_session) == [
        ("+15550000001", {"station": "St Mary's Hall, Church Road"}),
        ("+15550000002", {"station": 'The "Old" School'}),
    ]


def test_options_in_headers_carry_utf8_and_are_checked_like_json(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    message = "Bonne journée {first_name|}"
    response = client.post(
        "/v1/broadcasts",
        data=b"phone\n+15550000001\n",
        headers={
            **auth,
            "Content-Type": "text/csv",
            "X-Bulksms-Message": message.encode("utf-8").decode("latin-1"),
            "X-Bulksms-Dry-Run": "true",
        },
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["dry_run"] is True
    assert response.get_json()["message"]["encoding"] == "GSM-7"  # é is in GSM-7
    assert stored_counts(db_session) == (0, 0)

    refused = post_csv(client, auth, "phone\n+15550000001\n", message="hi", validity_period="soon", colour="red")
    assert refused.status_code == 422
    assert set(refused.get_json()["errors"]) == {"colour"}
    refused = post_csv(client, auth, "phone\n+15550000001\n", message="hi", validity_period="soon")
    assert refused.status_code == 422
    assert "validity_period" in refused.get_json()["errors"]


def test_a_client_reference_is_taken_from_the_query_a_header_or_a_form_field(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    text = "phone\n+15550000001\n"
    from_query = post_csv(client, auth, text, message="hi", client_reference="crm-query")
    from_header = client.post(
        "/v1/broadcasts",
        query_string={"message": "hi"},
        data=text.encode(),
        headers={
            **auth,
            "Content-Type": "text/csv",
            "X-Bulksms-Client-Reference": "crm-é".encode().decode("latin-1"),
        },
    )
    from_form = client.post(
        "/v1/broadcasts",
        data={
            "file": (io.BytesIO(text.encode()), "voters.csv", "text/csv"),
            "message": "hi",
            "client_reference": "crm-form",
        },
        headers=auth,
        content_type="multipart/form-data",
    )

    assert [response.status_code for response in (from_query, from_header, from_form)] == [202, 202, 202]
    assert [response.get_json()["client_reference"] for response in (from_query, from_header, from_form)] == [
        "crm-query",
        "crm-é",
        "crm-form",
    ]
    db_session.rollback()
    stored = db_session.scalars(select(Broadcast.client_reference).order_by(Broadcast.created_at)).all()
    assert sorted(stored) == ["crm-form", "crm-query", "crm-é"]


def test_a_csv_upload_with_a_bad_client_reference_is_422_and_stores_nothing(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    too_long = post_csv(client, auth, "phone\n+15550000001\n", message="hi", client_reference="x" * 257)
    line_break = post_csv(client, auth, "phone\n+15550000001\n", message="hi", client_reference="crm\n1")

    for response in (too_long, line_break):
        assert response.status_code == 422
        assert response.content_type == PROBLEM_JSON
        assert "client_reference" in response.get_json()["errors"]
    assert stored_counts(db_session) == (0, 0)


def test_a_csv_over_the_size_limit_is_413_and_stores_nothing(
    settings: Settings, engine: Any, redis_client: redis.Redis, auth: dict[str, str], db_session: Session
) -> None:
    text = "phone\n" + "\n".join(phone_numbers(500)) + "\n"
    for app in build_app(settings.replace(max_request_bytes=2_000)):
        response = post_csv(app.test_client(), auth, text, message="hi")
        assert response.status_code == 413
        assert response.content_type == PROBLEM_JSON

        upload = {"file": (io.BytesIO(text.encode()), "big.csv"), "message": "hi"}
        response = app.test_client().post(
            "/v1/broadcasts", data=upload, headers=auth, content_type="multipart/form-data"
        )
        assert response.status_code == 413
    assert stored_counts(db_session) == (0, 0)


def test_a_large_upload_spooled_to_disk_is_stored_in_order(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    numbers = phone_numbers(45_000)  # about 600 KB: past werkzeug's 500 KB in-memory limit for a file part
    upload = ("phone\n" + "\n".join(numbers) + "\n").encode()

    response = client.post(
        "/v1/broadcasts",
        data={"file": (io.BytesIO(upload), "voters.csv"), "message": "hi"},
        headers=auth,
        content_type="multipart/form-data",
    )

    assert response.status_code == 202, response.get_json()
    assert [number for number, _ in stored_messages(db_session)] == numbers
