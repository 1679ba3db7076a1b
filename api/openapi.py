"""The OpenAPI 3 document of the API, generated from the marshmallow schemas and the app's routes.

`init_openapi(app)` serves it at `GET /openapi.json` and as a readable page at `GET /docs` (api.docs_page).
The document is built on first request from whatever `app.url_map` holds then: every route is listed, the
operations described in `OPERATIONS` in full, any other route from its view's docstring. Every marshmallow schema
of the `api.*schemas` modules becomes a component.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
from decimal import Decimal
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask, Response, current_app
from marshmallow import Schema

from api.auth import ENDPOINT_SCOPES
from api.csv_intake import LIST_OPTIONS, SCALAR_OPTIONS
from api.errors import PROBLEM_CONTENT_TYPE
from shared.broadcasts.options import OPTIONS_BY_NAME, View, shown_examples
from shared.platform.api_keys import SCOPES

OPENAPI_VERSION = "3.0.3"
API_TITLE = "bulksms"
API_VERSION = "1.0"
EXTENSION_NAME = "bulksms.openapi"
BEARER_SCHEME = "bearerAuth"
JSON = "application/json"
PROBLEM_STATUSES = {
    400: "Malformed request: body not JSON, bad `Idempotency-Key`, or a paging cursor not from this API.",
    401: "`Authorization: Bearer <key>` missing, or the key is unknown or revoked (`WWW-Authenticate: Bearer`).",
    403: "The API key's scope does not cover this operation (`required_scope`); for Twilio's webhooks, the "
    "`X-Twilio-Signature` header is missing or does not match the request.",
    404: "No such path, or no such resource for this API key.",
    405: "Method not allowed on this path (`Allow` lists the allowed ones).",
    408: "A Twilio webhook body did not arrive within `WEBHOOK_READ_TIMEOUT_SECONDS`.",
    409: "Conflict: `Idempotency-Key` reused with a different body, or an action the broadcast's status forbids.",
    413: "The request body is over `MAX_REQUEST_BYTES` (`WEBHOOK_MAX_BODY_BYTES` for Twilio's webhooks).",
    415: "The body was not sent with the content type this operation takes.",
    422: "Validation failed: `errors` names each field (invalid recipients, template values, over a limit, ...).",
    429: "Over the API key's requests per minute, or a broadcast over its recipients per day; `Retry-After` says when.",
    500: "Something unexpected; logged server-side, never a stack trace.",
    503: "PostgreSQL or Redis unreachable (`Retry-After: 5`); nothing was stored.",
}
# Statuses any route of the app may answer whatever it does.
COMMON_STATUSES = (500,)
V1_STATUSES = (401, 429, 500, 503)
# Schemas describing requests; every other schema describes stored rows, whose fields may be null.
INPUT_SCHEMA_MARKERS = ("Request", "Query", "Create", "Reschedule", "QuietHours")
IGNORED_ENDPOINTS = {"static"}
TAG_DESCRIPTIONS = {
    "Broadcasts": "Send one message to a list of recipients, and follow its progress.",
    "Broadcast controls": "Pause, resume, cancel or reschedule a broadcast.",
    "Opt-outs": "The account-wide suppression list.",
    "Recipients": "Data protection: erase one person's number.",
    "Webhooks": "Called by Twilio, signed with the account's auth token (`X-Twilio-Signature`).",
    "Health": "Liveness and readiness probes for load balancers and orchestrators.",
    "Documentation": "This document, as JSON and as a page.",
}

BROADCAST_ID_EXAMPLE = "6f1d0c5e-8a53-4a4e-9a53-6c7d0e0b8f11"
# A scheduled broadcast, so that the options every view echoes (shared.broadcasts.options) show their examples.
BROADCAST_EXAMPLE: dict[str, Any] = {
    "id": BROADCAST_ID_EXAMPLE,
    "status": "scheduled",
    "test": False,
    "recipients": {
        "received": 3,
        "accepted": 3,
        "duplicates": 0,
        "invalid": 0,
        "opted_out": 0,
        "deferred": 0,
        "not_valid": 0,
        "by_country": {"GB": 2, "US": 1},
    },
    "invalid": [],
    "message": {
        "characters": 44,
        "encoding": "GSM-7",
        "segments": 1,
        "segments_per_recipient": {"min": 1, "max": 1, "total": 3},
        "ucs2_characters": [],
        "smart_encoded": False,
        "template": False,
        "mms": False,
    },
    "cost": {
        "estimated": 0.0249,
        "currency": "USD",
        "price_per_segment": 0.0083,
        "price_per_segment_by_country": {},
        "price_per_segment_by_prefix": {},
    },
    "chunks": 1,
    "created_at": "2026-11-29T16:58:01.123456+00:00",
    "enqueued_at": None,
    "paused_at": None,
    "canceled_at": None,
    "queued_at_twilio_when_stopped": None,
    "held_reason": None,
    "held_until": None,
    "estimated_seconds": 0.1,
    "estimated_finish_at": "2026-11-29T16:58:01.223456+00:00",
    **shown_examples(View.BROADCAST),
    "links": {
        "self": f"/v1/broadcasts/{BROADCAST_ID_EXAMPLE}",
        "messages": f"/v1/broadcasts/{BROADCAST_ID_EXAMPLE}/messages",
    },
}
# The smallest request: a message and its recipients.
BROADCAST_REQUEST_EXAMPLE = {name: OPTIONS_BY_NAME[name].example for name in ("message", "recipients", "on_invalid")}
# A CSV upload's form fields: the file and the options (api.csv_intake).
MULTIPART_PROPERTIES: dict[str, Any] = {
    "file": {"type": "string", "format": "binary"},
    **{name: {"type": "string"} for name in SCALAR_OPTIONS},
    **{name: {"type": "array", "items": {"type": "string"}} for name in LIST_OPTIONS},
}
PROBLEM_EXAMPLE = {
    "type": "urn:bulksms:problem:validation",
    "title": "Unprocessable Content",
    "status": 422,
    "detail": "The request body failed validation; see `errors`.",
    "errors": {"message": ["Must be between 1 and 1,600 characters."]},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_content(schema: dict[str, Any], example: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"schema": schema}
    if example is not None:
        body["example"] = example
    return {JSON: body}


def _page_of(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items", "links"],
        "properties": {
            "items": {"type": "array", "items": item},
            "links": {
                "type": "object",
                "properties": {"next": {"type": "string", "nullable": True, "description": "null on the last page"}},
            },
        },
    }


def _ok(description: str, content: dict[str, Any] | None = None, headers: dict[str, Any] | None = None) -> Any:
    response: dict[str, Any] = {"description": description}
    if content is not None:
        response["content"] = content
    if headers:
        response["headers"] = headers
    return response


BROADCAST_ID_PARAMETER = {
    "name": "broadcast_id",
    "in": "path",
    "required": True,
    "description": "The broadcast's id (a UUID).",
    "schema": {"type": "string", "format": "uuid"},
}
BROADCAST_RESPONSE = _json_content(_ref("Broadcast"), BROADCAST_EXAMPLE)
LOCATION_HEADER = {"Location": {"description": "The broadcast's URL.", "schema": {"type": "string"}}}

# (endpoint, method) → the operation, with error statuses as plain integers (expanded by `_operation`).
OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("broadcasts.create", "post"): {
        "tags": ["Broadcasts"],
        "summary": "Create a broadcast",
        "description": "Validates and stores every recipient, then queues the sending. With `dry_run`, only "
        "validates and reports (200, nothing stored). With `Idempotency-Key`, a retry with the same body "
        "returns the original broadcast (200).",
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "1 to 255 characters, scoped to the API key.",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            }
        ],
        "requestBody": {
            "required": True,
            "content": {
                **_json_content(_ref("BroadcastRequest"), BROADCAST_REQUEST_EXAMPLE),
                # A CSV list, streamed: the options (`message`, `phone_column`, `on_invalid`, `dry_run`, `send_at`,
                # ...) travel in the query string or `X-Bulksms-<Name>` headers; other columns become template
                # variables; bad rows are reported by `line`.
                "text/csv": {
                    "schema": {"type": "string"},
                    "example": "phone,first_name\n+447700900123,Ann\n+447700900124,Bo\n",
                },
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": MULTIPART_PROPERTIES, "required": ["file"]}
                },
            },
        },
        "responses": {
            202: _ok("Stored and queued.", BROADCAST_RESPONSE, LOCATION_HEADER),
            200: _ok("An idempotent replay (the original broadcast), or a dry run's report.", BROADCAST_RESPONSE),
            "errors": (400, 409, 413, 415, 422),
        },
    },
    ("exports.messages_csv", "get"): {
        "tags": ["Broadcasts"],
        "summary": "Download a broadcast's messages as CSV",
        "description": "Streamed: number, state, twilio_sid, twilio_status, error_code, error_message, attempts and "
        "timestamps, one row per recipient; optionally only one `state`.",
        "parameters": [
            BROADCAST_ID_PARAMETER,
            {"name": "state", "in": "query", "required": False, "schema": {"type": "string"}},
        ],
        "responses": {
            200: _ok("The CSV file.", {"text/csv": {"schema": {"type": "string"}}}),
            "errors": (404, 422),
        },
    },
    ("broadcasts.index", "get"): {
        "tags": ["Broadcasts"],
        "summary": "List your broadcasts",
        "description": "Newest first; follow `links.next`.",
        "parameters": [{"in": "query", "schema": "BroadcastsQuerySchema"}],
        "responses": {
            200: _ok("A page of broadcasts.", _json_content(_page_of(_ref("Broadcast")))),
            "errors": (400, 422),
        },
    },
    ("broadcasts.show_broadcast", "get"): {
        "tags": ["Broadcasts"],
        "summary": "Show a broadcast and its progress",
        "parameters": [BROADCAST_ID_PARAMETER],
        "responses": {200: _ok("The broadcast.", _json_content(_ref("BroadcastDetail"))), "errors": (404,)},
    },
    ("broadcasts.show_messages", "get"): {
        "tags": ["Broadcasts"],
        "summary": "Page through a broadcast's messages",
        "description": "Recipients in the order given, optionally only one `state`; follow `links.next`.",
        "parameters": [BROADCAST_ID_PARAMETER, {"in": "query", "schema": "MessagesQuerySchema"}],
        "responses": {
            200: _ok("A page of messages.", _json_content(_page_of(_ref("Message")))),
            "errors": (400, 404, 422),
        },
    },
    **{
        (f"broadcast_controls.{action}", "post"): {
            "tags": ["Broadcast controls"],
            "summary": f"{action.capitalize()} a broadcast",
            "parameters": [BROADCAST_ID_PARAMETER],
            "responses": {200: _ok("The broadcast, in its new status.", BROADCAST_RESPONSE), "errors": (404, 409)},
        }
        for action in ("pause", "resume", "cancel")
    },
    ("broadcast_controls.reschedule", "patch"): {
        "tags": ["Broadcast controls"],
        "summary": "Move a scheduled broadcast's send time",
        "parameters": [BROADCAST_ID_PARAMETER],
        "requestBody": {
            "required": True,
            "content": _json_content(_ref("Reschedule"), {"send_at": "2026-12-01T09:00:00+00:00"}),
        },
        "responses": {
            200: _ok("The broadcast, rescheduled.", BROADCAST_RESPONSE),
            "errors": (404, 409, 413, 415, 422),
        },
    },
    ("opt_outs.index", "get"): {
        "tags": ["Opt-outs"],
        "summary": "List opted-out numbers",
        "parameters": [{"in": "query", "schema": "OptOutsQuerySchema"}],
        "responses": {200: _ok("A page of opt-outs.", _json_content(_page_of(_ref("OptOut")))), "errors": (400, 422)},
    },
    ("opt_outs.create", "post"): {
        "tags": ["Opt-outs"],
        "summary": "Add numbers to the opt-out list",
        "description": "JSON (`number` or `numbers`, optional `reason`), or a CSV file with a `phone` column "
        "(optional `reason` column; `?reason=` gives a default).",
        "requestBody": {
            "required": True,
            "content": {
                **_json_content(_ref("OptOutsCreate"), {"numbers": ["+447700900123"], "reason": "asked by phone"}),
                "text/csv": {"schema": {"type": "string"}, "example": "phone,reason\n+447700900123,complaint\n"},
            },
        },
        "responses": {
            201: _ok("At least one number was added.", _json_content(_ref("OptOutsAdded"))),
            200: _ok(
                "Nothing new was added (JSON), or the CSV import's report.",
                _json_content({"anyOf": [_ref("OptOutsAdded"), _ref("OptOutsImported")]}),
            ),
            "errors": (413, 415, 422),
        },
    },
    ("opt_outs.delete", "delete"): {
        "tags": ["Opt-outs"],
        "summary": "Take a number off the opt-out list",
        "parameters": [
            {"name": "number", "in": "path", "required": True, "schema": {"type": "string"}, "example": "+447700900123"}
        ],
        "responses": {204: _ok("Removed."), "errors": (404,)},
    },
    ("recipients.erase", "delete"): {
        "tags": ["Recipients"],
        "summary": "Erase one person's number everywhere (GDPR erasure)",
        "description": (
            "Removes the number (and template values) from every message sent or due to it, in every broadcast, "
            "and from the raw status callbacks of those messages, so from every export too; unsent messages to it "
            "are canceled. Counts, outcomes and SIDs stay. The opt-out list keeps the number if it is on it, so the "
            "suppression survives. With `delete_at_twilio=true` each message is also deleted at Twilio "
            "(`DELETE Messages/{Sid}.json`), which otherwise keeps its body and `To`. Idempotent. 409 while a send "
            "to the number is in flight (`Retry-After`)."
        ),
        "parameters": [
            {
                "name": "number",
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
                "example": "+447700900123",
            },
            {
                "name": "delete_at_twilio",
                "in": "query",
                "required": False,
                "schema": {"type": "boolean", "default": False},
                "description": "Also delete the messages at Twilio.",
            },
        ],
        "responses": {200: _ok("What was erased.", _json_content(_ref("Erasure"))), "errors": (409, 422)},
    },
    ("opt_outs.export", "get"): {
        "tags": ["Opt-outs"],
        "summary": "Export the opt-out list as CSV",
        "responses": {200: _ok("The whole list.", {"text/csv": {"schema": {"type": "string"}}})},
    },
    ("health.healthz", "get"): {
        "tags": ["Health"],
        "summary": "Liveness",
        "description": "200 while the process runs; no I/O.",
        "responses": {200: _ok("Alive.", _json_content(_ref("Liveness"), {"status": "ok"}))},
    },
    ("health.readyz", "get"): {
        "tags": ["Health"],
        "summary": "Readiness: PostgreSQL, migrations at head, Redis",
        "responses": {
            200: _ok(
                "Ready.",
                _json_content(
                    _ref("Readiness"),
                    {"status": "ready", "checks": {"postgres": "ok", "migrations": "ok", "redis": "ok"}},
                ),
            ),
            503: _ok("Not ready; `checks` names what failed.", {PROBLEM_CONTENT_TYPE: {"schema": _ref("Problem")}}),
        },
    },
    ("webhooks.twilio_status_callback", "post"): {
        "tags": ["Webhooks"],
        "summary": "Twilio status callback",
        "description": "Twilio posts each message status change here (the `StatusCallback` the workers give). "
        "The signature is checked, the callback queued in Redis, and 204 returned; any other answer makes "
        "Twilio retry.",
        "parameters": [
            {
                "name": "X-Twilio-Signature",
                "in": "header",
                "required": True,
                "description": "Base64 HMAC-SHA1 of the URL and sorted form parameters, keyed with TWILIO_AUTH_TOKEN "
                "(or TWILIO_AUTH_TOKEN_PREVIOUS during a rotation).",
                "schema": {"type": "string"},
            },
            {"name": "message_id", "in": "query", "required": False, "schema": {"type": "string"}},
            {"name": "attempt", "in": "query", "required": False, "schema": {"type": "string"}},
        ],
        "requestBody": {
            "required": True,
            "content": {"application/x-www-form-urlencoded": {"schema": _ref("TwilioStatusCallback")}},
        },
        "security": [],
        "responses": {204: _ok("Queued."), "errors": (400, 403, 408, 413, 503)},
    },
    ("webhooks.twilio_inbound_message", "post"): {
        "tags": ["Webhooks"],
        "summary": "Twilio inbound message (STOP / START / HELP replies)",
        "description": "A STOP-type reply puts the sender on the opt-out list, a START-type reply takes them off "
        "(queued in Redis, applied by the status consumer within about a second). Answers empty TwiML.",
        "parameters": [
            {
                "name": "X-Twilio-Signature",
                "in": "header",
                "required": True,
                "description": "As for status callbacks.",
                "schema": {"type": "string"},
            }
        ],
        "requestBody": {
            "required": True,
            "content": {"application/x-www-form-urlencoded": {"schema": _ref("TwilioInboundMessage")}},
        },
        "security": [],
        "responses": {
            200: _ok(
                "Empty TwiML.",
                {"text/xml": {"schema": {"type": "string"}, "example": "<Response></Response>"}},
            ),
            "errors": (400, 403, 408, 413, 503),
        },
    },
    ("openapi.document", "get"): {
        "tags": ["Documentation"],
        "summary": "This OpenAPI document",
        "security": [],
        "responses": {200: _ok("OpenAPI 3.0 JSON.", _json_content({"type": "object"}))},
    },
    ("openapi.docs", "get"): {
        "tags": ["Documentation"],
        "summary": "The API documentation as a page",
        "security": [],
        "responses": {200: _ok("HTML.", {"text/html": {"schema": {"type": "string"}}})},
    },
}

EXTRA_SCHEMAS: dict[str, dict[str, Any]] = {
    "Erasure": {
        "type": "object",
        "required": ["number", "messages_erased", "messages_canceled", "status_events_redacted", "twilio"],
        "properties": {
            "number": {"type": "string", "example": "+447700900123"},
            "messages_erased": {"type": "integer", "description": "Messages whose number was removed."},
            "messages_canceled": {"type": "integer", "description": "Of those, unsent ones now canceled."},
            "status_events_redacted": {"type": "integer", "description": "Raw callbacks stripped of the number."},
            "kept_on_opt_out_list": {"type": "boolean", "description": "The suppression stays (by design)."},
            "twilio": {
                "type": "object",
                "description": "`requested`, `messages` (SIDs held); with `delete_at_twilio`: `deleted`, "
                "`not_found`, `failed` (each with `sid` and `reason`).",
                "additionalProperties": True,
            },
        },
    },
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details; some problems add fields (`invalid`, `broadcast_id`, `checks`, ...).",
        "required": ["type", "title", "status"],
        "properties": {
            "type": {"type": "string", "example": "urn:bulksms:problem:validation"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "errors": {"type": "object", "description": "Messages per field.", "additionalProperties": True},
        },
        "additionalProperties": True,
        "example": PROBLEM_EXAMPLE,
    },
    "Liveness": {"type": "object", "properties": {"status": {"type": "string", "enum": ["ok"]}}},
    "Readiness": {
        "type": "object",
        "properties": {
            "status": {"type": "string"},
            "checks": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
    "OptOutsAdded": {
        "type": "object",
        "required": ["added", "already_present"],
        "properties": {"added": {"type": "integer"}, "already_present": {"type": "integer"}},
    },
    "OptOutsImported": {
        "type": "object",
        "required": ["imported", "already_present", "invalid_count", "invalid"],
        "properties": {
            "imported": {"type": "integer"},
            "already_present": {"type": "integer"},
            "invalid_count": {"type": "integer"},
            "invalid": {"type": "array", "items": {"type": "object"}},
        },
    },
    "TwilioStatusCallback": {
        "type": "object",
        "required": ["MessageSid", "MessageStatus"],
        "properties": {
            "MessageSid": {"type": "string", "example": "SM0123456789abcdef0123456789abcdef"},
            "MessageStatus": {
                "type": "string",
                "enum": ["queued", "sending", "sent", "delivered", "undelivered", "failed", "read"],
            },
            "ErrorCode": {"type": "string", "description": "Carrier or Twilio error code, when failed."},
            "AccountSid": {"type": "string"},
            "To": {"type": "string"},
            "From": {"type": "string"},
        },
        "additionalProperties": {"type": "string"},
    },
    "TwilioInboundMessage": {
        "type": "object",
        "properties": {
            "From": {"type": "string", "example": "+447700900123"},
            "To": {"type": "string"},
            "Body": {"type": "string", "example": "STOP"},
            "OptOutType": {"type": "string", "enum": ["STOP", "START", "HELP"]},
            "MessageSid": {"type": "string"},
        },
        "additionalProperties": {"type": "string"},
    },
}

RECIPIENTS_SCHEMA = {
    "type": "array",
    "minItems": 1,
    "maxItems": 1_000_000,
    "description": "Phone numbers (normalised to E.164), or `{to, vars}` objects for templates; a list may mix both.",
    "items": {
        "oneOf": [
            {"type": "string", "example": "+447700900123"},
            {
                "type": "object",
                "required": ["to"],
                "properties": {
                    "to": {"type": "string"},
                    "vars": {
                        "type": "object",
                        "additionalProperties": {"oneOf": [{"type": "string"}, {"type": "number"}]},
                    },
                },
            },
        ]
    },
}
# Fields the views add to a dumped broadcast.
BROADCAST_VIEW_PROPERTIES: dict[str, Any] = {
    "cost": {"type": "object", "description": "Estimated cost with today's prices.", "additionalProperties": True},
    "links": {
        "type": "object",
        "properties": {"self": {"type": "string"}, "messages": {"type": "string"}},
        "description": "Absent on a dry run.",
    },
    "dry_run": {"type": "boolean", "description": "Present (true) on a dry run's report."},
    "warnings": {
        "type": "array",
        "items": {"type": "string"},
        "description": "Only in the answer to `POST /v1/broadcasts`: problems that did not stop the broadcast, such "
        "as an estimated sending time that passes its `deadline`; empty when there are none.",
    },
}
BROADCAST_DETAIL_VIEW_PROPERTIES: dict[str, Any] = {
    "messages": {
        "type": "object",
        "description": "Messages per state (every state, zeros included) and `total`.",
        "additionalProperties": {"type": "integer"},
    },
    "progress": {"type": "object", "additionalProperties": True},
    "error_codes": {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"error_code": {"type": "integer", "nullable": True}, "count": {"type": "integer"}},
        },
    },
    "completion": {"type": "string", "nullable": True, "enum": ["all_final", "no_receipt_timeout", None]},
}

DESCRIPTION = """Send one SMS or MMS to very large lists through Twilio.

