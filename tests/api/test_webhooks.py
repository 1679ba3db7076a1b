"""The status webhook: Twilio's signature checked against the URL Twilio called, then one event queued in Redis."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from twilio.request_validator import RequestValidator
from werkzeug.test import EnvironBuilder

from api.context import EXTENSION_NAME as API_EXTENSION_NAME
from api.webhook_app import create_webhook_app
from bulksms_tools.local_services import find_free_port
from shared.platform.db import create_session_factory
from shared.platform.settings import Settings
from shared.receipts.events import drain_status_stream
from shared.receipts.status_queue import STREAM_KEY, StatusStreamConsumer, ensure_consumer_group
from tests.api.conftest import build_app
from tests.metrics_text import parse_exposition, value
from tests.status_callbacks import CALLBACK_PATH, callback_parameters, new_sid, twilio_signature

TOKEN = "test-auth-token-0123456789abcdef"
QUERY = "message_id=42&attempt=2"

# twilio-python's public test vectors (docs: /work/shared/twilio/README.md).
VECTOR_TOKEN = "12345"
VECTOR_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
VECTOR_PARAMETERS = {
    "CallSid": "CA1234567890ABCDE",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
    "Caller": "+14158675309",
}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (VECTOR_URL, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
        ("https://mycompany.com:443/myapp.php?foo=1&bar=2", "kvajT1Ptam85bY51eRf/AJRuM3w="),
        ("http://mycompany.com:1234/myapp.php?foo=1&bar=2", "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="),
    ],
)
def test_public_vectors_for_our_signer_and_twilios_validator(url: str, expected: str) -> None:
    assert twilio_signature(VECTOR_TOKEN, url, VECTOR_PARAMETERS) == expected
    assert RequestValidator(VECTOR_TOKEN).validate(url, VECTOR_PARAMETERS, expected)


def test_validator_accepts_the_vector_with_or_without_the_default_port() -> None:
    validator = RequestValidator(VECTOR_TOKEN)
    assert validator.validate(
        "https://mycompany.com:443/myapp.php?foo=1&bar=2", VECTOR_PARAMETERS, "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    )
    assert validator.validate(VECTOR_URL, VECTOR_PARAMETERS, "kvajT1Ptam85bY51eRf/AJRuM3w=")


def webhook_settings(settings: Settings, **changes: Any) -> Settings:
    values: dict[str, Any] = {"twilio_auth_token": TOKEN, "public_base_url": None, "trusted_proxy_count": 0}
    values.update(changes)
    return settings.replace(**values)


def make_client(settings: Settings) -> FlaskClient:
    app = create_webhook_app(settings)
    app.config["TESTING"] = True
    return app.test_client()


@pytest.fixture
def stream(redis_client: redis.Redis) -> redis.Redis:
    """The test Redis (flushed before each test), where the webhook queues."""
    return redis_client


def post_callback(
    client: FlaskClient,
    signed_url: str,
    parameters: dict[str, str],
    *,
    base_url: str,
    query: str = QUERY,
    headers: dict[str, str] | None = None,
    token: str = TOKEN,
    signature: str | None = None,
) -> Any:
    all_headers = {"X-Twilio-Signature": signature or twilio_signature(token, signed_url, parameters)}
    all_headers.update(headers or {})
    return client.post(f"{CALLBACK_PATH}?{query}", data=parameters, base_url=base_url, headers=all_headers)


def queued_entries(client: redis.Redis) -> list[dict[bytes, bytes]]:
    return [fields for _id, fields in client.xrange(STREAM_KEY)]


def test_signed_callback_is_queued_with_its_ids_and_answered_204(settings: Settings, stream: redis.Redis) -> None:
    client = make_client(webhook_settings(settings, public_base_url="https://sms.example.com"))
    sid = new_sid()
    parameters = callback_parameters(sid, "delivered")
    response = post_callback(
        client, f"https://sms.example.com{CALLBACK_PATH}?{QUERY}", parameters, base_url="http://127.0.0.1:8001"
    )
    assert response.status_code == 204, response.get_data(as_text=True)
    (entry,) = queued_entries(stream)
    queued_parameters, message_id, attempt, _received_at = json.loads(entry[b"e"])
    assert (queued_parameters, message_id, attempt) == (parameters, "42", "2")
    # A consumer reads it back intact.
    ensure_consumer_group(stream)
    (callback,) = StatusStreamConsumer(stream, "test").read_batch(10, 0.1)
    assert callback.parameters["MessageSid"] == sid and callback.message_id == "42" and callback.attempt == "2"


@pytest.mark.parametrize("signature", [None, "", "RSOYDt4T1cUTdK1PDd93/VVr8B8=", "forged"])
def test_missing_or_wrong_signature_is_refused_and_nothing_queued(
    settings: Settings, stream: redis.Redis, signature: str | None
) -> None:
    client = make_client(webhook_settings(settings, public_base_url="https://sms.example.com"))
    headers = {} if signature is None else {"X-Twilio-Signature": signature}
    response = client.post(f"{CALLBACK_PATH}?{QUERY}", data=callback_parameters(new_sid(), "sent"), headers=headers)
    assert response.status_code == 403
    assert response.content_type == "application/problem+json"
    assert stream.exists(STREAM_KEY) == 0


def test_signature_over_other_parameters_or_another_query_is_refused(settings: Settings, stream: redis.Redis) -> None:
    client = make_client(webhook_settings(settings, public_base_url="https://sms.example.com"))
    url = f"https://sms.example.com{CALLBACK_PATH}?{QUERY}"
    parameters = callback_parameters(new_sid(), "sent")
    signature = twilio_signature(TOKEN, url, parameters)
    tampered = {**parameters, "MessageStatus": "delivered"}
    assert post_callback(client, url, tampered, base_url="http://x", signature=signature).status_code == 403
    other_query = "message_id=43&attempt=2"
    assert (
        post_callback(client, url, parameters, base_url="http://x", query=other_query, signature=signature).status_code
        == 403
    )
    assert post_callback(client, url, parameters, base_url="http://x", token="another-token").status_code == 403
    assert stream.exists(STREAM_KEY) == 0


@pytest.mark.parametrize("missing", ["MessageSid", "MessageStatus"])
def test_missing_sid_or_status_is_400_and_nothing_queued(settings: Settings, stream: redis.Redis, missing: str) -> None:
    client = make_client(webhook_settings(settings, public_base_url="https://sms.example.com"))
    parameters = callback_parameters(new_sid(), "sent")
    del parameters[missing]
    response = post_callback(client, f"https://sms.example.com{CALLBACK_PATH}?{QUERY}", parameters, base_url="http://x")
    assert response.status_code == 400
    assert missing in response.get_json()["errors"]
    assert stream.exists(STREAM_KEY) == 0


@pytest.mark.parametrize(
    ("public_base_url", "signed_base"),
    [
        ("http://sms.example.com:8080", "http://sms.example.com:8080"),  # a non-default port, signed as called
        ("https://sms.example.com", "https://sms.example.com:443"),  # Twilio signed with the default port
        ("https://sms.example.com:443", "https://sms.example.com"),  # ... or without it
        ("https://sms.example.com/prefix/", "https://sms.example.com/prefix"),  # mounted under a path
    ],
)
def test_url_with_port_and_query_string(
    settings: Settings, stream: redis.Redis, public_base_url: str, signed_base: str
) -> None:
    client = make_client(webhook_settings(settings, public_base_url=public_base_url))
    parameters = callback_parameters(new_sid(), "sent")
    response = post_callback(client, f"{signed_base}{CALLBACK_PATH}?{QUERY}", parameters, base_url="http://127.0.0.1")
    assert response.status_code == 204
    assert len(queued_entries(stream)) == 1


def test_without_public_base_url_the_request_url_is_used_port_included(settings: Settings, stream: redis.Redis) -> None:
    client = make_client(webhook_settings(settings))
    parameters = callback_parameters(new_sid(), "sent")
    signed = f"http://hooks.example.com:5000{CALLBACK_PATH}?{QUERY}"
    assert post_callback(client, signed, parameters, base_url="http://hooks.example.com:5000").status_code == 204
    assert post_callback(client, signed, parameters, base_url="http://hooks.example.com:5001").status_code == 403


FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "sms.example.com", "X-Forwarded-For": "203.0.113.7"}


def test_behind_a_trusted_tls_proxy_the_forwarded_url_is_validated(settings: Settings, stream: redis.Redis) -> None:
    client = make_client(webhook_settings(settings, trusted_proxy_count=1))
    parameters = callback_parameters(new_sid(), "sent")
    signed = f"https://sms.example.com{CALLBACK_PATH}?{QUERY}"
    response = post_callback(client, signed, parameters, base_url="http://10.0.0.5:8001", headers=FORWARDED)
    assert response.status_code == 204
    assert len(queued_entries(stream)) == 1


def test_forwarded_headers_are_ignored_without_trusted_proxies(settings: Settings, stream: redis.Redis) -> None:
    client = make_client(webhook_settings(settings, trusted_proxy_count=0))
    parameters = callback_parameters(new_sid(), "sent")
    signed = f"https://sms.example.com{CALLBACK_PATH}?{QUERY}"
    response = post_callback(client, signed, parameters, base_url="http://10.0.0.5:8001", headers=FORWARDED)
    assert response.status_code == 403
    assert stream.exists(STREAM_KEY) == 0


def test_public_base_url_is_the_authority_behind_a_proxy(settings: Settings, stream: redis.Redis) -> None:
    """The app sees plain http on an internal address; PUBLIC_BASE_URL names what Twilio called."""
    for proxies in (0, 1):
        client = make_client(
            webhook_settings(settings, public_base_url="https://sms.example.com", trusted_proxy_count=proxies)
        )
        parameters = callback_parameters(new_sid(), "sent")
        signed = f"https://sms.example.com{CALLBACK_PATH}?{QUERY}"
        headers = {"X-Forwarded-Proto": "http", "X-Forwarded-Host": "evil.example.net"}
        assert (
            post_callback(client, signed, parameters, base_url="http://10.0.0.5:8001", headers=headers).status_code
            == 204
        )
    assert len(queued_entries(stream)) == 2


def test_redis_down_answers_503_so_twilio_retries(settings: Settings) -> None:
    dead_redis = f"redis://127.0.0.1:{find_free_port()}/0"
    client = make_client(webhook_settings(settings, redis_url=dead_redis, public_base_url="https://sms.example.com"))
    parameters = callback_parameters(new_sid(), "sent")
    response = post_callback(client, f"https://sms.example.com{CALLBACK_PATH}?{QUERY}", parameters, base_url="http://x")
    assert response.status_code == 503
    assert response.content_type == "application/problem+json"
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200


def test_webhook_service_health_and_readiness(settings: Settings, stream: redis.Redis) -> None:
    client = make_client(webhook_settings(settings))
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").get_json()["status"] == "ready"
    assert client.post("/v1/broadcasts", json={}).status_code == 404  # only the webhook here


@pytest.fixture
def main_app(settings: Settings, engine: Any, redis_client: Any) -> Iterator[Flask]:
    yield from build_app(webhook_settings(settings, public_base_url="https://sms.example.com"))


def test_main_api_serves_the_webhook_too(main_app: Flask, stream: redis.Redis) -> None:
    parameters = callback_parameters(new_sid(), "queued")
    response = post_callback(
        main_app.test_client(), f"https://sms.example.com{CALLBACK_PATH}?{QUERY}", parameters, base_url="http://x"
    )
    assert response.status_code == 204
    assert len(queued_entries(stream)) == 1


def test_repeated_parameters_are_signed_and_kept_like_twilio_does(settings: Settings, stream: redis.Redis) -> None:
    client = make_client(webhook_settings(settings, public_base_url="https://sms.example.com"))
    url = f"https://sms.example.com{CALLBACK_PATH}?{QUERY}"
    pairs = [
        *callback_parameters(new_sid(), "sent").items(),
        ("MediaUrl", "https://b.example/2"),
        ("MediaUrl", "https://a.example/1"),
    ]
    data = "".join(name + value for name, value in sorted(pairs))  # names sorted, then each name's values sorted
    signature = base64.b64encode(hmac.new(TOKEN.encode(), (url + data).encode(), hashlib.sha1).digest()).decode()
    response = client.post(
        f"{CALLBACK_PATH}?{QUERY}",
        data=urlencode(pairs),
        content_type="application/x-www-form-urlencoded",
        headers={"X-Twilio-Signature": signature},
    )
    assert response.status_code == 204
    (entry,) = queued_entries(stream)
    assert json.loads(entry[b"e"])[0]["MediaUrl"] == ["https://b.example/2", "https://a.example/1"]


# --- refused before parsing: the gate in front of both routes, on both apps ------------------------------------

INBOUND_PATH = "/webhooks/twilio/inbound"
ONE_MIB = 1024 * 1024


class UnreadableBody(io.RawIOBase):
    """A request body that fails the test if anything reads it."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        raise AssertionError("the webhook read a body it should have refused unread")


