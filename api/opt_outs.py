"""/v1/opt-outs: the suppression list (account-wide), as JSON pages, CSV import and export.

`POST /v1/opt-outs` takes JSON (`number` or `numbers`, optional `reason`) or `text/csv` (a `phone` column,
optional `reason`); `GET /v1/opt-outs.csv` streams the whole list; `DELETE /v1/opt-outs/{number}` takes one off.
"""

from __future__ import annotations

from collections.abc import Iterator

from flask import Blueprint, Response, jsonify, request, stream_with_context, url_for

from api.auth import require_api_key
from api.context import db_session, services
from api.control_schemas import OptOutSchema, OptOutsCreateSchema, OptOutsQuerySchema
from api.errors import ApiProblem
from shared.broadcasts.intake import InvalidCursorError, decode_cursor, encode_cursor
from shared.compliance.opt_outs import (
    SOURCE_API,
    CsvFormatError,
    add_opt_outs,
    export_opt_outs_csv,
    import_opt_outs_csv,
    list_opt_outs,
    normalise_numbers,
    remove_opt_out,
)
from shared.compliance.phone_numbers import normalise_phone_number
from shared.platform.db import session_scope

blueprint = Blueprint("opt_outs", __name__, url_prefix="/v1")

query_schema = OptOutsQuerySchema()
create_schema = OptOutsCreateSchema()
opt_out_schema = OptOutSchema()


@blueprint.get("/opt-outs")
def index() -> Response:
    require_api_key()
    query = query_schema.load(request.args)
    after = None
    if query.get("cursor"):
        try:
            after = decode_cursor(query["cursor"]).get("after")
        except InvalidCursorError as error:
            raise ApiProblem(400, str(error), problem="invalid-cursor", errors={"cursor": [str(error)]}) from None
        if not isinstance(after, str):
            raise ApiProblem(400, "not a cursor from this API", problem="invalid-cursor")
    items, more = list_opt_outs(db_session(), search=query["search"], after=after, limit=query["limit"])
    next_link = None
    if more:
        parameters = {"cursor": encode_cursor({"after": items[-1].phone_number}), "limit": query["limit"]}
        if query["search"]:
            parameters["search"] = query["search"]
        next_link = url_for("opt_outs.index", **parameters)
    return jsonify({"items": opt_out_schema.dump(items, many=True), "links": {"next": next_link}})


@blueprint.post("/opt-outs")
def create() -> tuple[Response, int]:
    require_api_key()
    session = db_session()
    if request.mimetype == "text/csv":
        content = request.get_data(cache=False).decode("utf-8-sig", "replace")
        try:
            imported = import_opt_outs_csv(session, content, default_reason=request.args.get("reason"))
        except CsvFormatError as error:
            raise ApiProblem(422, str(error), problem="validation", errors={"phone": [str(error)]}) from None
        session.commit()
        return jsonify(
            {
                "imported": imported.imported,
                "already_present": imported.already_present,
                "invalid_count": imported.invalid_count,
                "invalid": imported.invalid,
            }
        ), 200
    if not request.is_json:
        raise ApiProblem(415, "Send JSON (`application/json`) or a CSV file (`text/csv`).")
    data = create_schema.load(request.get_json(silent=True) or {})
    raw_numbers = [data["number"]] if data["number"] is not None else data["numbers"]
    numbers, invalid = normalise_numbers(raw_numbers)
    if invalid:
        raise ApiProblem(
            422,
            f"{len(invalid)} number(s) are not valid phone numbers; nothing was stored.",
            problem="invalid-numbers",
            errors={"numbers": [f"{len(invalid)} invalid phone number(s)"]},
            invalid=invalid[:100],
        )
    result = add_opt_outs(session, numbers, source=SOURCE_API, reason=data["reason"])
    session.commit()
    return jsonify({"added": result.added, "already_present": result.already_present}), (201 if result.added else 200)


@blueprint.delete("/opt-outs/<path:number>")
def delete(number: str) -> tuple[str, int]:
    require_api_key()
    normalised = normalise_phone_number(number.strip())
    if normalised is None:
        raise ApiProblem(404, "No such number on the opt-out list (not a valid phone number).")
    session = db_session()
    if not remove_opt_out(session, normalised):
        raise ApiProblem(404, f"{normalised} is not on the opt-out list.")
    session.commit()
    return "", 204


@blueprint.get("/opt-outs.csv")
def export() -> Response:
    require_api_key()
    session_factory = services().session_factory

    def rows() -> Iterator[str]:
        # Its own session: the request's is closed when the view returns, before the body is streamed.
        with session_scope(session_factory) as session:
            yield from export_opt_outs_csv(session)

    return Response(
        stream_with_context(rows()),
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="opt-outs.csv"'},
    )
