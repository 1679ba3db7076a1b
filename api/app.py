"""`create_app(settings)`: the Flask application with its engine, broker client and error handlers."""

from __future__ import annotations

import logging

import redis
from flask import Flask

from api import broadcast_controls, broadcasts, exports, health, opt_outs, recipients
from api.auth import init_auth
from api.context import EXTENSION_NAME, ApiServices, close_db_session
from api.dashboard import init_dashboard
from api.errors import register_error_handlers
from api.metrics import init_metrics
from api.openapi import init_openapi
from api.request_logging import init_request_logging
from api.webhooks import init_webhooks
from shared.platform.db import create_database_engine, create_session_factory
from shared.platform.settings import Settings
from shared.platform.task_queue import check_chunk_message_format, create_celery_app

# Short: a readiness probe or a broadcast should learn quickly that Redis is gone, not hang.
REDIS_CHECK_TIMEOUT_SECONDS = 2.0


def create_app(settings: Settings) -> Flask:
    """Build the API for `settings`. Nothing connects here: PostgreSQL and Redis are reached per request."""
    settings.require("database_url", "redis_url")
    assert settings.redis_url is not None
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    logging.getLogger("api").setLevel(settings.log_level.upper())
    celery_app = create_celery_app(settings, name="bulksms-api")
    check_chunk_message_format(celery_app)  # the intake writes chunk tasks by hand: refuse to start if they drifted
    engine = create_database_engine(settings)
    app.extensions[EXTENSION_NAME] = ApiServices(
        settings=settings,
        engine=engine,
        session_factory=create_session_factory(engine),
        celery_app=celery_app,
        redis_client=redis.Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=REDIS_CHECK_TIMEOUT_SECONDS,
            socket_timeout=REDIS_CHECK_TIMEOUT_SECONDS,
        ),
    )
    app.teardown_appcontext(close_db_session)
    register_error_handlers(app)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(broadcasts.blueprint)
    # Twilio's status callbacks and inbound replies, as on the webhook service (queued in Redis either way).
    init_webhooks(app, settings, app.extensions[EXTENSION_NAME].redis_client)
    # Pause/resume/cancel/reschedule and the opt-out list (these need the database).
    app.register_blueprint(broadcast_controls.blueprint)
    app.register_blueprint(opt_outs.blueprint)
    app.register_blueprint(exports.blueprint)  # GET /v1/broadcasts/{id}/messages.csv
    app.register_blueprint(recipients.blueprint)  # DELETE /v1/recipients/{number}: erasure on request
    init_dashboard(app, settings)  # /dashboard/ pages, signed in with an API key
    init_request_logging(app)  # X-Request-Id, one log line per request
    init_auth(app)  # key, scope and request rate of every endpoint (after the request id is set)
    services = app.extensions[EXTENSION_NAME]
    init_metrics(app, settings, services.redis_client, services.session_factory)  # GET /metrics
    init_openapi(app)  # /openapi.json and /docs, built from the routes registered above
    return app
