"""The OpenAPI document and the docs page, and schemathesis against the live app: no 5xx, no answer the document
does not describe."""

from __future__ import annotations

from typing import Any

import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from openapi_schema_validator import OAS30Validator

from api.openapi import PROBLEM_STATUSES

CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
]
# Per operation; about 20 operations, so the whole run stays well under a minute.
EXAMPLES_PER_OPERATION = 12


def test_document_lists_every_route_of_the_app(app: Flask, client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    documented = {(path, method) for path, operations in document["paths"].items() for method in operations}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = rule.rule.replace("<uuid:", "{").replace("<path:", "{").replace("<", "{").replace(">", "}")
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            assert (path, method.lower()) in documented, f"{method} {rule.rule} is not in /openapi.json"


def test_document_describes_authentication_and_problem_responses(client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "bsk_<prefix>_<secret>",
        "description": "An API key.",
    }
    create = document["paths"]["/v1/broadcasts"]["post"]
    assert create["security"] == [{"bearerAuth": []}]
    assert {"200", "202", "400", "401", "409", "413", "415", "422", "503"} <= set(create["responses"])
    assert create["responses"]["422"] == {"$ref": "#/components/responses/Problem422"}
    problem = document["components"]["responses"]["Problem422"]["content"]
    assert list(problem) == ["application/problem+json"]
    assert {400, 401, 404, 405, 409, 413, 415, 422, 503} <= set(PROBLEM_STATUSES)
    request_fields = document["components"]["schemas"]["BroadcastRequest"]["properties"]
    assert {"message", "recipients", "on_invalid", "callback_url", "dry_run", "send_at"} <= set(request_fields)
    webhook = document["paths"]["/webhooks/twilio/status"]["post"]
    assert webhook["security"] == []
    assert any(parameter["name"] == "X-Twilio-Signature" for parameter in webhook["parameters"])
    assert "application/x-www-form-urlencoded" in webhook["requestBody"]["content"]


def test_document_is_valid_openapi(client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    for schema in document["components"]["schemas"].values():
        OAS30Validator.check_schema(schema)
    schemathesis.openapi.from_dict(document)  # raises on a document it cannot load


def test_docs_page_is_self_contained_html(client: FlaskClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    for expected in (
        "/v1/broadcasts/{broadcast_id}/messages",
        "Idempotency-Key",
        "application/problem+json",
        "X-Twilio-Signature",
        "Authorization: Bearer",
        "/webhooks/twilio/status",
        "415",
    ):
        assert expected in page, expected
    assert "<script" not in page and "http://" not in page and "https://cdn" not in page


def test_api_answers_conform_to_the_document(app: Flask, auth: dict[str, str]) -> None:
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            case.call_and_validate(headers=auth, checks=CHECKS)

        try:
            check()
        except Exception as error:  # collect every operation's failures, then report them together
            failures.append(f"{operation.method.upper()} {operation.path}: {error}")
    assert not failures, "\n\n".join(failures)
