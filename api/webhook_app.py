"""`create_webhook_app(settings)`: Twilio's webhooks as their own service (no database engine, Redis only).

Status callbacks and inbound replies, `/healthz`, `/readyz`, and `/metrics` only when METRICS_TOKEN is set: this
is the process that faces the internet. Run it with `gunicorn api.webhook_wsgi:app` on WEBHOOK_PORT;
`create_app` serves the same webhook routes on PORT.
"""

from __future__ import annotations

import logging

import redis
import redis.exceptions
from flask import Blueprint, Flask, Response, current_app, jsonify

from api.errors import PROBLEM_TYPE_BASE, problem_response, register_error_handlers
from api.metrics import init_metrics
from api.webhooks import EXTENSION_NAME, WebhookServices, init_webhooks
from shared.platform.settings import Settings

logger = logging.getLogger(__name__)

health_blueprint = Blueprint("webhook_health", __name__)


@health_blueprint.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@health_blueprint.get("/readyz")
def readyz() -> Response:
    services: WebhookServices = current_app.extensions[EXTENSION_NAME]
    try:
        services.redis_client.ping()
        redis_check = "ok"
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
        logger.warning("readiness: Redis unreachable: %s", type(error).__name__)
        redis_check = "unreachable"
    checks = {"redis": redis_check, "twilio_auth_token": "ok" if services.signatures else "missing"}
    if all(result == "ok" for result in checks.values()):
        return jsonify({"status": "ready", "checks": checks})
    failed = ", ".join(name for name, result in checks.items() if result != "ok")
    return problem_response(
        503, f"Not ready: {failed}.", problem_type=PROBLEM_TYPE_BASE + "not-ready", extra={"checks": checks}
    )


def create_webhook_app(settings: Settings) -> Flask:
    """Only the webhook routes, health checks and (with METRICS_TOKEN) metrics; needs REDIS_URL and
    TWILIO_AUTH_TOKEN, not DATABASE_URL."""
    settings.require("redis_url")
    app = Flask(__name__)
    # The webhook routes read at most WEBHOOK_MAX_BODY_BYTES themselves; nothing else here takes a body.
    app.config["MAX_CONTENT_LENGTH"] = settings.webhook_max_body_bytes
    logging.getLogger("api").setLevel(settings.log_level.upper())
    register_error_handlers(app)
    init_webhooks(app, settings)
    app.register_blueprint(health_blueprint)
    if settings.metrics_token:  # internet-facing: metrics only behind the token
        init_metrics(app, settings, app.extensions[EXTENSION_NAME].redis_client)  # Redis only: no database gauges
    return app
