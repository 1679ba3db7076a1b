"""STOP/START replies (`POST /webhooks/twilio/inbound`), signed like Twilio: served by the API and by the webhook
service, queued in the Redis stream, applied to the opt-out list by the status consumer."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from api.webhook_app import create_webhook_app
from bulksms_tools.local_services import find_free_port
from shared.compliance.opt_outs import add_opt_outs
from shared.platform.db import create_session_factory
from shared.platform.settings import Settings
from shared.receipts.events import drain_status_stream
from shared.receipts.status_queue import STREAM_KEY
from tests.api.conftest import build_app
from tests.status_callbacks import twilio_signature

TOKEN = "test-auth-token-0123456789abcdef"
PUBLIC_URL = "https://sms.example.com"
INBOUND_PATH = "/webhooks/twilio/inbound"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
SENDER = "+447700900123"


@pytest.fixture
def settings(api_settings: Settings) -> Settings:
    return api_settings.replace(twilio_auth_token=TOKEN, public_base_url=PUBLIC_URL)


@pytest.fixture(params=["api", "webhook service"])
def app(request: pytest.FixtureRequest, settings: Settings, engine: Any, redis_client: Any) -> Iterator[Flask]:
    """Both processes Twilio may be pointed at serve the same route."""
    if request.param == "api":
        yield from build_app(settings)
    else:
        yield create_webhook_app(settings.replace(database_url=None))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def reply_parameters(body: str, sender: str = SENDER, **extra: str) -> dict[str, str]:
    return {
        "MessageSid": "SM" + secrets.token_hex(16),  # every inbound SMS has its own SID
        "AccountSid": "AC" + "a1" * 16,
        "From": sender,
        "To": "+15005550006",
        "Body": body,
        "SmsStatus": "received",
        **extra,
    }


def post_reply(client: FlaskClient, parameters: dict[str, str], *, token: str = TOKEN) -> Any:
    signature = twilio_signature(token, PUBLIC_URL + INBOUND_PATH, parameters)
    return client.post(
        INBOUND_PATH,
        data=urlencode(parameters),
        content_type="application/x-www-form-urlencoded",
        headers={"X-Twilio-Signature": signature},
        base_url="http://10.0.0.5:8001",  # what the app sees behind the proxy; Twilio signed PUBLIC_BASE_URL
    )


def reply(client: FlaskClient, body: str, **extra: str) -> Any:
    response = post_reply(client, reply_parameters(body, **extra))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/xml")
    assert response.get_data(as_text=True) == EMPTY_TWIML
    return response


def apply_queued(engine: Engine, redis_client: redis.Redis, settings: Settings) -> None:
    """What the status worker does a second later: drain the stream into PostgreSQL."""
    drain_status_stream(create_session_factory(engine), redis_client, settings)


def opted_out(db_session: Session) -> dict[str, str]:
    db_session.expire_all()
    rows = db_session.execute(text("SELECT phone_number, source FROM opted_out_numbers")).all()
    return {row.phone_number: row.source for row in rows}


@pytest.mark.parametrize("body", ["STOP", "  stop ", "Stop.", "unsubscribe!", "QUIT", "optout", "Revoke", "END"])
def test_a_stop_reply_opts_the_sender_out(
    client: FlaskClient, engine: Engine, redis_client: redis.Redis, settings: Settings, db_session: Session, body: str
) -> None:
    reply(client, body)
    assert opted_out(db_session) == {}  # queued, not yet applied: the webhook never touches PostgreSQL
    apply_queued(engine, redis_client, settings)
    assert opted_out(db_session) == {SENDER: "inbound_stop"}


def test_start_opts_back_in_and_help_or_chatter_change_nothing(
    client: FlaskClient, engine: Engine, redis_client: redis.Redis, settings: Settings, db_session: Session
) -> None:
    reply(client, "STOP")
    reply(client, "HELP")
    reply(client, "Stop sending me these please")
    apply_queued(engine, redis_client, settings)
    assert SENDER in opted_out(db_session)
    reply(client, "start")
    apply_queued(engine, redis_client, settings)
    assert opted_out(db_session) == {}
    reply(client, "Hello")
    reply(client, "unstop")  # not on the list: still fine
    apply_queued(engine, redis_client, settings)
    assert opted_out(db_session) == {}


def test_help_and_chatter_are_not_queued(client: FlaskClient, redis_client: redis.Redis) -> None:
    for body in ("HELP", "Who is this?", ""):
        reply(client, body)
    assert redis_client.exists(STREAM_KEY) == 0


def test_stop_then_start_in_one_batch_apply_in_the_order_they_arrived(
    client: FlaskClient, engine: Engine, redis_client: redis.Redis, settings: Settings, db_session: Session
) -> None:
    reply(client, "STOP")
    reply(client, "START")
    reply(client, "STOP", sender="+447700900999")
    apply_queued(engine, redis_client, settings)
    assert opted_out(db_session) == {"+447700900999": "inbound_stop"}


def test_advanced_opt_out_type_wins_over_the_body(
    client: FlaskClient, engine: Engine, redis_client: redis.Redis, settings: Settings, db_session: Session
) -> None:
    reply(client, "ARRET", OptOutType="STOP")  # a custom keyword configured in Twilio's console
    apply_queued(engine, redis_client, settings)
    assert SENDER in opted_out(db_session)
    reply(client, "STOP", OptOutType="HELP")  # Twilio says HELP: nothing changes
    apply_queued(engine, redis_client, settings)
    assert SENDER in opted_out(db_session)
    reply(client, "volver", OptOutType="START")
    apply_queued(engine, redis_client, settings)
    assert opted_out(db_session) == {}


def test_a_replayed_start_is_applied_once(
    client: FlaskClient, engine: Engine, redis_client: redis.Redis, settings: Settings, db_session: Session
) -> None:
    """Twilio retrying a reply, or someone replaying a captured signed one, changes the list only once: the
    dedupe key is the reply's MessageSid. Here an old START replayed after a newer STOP must not lift it."""
    start = reply_parameters("START")
    reply(client, "STOP")
    apply_queued(engine, redis_client, settings)
    assert post_reply(client, start).status_code == 200
    apply_queued(engine, redis_client, settings)
    assert opted_out(db_session) == {}
    reply(client, "STOP")
    apply_queued(engine, redis_client, settings)
    assert post_reply(client, start).status_code == 200  # the same signed request, replayed
    apply_queued(engine, redis_client, settings)
    assert opted_out(db_session) == {SENDER: "inbound_stop"}
    with engine.connect() as connection:
        kept = connection.execute(
            text("SELECT count(*) FROM status_events WHERE message_sid = :sid"), {"sid": start["MessageSid"]}
        ).scalar_one()
    assert kept == 1


