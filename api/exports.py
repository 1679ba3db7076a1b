"""GET /v1/broadcasts/{id}/messages.csv: every message of a broadcast as a streamed CSV download."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from flask import Blueprint, Response, request
from marshmallow import EXCLUDE, Schema, fields, validate

from api.auth import require_api_key
from api.context import db_session, services
from api.errors import ApiProblem
from shared.broadcasts.intake import get_broadcast
from shared.messages.export import export_messages_csv
from shared.platform.db import session_scope
from shared.platform.models import MessageState

blueprint = Blueprint("exports", __name__, url_prefix="/v1/broadcasts")


class MessagesExportQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    state = fields.String(load_default=None, validate=validate.OneOf([state.value for state in MessageState]))


export_query_schema = MessagesExportQuerySchema()


@blueprint.get("/<uuid:broadcast_id>/messages.csv")
def messages_csv(broadcast_id: uuid.UUID) -> Response:
    """Every message of the broadcast as CSV (optionally one `state`), streamed in pages by id."""
    api_key = require_api_key()
    query = export_query_schema.load(request.args)
    if get_broadcast(db_session(), api_key.id, broadcast_id) is None:
        raise ApiProblem(404, "No broadcast with this id was created with this API key.")
    session_factory = services().session_factory
    state = query["state"]

    def rows() -> Iterator[str]:
        # Its own session: the request's is closed when the view returns, before the body is streamed.
        with session_scope(session_factory) as session:
            yield from export_messages_csv(session, broadcast_id, state=state)

    return Response(
        rows(),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="broadcast-{broadcast_id}.csv"'},
    )
