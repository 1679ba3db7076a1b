"""/v1/broadcasts: create a broadcast, follow its progress, page through its messages."""

from __future__ import annotations

import gc
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import redis.exceptions
from flask import Blueprint, Response, jsonify, request, url_for

from api.auth import key_limits, require_api_key, too_many_requests
from api.broadcast_controls import check_schedule, utc_now
from api.context import db_session, services
from api.csv_intake import csv_broadcast_request, is_csv_upload, with_line_numbers
from api.errors import ApiProblem
from api.schemas import (
    MAX_IDEMPOTENCY_KEY_LENGTH,
    BroadcastDetailSchema,
    BroadcastRequestSchema,
    BroadcastSchema,
    BroadcastsQuerySchema,
    MessageSchema,
    MessagesQuerySchema,
)
from shared.broadcasts.content import ContentLimitError, Pricing, TemplateRecipientsError, cost_report
from shared.broadcasts.deadlines import deadline_warnings
from shared.broadcasts.estimate import current_estimate
from shared.broadcasts.intake import (
    BroadcastRequest,
    IdempotencyConflictError,
    InvalidCursorError,
    InvalidRecipientsError,
    create_broadcast,
    enqueue_broadcast,
    get_broadcast,
    list_broadcasts,
    list_messages,
    number_rules_for,
)
from shared.broadcasts.options import FILTERABLE_OPTION_NAMES
from shared.broadcasts.progress import broadcast_progress
from shared.platform.key_limits import LimitExceeded
from shared.platform.models import ApiKey, Broadcast, BroadcastStatus
from shared.platform.outbound import destination_problem
from shared.platform.settings import Settings
from shared.receipts.completion import completion_reason

logger = logging.getLogger(__name__)

blueprint = Blueprint("broadcasts", __name__, url_prefix="/v1/broadcasts")

broadcast_request_schema = BroadcastRequestSchema()
broadcast_schema = BroadcastSchema()
broadcast_detail_schema = BroadcastDetailSchema()
message_schema = MessageSchema()
messages_query_schema = MessagesQuerySchema()
broadcasts_query_schema = BroadcastsQuerySchema()


def _estimate(broadcast: Broadcast, unsent: int) -> dict[str, Any]:
    """`estimated_seconds` / `estimated_finish_at`: the unsent recipients' segments at today's throughput."""
    estimate = current_estimate(broadcast, unsent, services().settings, services().redis_client, datetime.now(UTC))
    return {
        "estimated_seconds": estimate.seconds,
        "estimated_finish_at": None if estimate.finish_at is None else estimate.finish_at.isoformat(),
    }


def _links(broadcast: Broadcast) -> dict[str, str]:
    return {
        "self": url_for("broadcasts.show_broadcast", broadcast_id=broadcast.id),
        "messages": url_for("broadcasts.show_messages", broadcast_id=broadcast.id),
    }


def _json_body() -> Any:
    """The request body parsed as JSON: 415 if it is not declared JSON, 413 if too large, 400 if malformed."""
    if not request.is_json:
        raise ApiProblem(
            415, "Send JSON (`application/json`), a CSV (`text/csv`) or a CSV upload (`multipart/form-data`)."
        )
    raw = request.get_data(cache=False)  # raises 413 past MAX_CONTENT_LENGTH
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise ApiProblem(400, f"The request body is not valid JSON: {error}", problem="malformed-json") from None
    if SURROGATE_ESCAPE.search(raw) and lone_surrogate_in(body):
        raise ApiProblem(
            400,
            "The request body is not valid JSON text: a string holds a lone UTF-16 surrogate (an escape like "
            "\\ud800 without its pair), which is no character and cannot be stored or sent.",
            problem="malformed-json",
        )
    return body


# JSON can only carry a surrogate as a \\uD800-\\uDFFF escape: the (rare) bodies that hold one are walked to find
# a lone one; pairs (an emoji written as escapes) are fine.
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def lone_surrogate_in(value: Any) -> bool:
    """True when a string anywhere in `value` (keys included) is not encodable text."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not key.strip() or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise ApiProblem(
            400,
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters.",
            problem="invalid-idempotency-key",
        )
    return key


@contextmanager
def _cyclic_garbage_collection_paused() -> Iterator[None]:
    """Python's cyclic collector off for the duration of a request.

    A million-recipient body is millions of new lists, dicts and tuples, and every 700 new containers the collector
    runs, its older generations walking the whole, growing heap again: `json.loads` of a million template
    recipients took five times as long with it on. None of these objects form cycles, so reference counting frees
    them all; the collector runs again on the next allocations after the request.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _daily_allowance(api_key: ApiKey, settings: Settings) -> Callable[[int], Callable[[], None]]:
    """Reserves a broadcast's accepted recipients in the key's daily message limit (Redis, fleet-wide)."""
    limit = api_key.daily_message_limit if api_key.daily_message_limit is not None else settings.daily_message_limit
    limits = key_limits()

    def reserve(count: int) -> Callable[[], None]:
        try:
            reservation = limits.reserve_recipients(api_key.id, count, limit)
        except redis.exceptions.RedisError as error:
            # Redis answered the PING at the start of this request and went away since: the broadcast is stored
            # anyway (the sweeper enqueues it once Redis is back, as for a failed enqueue), uncounted, rather than
            # refused after its recipients were read and copied.
            logger.warning("daily message limit not counted, Redis unavailable: %s", type(error).__name__)
            return lambda: None

        def give_back() -> None:
            try:
                limits.give_back(reservation)
            except redis.exceptions.RedisError as error:  # the intake's own error is the one to report
                logger.warning("daily message limit not given back, Redis unavailable: %s", type(error).__name__)

        return give_back

    return reserve