**Authentication.** Every `/v1` operation needs an API key issued by the operator (`bulksms keys create NAME`):
`Authorization: Bearer bsk_<prefix>_<secret>`. A key sees only the broadcasts created with it. Webhooks are
authenticated by Twilio's `X-Twilio-Signature` instead.

**Errors.** Every error is `application/problem+json` (RFC 9457): `type` (`about:blank` or
`urn:bulksms:problem:<name>`), `title`, `status`, `detail`, and `errors` per field when validation failed.

**Request ids.** Send `X-Request-Id` (1 to 128 letters, digits, `._:-`) to trace a request in the server logs;
otherwise one is generated. Every answer carries it back in `X-Request-Id`.
"""


def _schema_name(schema: Any) -> str:
    schema_class = schema if isinstance(schema, type) else type(schema)
    name = schema_class.__name__
    return name[: -len("Schema")] if name.endswith("Schema") and len(name) > len("Schema") else name


def _api_schema_classes() -> list[type[Schema]]:
    """Every marshmallow schema defined in a loaded `api.*schemas` module, in definition order."""
    found: list[type[Schema]] = []
    for module_name, module in sorted(sys.modules.items()):
        if not (module_name.startswith("api.") and module_name.endswith("schemas")) or module is None:
            continue
        for _, member in inspect.getmembers(module, inspect.isclass):
            if issubclass(member, Schema) and member.__module__ == module_name and member not in found:
                found.append(member)
    return found


def _is_input_schema(name: str) -> bool:
    return any(marker in name for marker in INPUT_SCHEMA_MARKERS)


def _make_nullable(schema: dict[str, Any]) -> None:
    """Stored rows dump NULL columns as null: every property of an output schema may be null."""
    for property_schema in schema.get("properties", {}).values():
        if "$ref" in property_schema:
            continue
        property_schema["nullable"] = True


def _plain(value: Any) -> Any:
    """The document as plain JSON values (marshmallow validators may hold Decimals)."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _openapi_path(rule: str) -> tuple[str, list[str]]:
    names: list[str] = []

    def replace(match: re.Match[str]) -> str:
        names.append(match.group(2))
        return "{" + match.group(2) + "}"

    return re.sub(r"<(?:([a-zA-Z_]+)(?:\([^)]*\))?:)?([a-zA-Z_][a-zA-Z0-9_]*)>", replace, rule), names


