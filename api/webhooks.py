"""Twilio's webhooks: `POST /webhooks/twilio/status` (status callbacks) and `POST /webhooks/twilio/inbound`
(replies to our numbers). Both are queued in Redis and answered at once; nothing here touches PostgreSQL, so
they keep answering while it is down. A callback Redis cannot take gets 503 and Twilio retries it (the
`#rc=5&rp=all` overrides in our StatusCallback URLs); a 2xx means the request is in Redis.

Every request to them passes `TwilioWebhookGate`, a WSGI middleware in front of Flask that refuses before
parsing: no `X-Twilio-Signature` → 403 with nothing read past the headers; a body over `WEBHOOK_MAX_BODY_BYTES`
→ 413 unread (or cut at the limit when chunked); a body not in after `WEBHOOK_READ_TIMEOUT_SECONDS` → 408;
a signature that does not match → 403 after one parse and one HMAC per token and URL form, nothing stored.
Only a request whose signature matched reaches the Flask views, with its parameters. The usual status
callback (signed, complete, queued: 204) is answered by the gate itself, without Flask.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import redis
from flask import Blueprint, Flask, Response, current_app, request
from werkzeug.exceptions import SecurityError
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wsgi import get_host

from api.errors import PROBLEM_TYPE_BASE, problem_response
from api.request_body import BodyRefused, ReadDeadlines, read_bounded_body, stop_reading
from shared.compliance.opt_outs import classify_reply
from shared.compliance.phone_numbers import normalise_phone_number
from shared.platform.metrics import CALLBACKS_RECEIVED, MetricsRecorder, callback_status_label, record_webhook_request
from shared.platform.settings import Settings
from shared.receipts.status_queue import CallbackWriter
from shared.twilio.signatures import SignatureChecker

logger = logging.getLogger(__name__)

STATUS_CALLBACK_PATH = "/webhooks/twilio/status"
INBOUND_PATH = "/webhooks/twilio/inbound"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
WEBHOOK_PATHS = frozenset({STATUS_CALLBACK_PATH, INBOUND_PATH})
EXTENSION_NAME = "bulksms.webhooks"
# Set by the gate, and only after the signature matched: a client cannot put a key into the WSGI environment.
VERIFIED_FORM_KEY = "bulksms.twilio_form"
# Set by the gate to True when the test account's token signed the status callback (for test messages only).
TEST_ACCOUNT_KEY = "bulksms.test_account"
# The webhook's Redis round trip must fail fast: Twilio waits at most a few seconds, then retries.
REDIS_TIMEOUT_SECONDS = 2.0

blueprint = Blueprint("webhooks", __name__)


@dataclass(frozen=True)
class WebhookServices:
    signatures: SignatureChecker | None  # None: no auth token configured, every webhook request is refused
    redis_client: redis.Redis  # health checks
    writer: CallbackWriter  # the hot path's XADD
    public_base_url: str | None
    max_body_bytes: int
    read_deadlines: ReadDeadlines
    metrics: MetricsRecorder = field(default_factory=MetricsRecorder)  # flushed to Redis about once a second
    # TEST_TWILIO_AUTH_TOKEN: tried only for status callbacks, after the live tokens; what it signs is queued as a
    # test-account callback, which the consumer applies to test messages only. Never for inbound replies.
    test_signatures: SignatureChecker | None = None


def init_webhooks(app: Flask, settings: Settings, redis_client: redis.Redis | None = None) -> None:
    """Register both webhook routes on `app` behind the gate, and trust `TRUSTED_PROXY_COUNT` proxies'
    X-Forwarded-* headers."""
    settings.require("redis_url")
    tokens = settings.twilio_webhook_tokens
    if not tokens:
        logger.warning("TWILIO_AUTH_TOKEN is not set: every Twilio webhook request will be refused with 403")
    if redis_client is None:
        redis_client = redis.Redis.from_url(
            str(settings.redis_url),
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
        )
    services = app.extensions[EXTENSION_NAME] = WebhookServices(
        signatures=SignatureChecker(tokens) if tokens else None,
        redis_client=redis_client,
        writer=CallbackWriter(redis_client.connection_pool),
        public_base_url=settings.public_base_url.rstrip("/") if settings.public_base_url else None,
        max_body_bytes=settings.webhook_max_body_bytes,
        read_deadlines=ReadDeadlines(settings.webhook_read_timeout_seconds),
        test_signatures=SignatureChecker([settings.test_twilio_auth_token])
        if settings.test_twilio_auth_token
        else None,
    )
    # Inside ProxyFix (installed next), so the gate sees the same scheme, host and prefix as Flask would.
    app.wsgi_app = TwilioWebhookGate(app.wsgi_app, app, services)  # type: ignore[method-assign]
    if settings.trusted_proxy_count > 0:
        hops = settings.trusted_proxy_count
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops, x_prefix=hops
        )
    app.register_blueprint(blueprint)


def webhook_services() -> WebhookServices:
    found: WebhookServices = current_app.extensions[EXTENSION_NAME]
    return found


class FormParameters(dict[str, Any]):
    """{name: value, or [values] when Twilio repeated a name}, as parsed by the gate."""


def parse_form(body: bytes) -> FormParameters:
    """{name: value, or [values] for a repeated name} from a form-encoded body: `parse_qsl` on the bytes costs
    several times less than werkzeug's form parser, and this is the hottest path we have."""
    parameters = FormParameters()
    for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        if name not in parameters:
            parameters[name] = value
        elif isinstance(parameters[name], list):
            parameters[name].append(value)
        else:
            parameters[name] = [parameters[name], value]
    return parameters


