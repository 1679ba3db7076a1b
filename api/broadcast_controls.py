"""Pause, resume, cancel and reschedule a broadcast: `POST /v1/broadcasts/{id}/pause|resume|cancel`, `PATCH`.

An action the broadcast's status does not allow is a 409 problem (`invalid-transition`); docs/api.md has the
state diagram. The work is in `shared.broadcasts.control`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from flask import Blueprint, Response, jsonify, request, url_for

from api.auth import require_api_key
from api.context import db_session, services
from api.control_schemas import RescheduleSchema
from api.errors import ApiProblem
from api.schemas import BroadcastSchema
from shared.broadcasts.control import (
    InvalidTransitionError,
    SendAtError,
    cancel_broadcast,
    check_send_at,
    pause_broadcast,
    reschedule_broadcast,
    resume_broadcast,
)
from shared.broadcasts.deadlines import DeadlineError, check_deadline
from shared.broadcasts.intake import BroadcastRequest, get_broadcast
from shared.platform.models import Broadcast

blueprint = Blueprint("broadcast_controls", __name__, url_prefix="/v1/broadcasts")

broadcast_schema = BroadcastSchema()
reschedule_schema = RescheduleSchema()


def utc_now() -> datetime:
    return datetime.now(UTC)


def check_schedule(broadcast_request: BroadcastRequest, now: datetime | None = None) -> None:
    """422 when a new broadcast's send_at is too soon or more than 35 days ahead, or its deadline is past, more
    than 72 hours ahead or not after send_at."""
    now = now or utc_now()
    if broadcast_request.send_at is not None:
        try:
            check_send_at(broadcast_request.send_at, now, services().settings.schedule_min_lead_seconds)
        except SendAtError as error:
            raise ApiProblem(422, f"send_at: {error}", problem="validation", errors={"send_at": [str(error)]}) from None
    deadline = broadcast_request.option_value("deadline")
    if deadline is not None:
        try:
            check_deadline(deadline, now, broadcast_request.send_at)
        except DeadlineError as error:
            raise ApiProblem(
                422, f"deadline: {error}", problem="validation", errors={"deadline": [str(error)]}
            ) from None


def _own_broadcast_id(broadcast_id: uuid.UUID) -> uuid.UUID:
    api_key = require_api_key()
    broadcast = get_broadcast(db_session(), api_key.id, broadcast_id)
    if broadcast is None:
        raise ApiProblem(404, "No broadcast with this id was created with this API key.")
    return broadcast.id


def _answer(broadcast: Broadcast) -> Response:
    body = broadcast_schema.dump(broadcast)
    body["links"] = {
        "self": url_for("broadcasts.show_broadcast", broadcast_id=broadcast.id),
        "messages": url_for("broadcasts.show_messages", broadcast_id=broadcast.id),
    }
    return jsonify(body)


def _conflict(error: InvalidTransitionError) -> ApiProblem:
    return ApiProblem(409, str(error), problem="invalid-transition", status_now=error.status, action=error.action)


@blueprint.post("/<uuid:broadcast_id>/pause")
def pause(broadcast_id: uuid.UUID) -> Response:
    own_id = _own_broadcast_id(broadcast_id)
    try:
        broadcast = pause_broadcast(db_session(), services().redis_client, own_id)
    except InvalidTransitionError as error:
        raise _conflict(error) from None
    return _answer(broadcast)


@blueprint.post("/<uuid:broadcast_id>/resume")
def resume(broadcast_id: uuid.UUID) -> Response:
    own_id = _own_broadcast_id(broadcast_id)
    try:
        broadcast = resume_broadcast(
            db_session(),
            services().redis_client,
            services().celery_app,
            own_id,
            services().settings.send_window_chunks,
        )
    except InvalidTransitionError as error:
        raise _conflict(error) from None
    return _answer(broadcast)


@blueprint.post("/<uuid:broadcast_id>/cancel")
def cancel(broadcast_id: uuid.UUID) -> Response:
    own_id = _own_broadcast_id(broadcast_id)
    try:
        broadcast = cancel_broadcast(db_session(), services().redis_client, own_id)
    except InvalidTransitionError as error:
        raise _conflict(error) from None
    return _answer(broadcast)


@blueprint.patch("/<uuid:broadcast_id>")
def reschedule(broadcast_id: uuid.UUID) -> Response:
    own_id = _own_broadcast_id(broadcast_id)
    if not request.is_json:
        raise ApiProblem(415, "Send the request body as JSON with `Content-Type: application/json`.")
    changes = reschedule_schema.load(request.get_json(silent=True) or {})
    try:
        broadcast = reschedule_broadcast(
            db_session(), own_id, changes["send_at"], utc_now(), services().settings.schedule_min_lead_seconds
        )
    except SendAtError as error:
        raise ApiProblem(422, f"send_at: {error}", problem="validation", errors={"send_at": [str(error)]}) from None
    except InvalidTransitionError as error:
        raise _conflict(error) from None
    return _answer(broadcast)