def _check_destinations(broadcast_request: BroadcastRequest) -> None:
    """Refuse URLs whose host resolves to loopback, private, link-local or metadata addresses (blind SSRF):
    the callback_url we POST to, and media_urls Twilio fetches. ALLOW_PRIVATE_CALLBACK_URLS lifts it."""
    allow_private = services().settings.allow_private_callback_urls
    errors: dict[str, list[str]] = {}
    if broadcast_request.callback_url is not None:
        problem = destination_problem(broadcast_request.callback_url, allow_private=allow_private)
        if problem is not None:
            errors["callback_url"] = [problem]
    for position, url in enumerate(broadcast_request.media_urls or ()):
        problem = destination_problem(url, allow_private=allow_private)
        if problem is not None:
            errors.setdefault("media_urls", []).append(f"{position}: {problem}")
    if errors:
        raise ApiProblem(
            400,
            "A URL in the request leads to a host bulksms does not send to (loopback, private, link-local or "
            "cloud metadata addresses). Nothing was stored.",
            problem="url-not-allowed",
            errors=errors,
        )


@blueprint.post("")
def create() -> tuple[Response, int, dict[str, str]]:
    with _cyclic_garbage_collection_paused():
        return _create()


def _create() -> tuple[Response, int, dict[str, str]]:
    started = time.perf_counter()
    api_key = require_api_key()
    # A CSV (api.csv_intake) gives the same request; `csv_lines` maps recipients to CSV lines for reports.
    csv_lines = None
    if is_csv_upload():
        broadcast_request, csv_lines = csv_broadcast_request()
    else:
        broadcast_request = broadcast_request_schema.load(_json_body())
    check_schedule(broadcast_request)  # 422 when send_at is too soon or too far ahead
    _check_destinations(broadcast_request)  # 400 when a URL leads into our own network
    idempotency_key = _idempotency_key()
    if broadcast_request.callback_url is not None and not api_key.signing_secret:
        # The completion callback is signed with the key's signing secret; a key created before signing
        # secrets existed has none, and one made up now could never reach the client.
        raise ApiProblem(
            422,
            "This API key has no signing secret, so a completion callback could not be signed. "
            "Ask the operator for a new key (`bulksms keys create`), or leave out `callback_url`.",
            problem="validation",
            errors={"callback_url": ["The API key has no signing secret."]},
        )
    parsed = time.perf_counter()
    # Refuse before storing anything when the broker is down: a 202 must mean "stored and on its way".
    if not broadcast_request.dry_run:
        services().redis_client.ping()
    settings = services().settings
    pricing = Pricing.from_settings(settings)
    session = db_session()
    try:
        result = create_broadcast(
            session,
            api_key_id=api_key.id,
            request=broadcast_request,
            chunk_size=services().settings.send_chunk_size,
            idempotency_key=idempotency_key,
            pricing=pricing,
            smart_encoding=settings.smart_encoding,
            number_rules=number_rules_for(broadcast_request, api_key, settings),
            test=api_key.is_test,
            reserve_recipients=_daily_allowance(api_key, settings),
        )
    except LimitExceeded as exceeded:
        raise too_many_requests(exceeded) from None
    except InvalidRecipientsError as error:
        raise ApiProblem(
            422,
            f"{error.invalid_count:,} recipient(s) are not valid phone numbers"
            + (" and no valid one remains." if not error.valid_count else "; nothing was stored.")
            + " The first 100 are listed in `invalid`."
            + (" Send `on_invalid: skip` to send to the valid ones only." if error.valid_count else ""),
            problem="invalid-recipients",
            errors={"recipients": [f"{error.invalid_count} invalid phone number(s)"]},
            invalid=with_line_numbers(error.invalid_sample, csv_lines),
            invalid_count=error.invalid_count,
        ) from None
    except TemplateRecipientsError as error:
        raise ApiProblem(
            422,
            f"{error.problem_count:,} recipient(s) cannot be sent the template: a placeholder without default has "
            "no value in their `vars`, or their message is too long. The first 100 are listed in `recipients`; "
            "nothing was stored. Give the values, or a default: `{name|default}`.",
            problem="template-variables",
            errors={"recipients": [f"{error.problem_count} recipient(s) cannot be rendered"]},
            recipients=with_line_numbers(error.problems, csv_lines),
            recipients_count=error.problem_count,
        ) from None
    except ContentLimitError as error:
        raise ApiProblem(
            422,
            error.detail + " Nothing was stored.",
            problem="over-limit",
            errors={"max_cost" if "max_cost" in error.detail else "max_segments": [error.detail]},
            **error.figures,
        ) from None
    except IdempotencyConflictError as error:
        raise ApiProblem(
            409,
            "This Idempotency-Key was already used with a different request body.",
            problem="idempotency-key-reused",
            broadcast_id=str(error.broadcast_id),
        ) from None
    broadcast = result.broadcast
    # A scheduled broadcast is enqueued by beat at its send_at (shared.broadcasts.control).
    if result.created and broadcast.status != BroadcastStatus.SCHEDULED:
        stored = time.perf_counter()
        # If the broker fails now, the broadcast is stored with enqueued_at NULL and the sweeper enqueues it.
        enqueued = enqueue_broadcast(session, services().celery_app, broadcast, settings.send_window_chunks)
        logger.info(
            "broadcast %s accepted in %.2fs (parse %.2fs, validate and store %.2fs, enqueue %.2fs%s)",
            broadcast.id,
            time.perf_counter() - started,
            parsed - started,
            stored - parsed,
            time.perf_counter() - stored,
            "" if enqueued else ", FAILED: left to the sweeper",
        )
    body = broadcast_schema.dump(broadcast)
    body["invalid"] = with_line_numbers(body["invalid"] or [], csv_lines)
    body["cost"] = cost_report(broadcast, pricing)
    body.update(_estimate(broadcast, broadcast.recipients_accepted))
    body["warnings"] = deadline_warnings(
        broadcast.deadline, broadcast.segments_total or 0, body["estimated_seconds"], utc_now(), broadcast.send_at
    )
    if result.dry_run:
        body["dry_run"] = True
        return jsonify(body), 200, {}
    body["links"] = _links(broadcast)
    status = 202 if result.created else 200
    return jsonify(body), status, {"Location": body["links"]["self"]}