def verified_form() -> FormParameters | Response:
    """The parameters of this request, which the gate checked against Twilio's signature; a 403 if the gate
    did not (it always runs in front of these routes: this is only the safe answer if it were missing)."""
    parameters = request.environ.get(VERIFIED_FORM_KEY)
    if isinstance(parameters, FormParameters):
        return parameters
    return invalid_signature_response()


def invalid_signature_response() -> Response:
    return problem_response(
        403,
        "The X-Twilio-Signature header is missing or does not match this request.",
        problem_type=PROBLEM_TYPE_BASE + "invalid-signature",
    )


@blueprint.post(STATUS_CALLBACK_PATH)
def twilio_status_callback() -> Response:
    started = time.perf_counter()
    services = webhook_services()
    code = 503  # a RedisError on the way out
    try:
        response = accept_status_callback(services)
        code = response.status_code
        return response
    finally:
        record_webhook_request(services.metrics, services.redis_client, code, time.perf_counter() - started)


def accept_status_callback(services: WebhookServices) -> Response:
    parameters = verified_form()
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
    test_account = bool(request.environ.get(TEST_ACCOUNT_KEY))
    services.writer.push(parameters, arguments.get("message_id"), arguments.get("attempt"), test_account)
    services.metrics.increment(CALLBACKS_RECEIVED, {"status": callback_status_label(parameters["MessageStatus"])})
    return Response(status=204)


@blueprint.post(INBOUND_PATH)
def twilio_inbound_message() -> Response:
    """A reply to one of our numbers. STOP-type and START-type replies are queued in the status stream, whose
    consumer changes the opt-out list (shared.receipts.events); HELP and anything else change nothing. The
    answer is empty TwiML: Twilio (or its Advanced Opt-Out) sends the confirmation itself."""
    started = time.perf_counter()
    services = webhook_services()
    code = 503  # a RedisError on the way out
    try:
        response = accept_inbound_message(services)
        code = response.status_code
        return response
    finally:
        record_webhook_request(services.metrics, services.redis_client, code, time.perf_counter() - started)


def accept_inbound_message(services: WebhookServices) -> Response:
    parameters = verified_form()
    if isinstance(parameters, Response):
        return parameters
    if not parameters.get("MessageSid"):
        return problem_response(
            400,
            "An inbound message needs a MessageSid.",
            problem_type=PROBLEM_TYPE_BASE + "validation",
            errors={"MessageSid": ["Missing data for required field."]},
        )
    kind = classify_reply(_single(parameters.get("Body")), _single(parameters.get("OptOutType")))
    if kind in ("stop", "start") and normalise_phone_number(_single(parameters.get("From")) or "") is not None:
        # A RedisError propagates to the 503 handler: not queued, so Twilio must retry.
        services.writer.push_inbound(parameters)
    return Response(EMPTY_TWIML, status=200, content_type="text/xml")


def _single(value: object) -> str | None:
    if isinstance(value, list):
        return str(value[0]) if value else None
    return None if value is None else str(value)


WSGIEnvironment = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApplication = Callable[[WSGIEnvironment, StartResponse], Iterable[bytes]]