def _error_responses(statuses: Any) -> dict[str, Any]:
    return {str(status): {"$ref": f"#/components/responses/Problem{status}"} for status in statuses}


def _operation(
    path: str, endpoint: str, described: dict[str, Any] | None, view: Any, path_parameters: list[str]
) -> dict[str, Any]:
    if described is None:
        docstring = inspect.getdoc(view) or ""
        summary, _, rest = docstring.partition("\n")
        described = {
            "tags": [endpoint.split(".")[0].replace("_", " ").capitalize() if "." in endpoint else "Other"],
            "summary": summary or view.__name__.replace("_", " "),
            "description": rest.strip() or "Not described in detail yet.",
            "parameters": [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in path_parameters
            ],
            "responses": {"default": {"description": "See the description."}},
        }
    operation = json.loads(json.dumps({key: value for key, value in described.items() if key != "responses"}))
    responses: dict[str, Any] = {}
    errors: list[int] = list(described["responses"].get("errors", ()))
    for status, response in described["responses"].items():
        if status != "errors":
            responses[str(status)] = response
    if path.startswith("/v1"):
        operation.setdefault("security", [{BEARER_SCHEME: []}])
        errors += list(V1_STATUSES)
        scope = ENDPOINT_SCOPES.get(endpoint)
        if scope in SCOPES:
            operation["description"] = (
                f"{operation.get('description', '')}\n\nNeeds a key with the `{scope}` scope.".strip()
            )
            if scope != SCOPES[0]:
                errors.append(403)
    else:
        operation.setdefault("security", [])
    errors += list(COMMON_STATUSES)
    for status in sorted(set(errors)):
        responses.setdefault(str(status), {"$ref": f"#/components/responses/Problem{status}"})
    operation["responses"] = responses
    return operation