class CountingBody(io.BytesIO):
    """A body that remembers how much of it was read."""

    def __init__(self, content: bytes) -> None:
        super().__init__(content)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.bytes_read += len(chunk)
        return chunk


def call_wsgi(app: Flask, environ: dict[str, Any]) -> tuple[int, bytes]:
    statuses: list[str] = []
    body = b"".join(app(environ, lambda status, headers, exc_info=None: statuses.append(status)))
    return int(statuses[0].split()[0]), body


def raw_post(path: str, body: Any, *, headers: dict[str, str], content_length: int | None) -> dict[str, Any]:
    environ = EnvironBuilder(
        path=path, method="POST", headers=headers, content_type="application/x-www-form-urlencoded"
    ).get_environ()
    environ["wsgi.input"] = body
    if content_length is None:
        environ.pop("CONTENT_LENGTH", None)
        environ["wsgi.input_terminated"] = True  # a chunked body, framed by the server
    else:
        environ["CONTENT_LENGTH"] = str(content_length)
    return environ


@pytest.fixture(params=["webhook service", "api"])
def any_app(request: pytest.FixtureRequest, settings: Settings, engine: Any, redis_client: Any) -> Iterator[Flask]:
    """Both processes that serve the webhooks."""
    configured = webhook_settings(settings, public_base_url="https://sms.example.com")
    if request.param == "api":
        yield from build_app(configured)
    else:
        yield create_webhook_app(configured)


