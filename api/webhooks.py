"""`POST /webhooks/twilio/status`: check Twilio's signature, queue the callback in Redis, answer 204.

No database here: one HMAC check and one `XADD` (shared.status_queue), so the endpoint answers in about a
millisecond and keeps answering while PostgreSQL is down. A callback Redis cannot take gets 503 and Twilio
retries it (the `#rc=5&rp=all` overrides in our StatusCallback URLs); a 2xx means the event is in Redis.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import redis
from flask import Blueprint, Flask, Response, current_app, request
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict
from werkzeug.middleware.proxy_fix import ProxyFix

from api.errors import PROBLEM_TYPE_BASE, problem_response
from shared.settings import Settings
from shared.status_queue import push_callback

logger = logging.getLogger(__name__)

STATUS_CALLBACK_PATH = "/webhooks/twilio/status"
EXTENSION_NAME = "bulksms.webhooks"
SIGNATURE_HEADER = "X-Twilio-Signature"
# The webhook's Redis round trip must fail fast: Twilio waits at most a few seconds, then retries.
REDIS_TIMEOUT_SECONDS = 2.0

blueprint = Blueprint("webhooks", __name__)


@dataclass(frozen=True)
class WebhookServices:
    validator: RequestValidator | None  # None: no auth token configured, every callback is refused
    redis_client: redis.Redis
    public_base_url: str | None


def init_webhooks(app: Flask, settings: Settings, redis_client: redis.Redis | None = None) -> None:
    """Register the webhook routes on `app`, and trust `TRUSTED_PROXY_COUNT` proxies' X-Forwarded-* headers."""
    settings.require("redis_url")
    if not settings.twilio_auth_token:
        logger.warning("TWILIO_AUTH_TOKEN is not set: every status callback will be refused with 403")
    if redis_client is None:
        redis_client = redis.Redis.from_url(
            str(settings.redis_url),
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
        )
    app.extensions[EXTENSION_NAME] = WebhookServices(
        validator=RequestValidator(settings.twilio_auth_token) if settings.twilio_auth_token else None,
        redis_client=redis_client,
        public_base_url=settings.public_base_url.rstrip("/") if settings.public_base_url else None,
    )
    if settings.trusted_proxy_count > 0:
        hops = settings.trusted_proxy_count
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops, x_prefix=hops
        )
    app.register_blueprint(blueprint)


def _services() -> WebhookServices:
    found: WebhookServices = current_app.extensions[EXTENSION_NAME]
    return found


def url_twilio_called(public_base_url: str | None) -> str:
    """The URL Twilio signed: PUBLIC_BASE_URL when set (the authority behind any proxy), else the request's own
    (scheme and host from X-Forwarded-* only when ProxyFix trusts them); the query string exactly as sent."""
    query = request.query_string.decode("latin-1")
    base = public_base_url or f"{request.scheme}://{request.host}{request.root_path}"
    return f"{base}{request.path}?{query}" if query else f"{base}{request.path}"


def read_form() -> tuple[dict[str, Any], Mapping[str, Any]]:
    """The form-encoded body as {name: value, or [values] when repeated}, and the view the validator needs.

    Parsed straight from the body: werkzeug's form parser costs several times more, on the hottest path we have.
    """
    pairs = parse_qsl(request.get_data(cache=False).decode("utf-8", "replace"), keep_blank_values=True)
    parameters: dict[str, Any] = dict(pairs)
    if len(parameters) == len(pairs):
        return parameters, parameters
    multi = MultiDict(pairs)
    return {name: values[0] if len(values) == 1 else values for name, values in multi.lists()}, multi


def signature_is_valid(validator: RequestValidator, url: str, form: Mapping[str, Any], signature: str) -> bool:
    """Twilio's check; the URL exactly as given is tried first, so the usual case costs one HMAC, not two."""
    if hmac.compare_digest(validator.compute_signature(url, form), signature):
        return True
    return bool(validator.validate(url, form, signature))  # with and without the default port


@blueprint.post(STATUS_CALLBACK_PATH)
def twilio_status_callback() -> Response:
    services = _services()
    signature = request.headers.get(SIGNATURE_HEADER)
    parameters, form = read_form()
    if (
        not signature
        or services.validator is None
        or not signature_is_valid(services.validator, url_twilio_called(services.public_base_url), form, signature)
    ):
        return problem_response(
            403,
            "The X-Twilio-Signature header is missing or does not match this request.",
            problem_type=PROBLEM_TYPE_BASE + "invalid-signature",
        )
    missing = [name for name in ("MessageSid", "MessageStatus") if not parameters.get(name)]
    if missing:
        return problem_response(
            400,
            "A status callback needs MessageSid and MessageStatus.",
            problem_type=PROBLEM_TYPE_BASE + "validation",
            errors={name: ["Missing data for required field."] for name in missing},
        )
    # A RedisError propagates to the 503 handler in api.errors: not queued, so Twilio must retry.
    arguments = request.args
    push_callback(services.redis_client, parameters, arguments.get("message_id"), arguments.get("attempt"))
    return Response(status=204)