def build_openapi_document(app: Flask) -> dict[str, Any]:
    """The OpenAPI 3.0 document of every route `app` serves now."""
    spec = APISpec(
        title=API_TITLE,
        version=API_VERSION,
        openapi_version=OPENAPI_VERSION,
        plugins=[MarshmallowPlugin(schema_name_resolver=_schema_name)],
        info={"description": DESCRIPTION},
        tags=[{"name": name, "description": text} for name, text in TAG_DESCRIPTIONS.items()],
    )
    spec.components.security_scheme(
        BEARER_SCHEME,
        {"type": "http", "scheme": "bearer", "bearerFormat": "bsk_<prefix>_<secret>", "description": "An API key."},
    )
    for schema_class in _api_schema_classes():
        name = _schema_name(schema_class)
        if name not in spec.components.schemas:
            spec.components.schema(name, schema=schema_class)
    for name, schema in EXTRA_SCHEMAS.items():
        spec.components.schema(name, schema)
    for status, description in PROBLEM_STATUSES.items():
        spec.components.response(
            f"Problem{status}",
            {"description": description, "content": {PROBLEM_CONTENT_TYPE: {"schema": _ref("Problem")}}},
        )
    rules = sorted(
        (rule for rule in app.url_map.iter_rules() if rule.endpoint not in IGNORED_ENDPOINTS),
        key=lambda rule: rule.rule,
    )
    for rule in rules:
        path, path_parameters = _openapi_path(rule.rule)
        view = app.view_functions[rule.endpoint]
        operations = {}
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            described = OPERATIONS.get((rule.endpoint, method.lower()))
            operations[method.lower()] = _operation(path, rule.endpoint, described, view, path_parameters)
        spec.path(path=path, operations=operations)
    document: dict[str, Any] = _plain(spec.to_dict())
    _adjust_components(document["components"]["schemas"])
    return document