@pytest.mark.parametrize("path", [CALLBACK_PATH, INBOUND_PATH])
def test_an_unsigned_request_is_refused_before_its_body_is_read(any_app: Flask, stream: redis.Redis, path: str) -> None:
    status, body = call_wsgi(any_app, raw_post(path, UnreadableBody(), headers={}, content_length=ONE_MIB))
    assert status == 403
    assert json.loads(body)["type"].endswith("invalid-signature")
    assert stream.exists(STREAM_KEY) == 0


@pytest.mark.parametrize("path", [CALLBACK_PATH, INBOUND_PATH])
def test_a_body_over_the_limit_is_refused_unread(any_app: Flask, stream: redis.Redis, path: str) -> None:
    headers = {"X-Twilio-Signature": "any"}
    status, body = call_wsgi(any_app, raw_post(path, UnreadableBody(), headers=headers, content_length=16 * 1024 + 1))
    assert status == 413
    assert "16384 bytes" in json.loads(body)["detail"]
    assert stream.exists(STREAM_KEY) == 0


def test_a_chunked_body_is_cut_at_the_limit(any_app: Flask, stream: redis.Redis) -> None:
    body = CountingBody(b"MessageStatus=sent&" + b"x" * ONE_MIB)
    headers = {"X-Twilio-Signature": "any"}
    status, _ = call_wsgi(any_app, raw_post(CALLBACK_PATH, body, headers=headers, content_length=None))
    assert status == 413
    assert body.bytes_read <= 16 * 1024 + 1
    assert stream.exists(STREAM_KEY) == 0