def test_a_forged_or_unsigned_reply_is_refused_and_queues_nothing(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    assert post_reply(client, reply_parameters("STOP"), token="wrong-token").status_code == 403
    response = client.post(INBOUND_PATH, data={"From": SENDER, "Body": "STOP"})
    assert response.status_code == 403
    assert response.content_type == "application/problem+json"
    signed_elsewhere = reply_parameters("STOP")
    signature = twilio_signature(TOKEN, "http://10.0.0.5:8001" + INBOUND_PATH, signed_elsewhere)
    forwarded = client.post(
        INBOUND_PATH,
        data=urlencode(signed_elsewhere),
        content_type="application/x-www-form-urlencoded",
        headers={"X-Twilio-Signature": signature},
        base_url="http://10.0.0.5:8001",
    )
    assert forwarded.status_code == 403  # signed for the internal URL, not the one Twilio calls
    assert redis_client.exists(STREAM_KEY) == 0


def test_a_reply_without_a_message_sid_is_refused(client: FlaskClient, redis_client: redis.Redis) -> None:
    parameters = reply_parameters("STOP")
    del parameters["MessageSid"]
    response = post_reply(client, parameters)
    assert response.status_code == 400
    assert "MessageSid" in response.get_json()["errors"]
    assert redis_client.exists(STREAM_KEY) == 0


def test_redis_down_answers_503_so_twilio_retries(settings: Settings) -> None:
    down = settings.replace(redis_url=f"redis://127.0.0.1:{find_free_port()}/0", database_url=None)
    client = create_webhook_app(down).test_client()
    response = post_reply(client, reply_parameters("STOP"))
    assert response.status_code == 503
    assert response.content_type == "application/problem+json"


@pytest.mark.parametrize("source", ["api", "csv_import", "send_21610", "callback_21610"])
def test_start_lifts_only_a_suppression_its_stop_made(
    client: FlaskClient, engine: Engine, redis_client: redis.Redis, settings: Settings, db_session: Session, source: str
) -> None:
    """An operator's (API, CSV) or Twilio's (21610) suppression stays when the person replies START; their own STOP
    is lifted. The list keeps where each came from."""
    other = "+447700900456"
    add_opt_outs(db_session, [other], source=source, reason="added by someone else")
    db_session.commit()
    reply(client, "STOP")
    apply_queued(engine, redis_client, settings)
    assert opted_out(db_session) == {SENDER: "inbound_stop", other: source}
    reply(client, "START")
    reply(client, "START", sender=other)
    apply_queued(engine, redis_client, settings)
    assert opted_out(db_session) == {other: source}