class TwilioWebhookGate:
    """In front of Flask for `POST` to the two webhook paths: the cheap refusals first, then the bounded read,
    one parse, the signature check; only a signed request goes on, its parameters in `VERIFIED_FORM_KEY`.

    The usual status callback is answered here (XADD, 204) without Flask: Flask's request context, routing and
    the request-logging hooks are most of the CPU a callback costs, and Twilio sends them by the thousand per
    second. Those 204s are not logged and carry no X-Request-Id (the metrics count and time them); refusals are
    answered here too, counted, and not logged either, so a flood of them costs no log line each. Anything else
    (a missing field, a Redis error, an inbound message) goes to the Flask views with the body put back.
    """

    def __init__(self, wsgi_app: WSGIApplication, app: Flask, services: WebhookServices) -> None:
        self.wsgi_app = wsgi_app
        self.config = app.config
        self.services = services

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO")
        if path not in WEBHOOK_PATHS or environ.get("REQUEST_METHOD") != "POST":
            return self.wsgi_app(environ, start_response)
        started = time.perf_counter()
        admitted = self._admit(environ, path)
        if isinstance(admitted, Response):
            record_webhook_request(
                self.services.metrics, self.services.redis_client, admitted.status_code, time.perf_counter() - started
            )
            return admitted(environ, start_response)
        body, parameters, test_account = admitted
        if path == STATUS_CALLBACK_PATH and self._queue_status_callback(environ, parameters, started, test_account):
            start_response("204 No Content", [])
            return ()
        environ[VERIFIED_FORM_KEY] = parameters
        environ[TEST_ACCOUNT_KEY] = test_account
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return self.wsgi_app(environ, start_response)

    def _admit(self, environ: WSGIEnvironment, path: str) -> tuple[bytes, FormParameters, bool] | Response:
        """(body, parameters, signed by the test account) of a request Twilio (or, for a status callback, the test
        account) signed, else the refusal to answer."""
        signature = environ.get("HTTP_X_TWILIO_SIGNATURE")
        signatures = self.services.signatures
        if not signature or signatures is None:
            stop_reading(environ)  # nothing read past the headers
            return invalid_signature_response()
        try:
            body = read_bounded_body(environ, self.services.max_body_bytes, self.services.read_deadlines)
        except BodyRefused as refused:
            stop_reading(environ)
            return problem_response(refused.status, refused.detail)
        parameters = parse_form(body)
        try:
            url = self._url_twilio_called(environ, path)
        except SecurityError:
            return problem_response(400, "The Host header is not one this server answers for.")
        if signatures.matches(url, parameters, signature):
            return body, parameters, False
        # Inbound replies never: a test-account signature must not change the opt-out list.
        test_signatures = self.services.test_signatures
        if (
            path == STATUS_CALLBACK_PATH
            and test_signatures is not None
            and test_signatures.matches(url, parameters, signature)
        ):
            return body, parameters, True
        return invalid_signature_response()

    def _queue_status_callback(
        self, environ: WSGIEnvironment, parameters: FormParameters, started: float, test_account: bool
    ) -> bool:
        """XADD a complete status callback; False leaves it to the Flask view (400, or 503 after one more try)."""
        services = self.services
        if not (parameters.get("MessageSid") and parameters.get("MessageStatus")):
            return False
        arguments = self._first_values(environ.get("QUERY_STRING", ""))
        try:
            services.writer.push(parameters, arguments.get("message_id"), arguments.get("attempt"), test_account)
        except redis.RedisError:
            return False
        services.metrics.increment(CALLBACKS_RECEIVED, {"status": callback_status_label(parameters["MessageStatus"])})
        record_webhook_request(services.metrics, services.redis_client, 204, time.perf_counter() - started)
        return True

    def _url_twilio_called(self, environ: WSGIEnvironment, path: str) -> str:
        """The URL Twilio signed: PUBLIC_BASE_URL when set (the authority behind any proxy, TLS terminated or
        not), else the request's own scheme, host and root path (X-Forwarded-* only when ProxyFix trusts them);
        then the path and the query string exactly as sent. Raises SecurityError for a Host outside Flask's
        TRUSTED_HOSTS."""
        query = environ.get("QUERY_STRING", "")
        base = self.services.public_base_url
        if base is None:
            host = get_host(environ, self.config["TRUSTED_HOSTS"])
            # request.root_path: SCRIPT_NAME as werkzeug decodes it, without its trailing slash
            root_path = environ.get("SCRIPT_NAME", "").encode("latin-1").decode("utf-8", "replace").rstrip("/")
            base = f"{environ['wsgi.url_scheme']}://{host}{root_path}"
        return f"{base}{path}?{query}" if query else f"{base}{path}"

    @staticmethod
    def _first_values(query: str) -> dict[str, str]:
        """request.args.get: the first value of each name."""
        values: dict[str, str] = {}
        for name, value in parse_qsl(query, keep_blank_values=True):
            values.setdefault(name, value)
        return values