def test_the_body_limit_is_a_setting(settings: Settings, stream: redis.Redis) -> None:
    client = make_client(
        webhook_settings(settings, public_base_url="https://sms.example.com", webhook_max_body_bytes=300)
    )
    parameters = callback_parameters(new_sid(), "sent")
    parameters["Padding"] = "x" * 300
    url = f"https://sms.example.com{CALLBACK_PATH}?{QUERY}"
    assert post_callback(client, url, parameters, base_url="http://x").status_code == 413
    del parameters["Padding"]
    assert post_callback(client, url, parameters, base_url="http://x").status_code == 204


def test_during_a_token_rotation_both_tokens_are_accepted_and_no_other(settings: Settings, stream: redis.Redis) -> None:
    client = make_client(
        webhook_settings(
            settings,
            public_base_url="https://sms.example.com",
            twilio_auth_token="new-token",
            twilio_auth_token_previous=TOKEN,
        )
    )
    url = f"https://sms.example.com{CALLBACK_PATH}?{QUERY}"
    for token, expected in ((TOKEN, 204), ("new-token", 204), ("some-other-token", 403)):
        parameters = callback_parameters(new_sid(), "sent")
        assert post_callback(client, url, parameters, base_url="http://x", token=token).status_code == expected
    assert len(queued_entries(stream)) == 2
    # After the rotation, the old token is refused again.
    rotated = make_client(
        webhook_settings(settings, public_base_url="https://sms.example.com", twilio_auth_token="new-token")
    )
    parameters = callback_parameters(new_sid(), "sent")
    assert post_callback(rotated, url, parameters, base_url="http://x", token=TOKEN).status_code == 403