def _adjust_components(schemas: dict[str, Any]) -> None:
    """What the marshmallow schemas cannot say by themselves (custom fields, fields the views add)."""
    for name, schema in schemas.items():
        if name not in EXTRA_SCHEMAS and not _is_input_schema(name):
            _make_nullable(schema)
    if "BroadcastRequest" in schemas:
        schemas["BroadcastRequest"]["properties"]["recipients"] = RECIPIENTS_SCHEMA
    for name, extra in (("Broadcast", BROADCAST_VIEW_PROPERTIES), ("BroadcastDetail", BROADCAST_VIEW_PROPERTIES)):
        if name in schemas:
            schemas[name].setdefault("properties", {}).update(json.loads(json.dumps(extra)))
    if "BroadcastDetail" in schemas:
        schemas["BroadcastDetail"]["properties"].update(json.loads(json.dumps(BROADCAST_DETAIL_VIEW_PROPERTIES)))


def openapi_document() -> dict[str, Any]:
    """The document of the current app, built once per process (routes do not change once serving)."""
    cache: dict[str, Any] = current_app.extensions[EXTENSION_NAME]
    if "document" not in cache:
        cache["document"] = build_openapi_document(current_app)
    document: dict[str, Any] = cache["document"]
    return document


def _document_view() -> Response:
    return Response(json.dumps(openapi_document()), content_type=JSON)


def _docs_view() -> Response:
    from api.docs_page import render_docs_page

    return Response(render_docs_page(openapi_document()), content_type="text/html; charset=utf-8")


def init_openapi(app: Flask) -> None:
    """Serve the document at `GET /openapi.json` and the page at `GET /docs`."""
    app.extensions[EXTENSION_NAME] = {}
    app.add_url_rule("/openapi.json", endpoint="openapi.document", view_func=_document_view, methods=["GET"])
    app.add_url_rule("/docs", endpoint="openapi.docs", view_func=_docs_view, methods=["GET"])
