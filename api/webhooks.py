"""`POST /webhooks/twilio/status`: check Twilio's signature, queue the callback in Redis, answer 204.

No database here: one HMAC check and one `XADD` (shared.receipts.status_queue), so the endpoint answers in about a
millisecond and keeps answering while PostgreSQL is down. A callback Redis cannot take gets 503 and Twilio
retries it (the `#rc=5&rp=all` overrides in our StatusCallback URLs); a 2xx means the event is in Redis.

The usual case (signed, complete, queued: 204) is answered by `StatusCallbackFastPath`, a WSGI middleware in
front of Flask; everything else goes through the Flask route below, which is the reference behaviour.
"""

from __future__ import annotations

import hmac
import io
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import redis
from flask import Blueprint, Flask, Response, current_app, request
from twilio.request_validator import RequestValidator
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wsgi import get_host

from api.errors import PROBLEM_TYPE_BASE, problem_response
from shared.platform.metrics import CALLBACKS_RECEIVED, MetricsRecorder, callback_status_label, record_webhook_request
from shared.platform.settings import Settings
from shared.receipts.status_queue import CallbackWriter

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
    redis_client: redis.Redis  # health checks
    writer: CallbackWriter  # the hot path's XADD
    public_base_url: str | None
    metrics: MetricsRecorder = field(default_factory=MetricsRecorder)  # flushed to Redis about once a second


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
    services = app.extensions[EXTENSION_NAME] = WebhookServices(
        validator=RequestValidator(settings.twilio_auth_token) if settings.twilio_auth_token else None,
        redis_client=redis_client,
        writer=CallbackWriter(redis_client.connection_pool),
        public_base_url=settings.public_base_url.rstrip("/") if settings.public_base_url else None,
    )
    # Inside ProxyFix (installed next), so the fast path sees the same scheme, host and prefix as Flask would.
    app.wsgi_app = StatusCallbackFastPath(app.wsgi_app, app, services)  # type: ignore[method-assign]
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


class FormParameters(dict[str, Any]):
    """{name: value, or [values] when Twilio repeated a name}; `getall` is what RequestValidator looks for first
    (without it, it finds the values through two caught AttributeErrors per parameter)."""

    def getall(self, name: str) -> list[str]:
        value = self[name]
        return value if isinstance(value, list) else [value]


def read_form() -> FormParameters:
    """The form-encoded body, parsed straight from the bytes: werkzeug's form parser costs several times more,
    and this is the hottest path we have."""
    return parse_form(request.get_data(cache=False))


def parse_form(body: bytes) -> FormParameters:
    """{name: value, or [values] for a repeated name} from a form-encoded body (the Flask route and the fast path)."""
    parameters = FormParameters()
    for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        if name not in parameters:
            parameters[name] = value
        elif isinstance(parameters[name], list):
            parameters[name].append(value)
        else:
            parameters[name] = [parameters[name], value]
    return parameters


def signature_is_valid(validator: RequestValidator, url: str, form: Mapping[str, Any], signature: str) -> bool:
    """Twilio's check; the URL exactly as given is tried first, so the usual case costs one HMAC, not two."""
    if hmac.compare_digest(validator.compute_signature(url, form), signature):
        return True
    return bool(validator.validate(url, form, signature))  # with and without the default port


@blueprint.post(STATUS_CALLBACK_PATH)
def twilio_status_callback() -> Response:
    started = time.perf_counter()
    services = _services()
    code = 503  # a RedisError on the way out
    try:
        response = accept_status_callback(services)
        code = response.status_code
        return response
    finally:
        record_webhook_request(services.metrics, services.redis_client, code, time.perf_counter() - started)


def signed_form(services: WebhookServices) -> FormParameters | Response:
    """The request's form parameters when Twilio signed them (both webhooks), else the 403 to answer."""
    signature = request.headers.get(SIGNATURE_HEADER)
    parameters = read_form()
    if (
        not signature
        or services.validator is None
        or not signature_is_valid(
            services.validator, url_twilio_called(services.public_base_url), parameters, signature
        )
    ):
        return problem_response(
            403,
            "The X-Twilio-Signature header is missing or does not match this request.",
            problem_type=PROBLEM_TYPE_BASE + "invalid-signature",
        )
    return parameters


