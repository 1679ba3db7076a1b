"""`DELETE /v1/recipients/{number}`: erase one person's number everywhere (shared.compliance.erasure), and with
`?delete_at_twilio=true` delete the matching messages at Twilio too.

Answers 200 with what was erased (also when nothing matched: erasure is idempotent), 409 with `Retry-After`
while a send to the number is in flight, 422 for a number that is not one.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from api.auth import require_api_key
from api.context import db_session, services
from api.errors import ApiProblem
from shared.compliance.erasure import erase_recipient
from shared.compliance.phone_numbers import normalise_phone_number
from shared.twilio.gateway import Deletion, delete_messages

blueprint = Blueprint("recipients", __name__, url_prefix="/v1")

# A claim's send resolves (recorded or reconciled) within the claim's lease; a minute covers the default.
IN_FLIGHT_RETRY_AFTER_SECONDS = 60
TRUE_VALUES = ("1", "true", "yes")
FALSE_VALUES = ("", "0", "false", "no")


@blueprint.delete("/recipients/<path:number>")
def erase(number: str) -> tuple[Response, int]:
    require_api_key()  # an `admin` key (api.auth.ENDPOINT_SCOPES)
    delete_at_twilio = request.args.get("delete_at_twilio", "false").strip().lower()
    if delete_at_twilio not in TRUE_VALUES + FALSE_VALUES:
        raise ApiProblem(
            422,
            "delete_at_twilio must be true or false.",
            problem="validation",
            errors={"delete_at_twilio": ["must be true or false"]},
        )
    if delete_at_twilio in TRUE_VALUES and not services().settings.twilio_configured:
        raise ApiProblem(
            422,
            "delete_at_twilio needs the TWILIO_* credentials on the API; nothing was erased.",
            problem="validation",
            errors={"delete_at_twilio": ["Twilio is not configured on this API"]},
        )
    normalised = normalise_phone_number(number.strip())
    if normalised is None:
        raise ApiProblem(
            422, "Not a valid phone number.", problem="validation", errors={"number": ["not a valid phone number"]}
        )
    session = db_session()
    erasure = erase_recipient(session, normalised)
    if erasure.in_flight:
        session.rollback()
        raise ApiProblem(
            409,
            f"{erasure.in_flight} message(s) to this number are being sent right now; nothing was erased. "
            "Try again in a minute.",
            problem="send-in-flight",
            headers={"Retry-After": str(IN_FLIGHT_RETRY_AFTER_SECONDS)},
        )
    session.commit()
    twilio: dict[str, Any] = {"requested": delete_at_twilio in TRUE_VALUES, "messages": len(erasure.twilio_sids)}
    if twilio["requested"]:
        outcomes = delete_messages(services().settings, erasure.twilio_sids)
        twilio["deleted"] = sum(1 for outcome in outcomes if outcome.result is Deletion.DELETED)
        twilio["not_found"] = sum(1 for outcome in outcomes if outcome.result is Deletion.NOT_FOUND)
        twilio["failed"] = [
            {"sid": outcome.sid, "reason": outcome.reason} for outcome in outcomes if outcome.result is Deletion.FAILED
        ]
    return jsonify(
        {
            "number": normalised,
            "messages_erased": erasure.messages,
            "messages_canceled": erasure.canceled,
            "status_events_redacted": erasure.status_events,
            "kept_on_opt_out_list": erasure.kept_on_opt_out_list,
            "twilio": twilio,
        }
    ), 200