@blueprint.get("")
def index() -> Response:
    api_key = require_api_key()
    query = broadcasts_query_schema.load(request.args)
    filters = {name: query[name] for name in FILTERABLE_OPTION_NAMES if query.get(name) is not None}
    try:
        page = list_broadcasts(
            db_session(), api_key.id, cursor=query.get("cursor"), limit=query["limit"], filters=filters
        )
    except InvalidCursorError as error:
        raise ApiProblem(400, str(error), problem="invalid-cursor", errors={"cursor": [str(error)]}) from None
    items = []
    for broadcast in page.items:
        item = broadcast_schema.dump(broadcast)
        item["links"] = _links(broadcast)
        items.append(item)
    next_link = None
    if page.next_cursor is not None:
        next_link = url_for("broadcasts.index", cursor=page.next_cursor, limit=query["limit"], **filters)
    return jsonify({"items": items, "links": {"next": next_link}})


def _own_broadcast(broadcast_id: uuid.UUID) -> Broadcast:
    api_key = require_api_key()
    broadcast = get_broadcast(db_session(), api_key.id, broadcast_id)
    if broadcast is None:
        raise ApiProblem(404, "No broadcast with this id was created with this API key.")
    return broadcast


@blueprint.get("/<uuid:broadcast_id>")
def show_broadcast(broadcast_id: uuid.UUID) -> Response:
    broadcast = _own_broadcast(broadcast_id)
    progress = broadcast_progress(db_session(), broadcast.id)
    body = broadcast_detail_schema.dump(broadcast)
    body["messages"] = {"total": progress.total, **progress.counts}
    body["progress"] = progress.summary()
    body["error_codes"] = progress.error_code_list()
    body["completion"] = completion_reason(broadcast.status, progress.awaiting_receipt)
    body["cost"] = cost_report(broadcast, Pricing.from_settings(services().settings))
    body.update(_estimate(broadcast, progress.unsent))
    body["links"] = _links(broadcast)
    return jsonify(body)


@blueprint.get("/<uuid:broadcast_id>/messages")
def show_messages(broadcast_id: uuid.UUID) -> Response:
    broadcast = _own_broadcast(broadcast_id)
    query = messages_query_schema.load(request.args)
    try:
        page = list_messages(
            db_session(),
            broadcast.id,
            state=query.get("state"),
            cursor=query.get("cursor"),
            limit=query["limit"],
        )
    except InvalidCursorError as error:
        raise ApiProblem(400, str(error), problem="invalid-cursor", errors={"cursor": [str(error)]}) from None
    next_link = None
    if page.next_cursor is not None:
        parameters = {"cursor": page.next_cursor, "limit": query["limit"]}
        if query.get("state"):
            parameters["state"] = query["state"]
        next_link = url_for("broadcasts.show_messages", broadcast_id=broadcast.id, **parameters)
    return jsonify({"items": message_schema.dump(page.items, many=True), "links": {"next": next_link}})