def accept_status_callback(services: WebhookServices) -> Response:
    parameters = signed_form(services)
    if isinstance(parameters, Response):
        return parameters
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
    services.writer.push(parameters, arguments.get("message_id"), arguments.get("attempt"))
    services.metrics.increment(CALLBACKS_RECEIVED, {"status": callback_status_label(parameters["MessageStatus"])})
    return Response(status=204)


WSGIEnvironment = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApplication = Callable[[WSGIEnvironment, StartResponse], Iterable[bytes]]


class StatusCallbackFastPath:
    """`POST /webhooks/twilio/status` without Flask when the answer is 204: same body parsing, same signature
    check against the same URL, same XADD and metrics. A request that would get anything else (no signature,
    403, 400, Redis error, a body without a usable Content-Length or over MAX_CONTENT_LENGTH) is handed to the
    Flask app untouched (its body put back), which answers exactly as before; other paths go straight through.

    Flask's per-request work (request context, routing, the request-logging hooks) is most of the CPU a callback
    costs, and Twilio sends them by the thousand per second. The 204s answered here are not logged and carry no
    X-Request-Id: at that rate a log line per callback is itself a cost (the metrics still count and time them).
    """

    def __init__(self, wsgi_app: WSGIApplication, app: Flask, services: WebhookServices) -> None:
        self.wsgi_app = wsgi_app
        self.config = app.config
        self.services = services

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != STATUS_CALLBACK_PATH or environ.get("REQUEST_METHOD") != "POST":
            return self.wsgi_app(environ, start_response)
        started = time.perf_counter()
        services = self.services
        signature = environ.get("HTTP_X_TWILIO_SIGNATURE")
        length = environ.get("CONTENT_LENGTH", "")
        limit = self.config["MAX_CONTENT_LENGTH"]
        if (
            not signature
            or services.validator is None
            or not length.isdigit()
            or (limit is not None and int(length) > limit)
        ):
            return self.wsgi_app(environ, start_response)
        body = environ["wsgi.input"].read(int(length))
        parameters = parse_form(body)
        if parameters.get("MessageSid") and parameters.get("MessageStatus"):
            url = self._url_twilio_called(environ)
            if url is not None and signature_is_valid(services.validator, url, parameters, signature):
                arguments = self._first_values(environ.get("QUERY_STRING", ""))
                try:
                    services.writer.push(parameters, arguments.get("message_id"), arguments.get("attempt"))
                except redis.RedisError:
                    pass  # Flask tries once more and answers 503 (problem+json) if Redis still fails
                else:
                    services.metrics.increment(
                        CALLBACKS_RECEIVED, {"status": callback_status_label(parameters["MessageStatus"])}
                    )
                    record_webhook_request(services.metrics, services.redis_client, 204, time.perf_counter() - started)
                    start_response("204 No Content", [])
                    return ()
        environ["wsgi.input"] = io.BytesIO(body)
        return self.wsgi_app(environ, start_response)

    def _url_twilio_called(self, environ: WSGIEnvironment) -> str | None:
        """`url_twilio_called` from the WSGI environment; None when Flask must decide (TRUSTED_HOSTS set)."""
        query = environ.get("QUERY_STRING", "")
        base = self.services.public_base_url
        if base is None:
            if self.config["TRUSTED_HOSTS"] is not None:
                return None
            # request.root_path: SCRIPT_NAME as werkzeug decodes it, without its trailing slash
            root_path = environ.get("SCRIPT_NAME", "").encode("latin-1").decode("utf-8", "replace").rstrip("/")
            base = f"{environ['wsgi.url_scheme']}://{get_host(environ)}{root_path}"
        return f"{base}{STATUS_CALLBACK_PATH}?{query}" if query else f"{base}{STATUS_CALLBACK_PATH}"

    @staticmethod
    def _first_values(query: str) -> dict[str, str]:
        """request.args.get: the first value of each name."""
        values: dict[str, str] = {}
        for name, value in parse_qsl(query, keep_blank_values=True):
            values.setdefault(name, value)
        return values
