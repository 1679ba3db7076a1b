"""`POST /webhooks/twilio/inbound`: replies to our numbers. STOP-type keywords put the sender on the opt-out list,
START-type keywords take them off, HELP changes nothing; Twilio Advanced Opt-Out's `OptOutType` wins when sent.

The signature is checked exactly as for status callbacks (api.webhooks). The answer is empty TwiML: Twilio (or
Advanced Opt-Out) sends the confirmation reply itself. Served by the API (it needs PostgreSQL), not by the
standalone status-webhook service.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app

from api.context import db_session
from api.webhooks import EXTENSION_NAME, WebhookServices, signed_form
from shared.compliance.opt_outs import SOURCE_INBOUND, add_opt_outs, classify_reply, remove_opt_out
from shared.compliance.phone_numbers import mask_phone_number, normalise_phone_number

logger = logging.getLogger(__name__)

INBOUND_PATH = "/webhooks/twilio/inbound"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'

blueprint = Blueprint("inbound", __name__)


def _single(value: object) -> str | None:
    if isinstance(value, list):
        return str(value[0]) if value else None
    return None if value is None else str(value)


@blueprint.post(INBOUND_PATH)
def twilio_inbound_message() -> Response:
    services: WebhookServices = current_app.extensions[EXTENSION_NAME]
    parameters = signed_form(services)
    if isinstance(parameters, Response):
        return parameters
    sender = normalise_phone_number(_single(parameters.get("From")) or "")
    kind = classify_reply(_single(parameters.get("Body")), _single(parameters.get("OptOutType")))
    if sender is not None and kind in ("stop", "start"):
        session = db_session()
        if kind == "stop":
            add_opt_outs(
                session,
                [sender],
                source=SOURCE_INBOUND,
                reason=f"replied {(_single(parameters.get('Body')) or 'STOP').strip()[:40]}",
            )
        else:
            remove_opt_out(session, sender)
        session.commit()
        logger.info("inbound %s from %s", kind.upper(), mask_phone_number(sender))
    return Response(EMPTY_TWIML, status=200, content_type="text/xml")