def test_a_replayed_callback_is_queued_but_applied_and_counted_once(
    main_app: Flask, stream: redis.Redis, engine: Any
) -> None:
    """Twilio retrying, or an attacker replaying a captured request: the same signed body arrives twice. The
    webhook answers both (it keeps no state), the consumer stores and applies it once: the dedupe key is
    (MessageSid, MessageStatus, ErrorCode)."""
    client = main_app.test_client()
    url = f"https://sms.example.com{CALLBACK_PATH}?{QUERY}"
    parameters = callback_parameters(new_sid(), "undelivered", error_code=30007)
    for _ in range(3):
        assert post_callback(client, url, parameters, base_url="http://x").status_code == 204
    assert len(queued_entries(stream)) == 3
    settings = main_app.extensions[API_EXTENSION_NAME].settings
    report = drain_status_stream(create_session_factory(engine), stream, settings)
    assert report.callbacks == 3 and report.totals.stored == 1
    assert stream.xlen(STREAM_KEY) == 0
    with engine.connect() as connection:
        stored = connection.execute(
            text("SELECT count(*) FROM status_events WHERE message_sid = :sid"), {"sid": parameters["MessageSid"]}
        ).scalar_one()
    assert stored == 1
    samples = parse_exposition(client.get("/metrics").get_data(as_text=True))
    assert value(samples, "bulksms_callbacks_received_total", status="undelivered") == 3
    assert value(samples, "bulksms_callbacks_applied_total", status="undelivered") == 1
