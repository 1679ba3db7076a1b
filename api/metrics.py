"""`GET /metrics`: Prometheus text exposition of bulksms's counters (shared in Redis) and live gauges.

Registered on the API (with the database gauges) and on the standalone webhook service (Redis only). Not
behind an API key, like the health checks: expose it on an internal network only. docs/operations.md, "Metrics".
"""

from __future__ import annotations

import redis
from flask import Blueprint, Flask, Response, current_app
from sqlalchemy.orm import Session, sessionmaker

from api.webhooks import EXTENSION_NAME as WEBHOOKS_EXTENSION_NAME
from shared.platform.metrics import render_metrics
from shared.platform.settings import Settings

EXTENSION_NAME = "bulksms.metrics"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

blueprint = Blueprint("metrics", __name__)


def init_metrics(
    app: Flask, settings: Settings, redis_client: redis.Redis, session_factory: sessionmaker[Session] | None = None
) -> None:
    """Serve `GET /metrics` from `redis_client` (and PostgreSQL through `session_factory`, when given)."""
    app.extensions[EXTENSION_NAME] = (redis_client, session_factory, settings)
    app.register_blueprint(blueprint)


@blueprint.get("/metrics")
def metrics() -> Response:
    """Prometheus metrics (text exposition format 0.0.4): sends, Twilio latency, queues, callbacks."""
    redis_client, session_factory, settings = current_app.extensions[EXTENSION_NAME]
    webhook_services = current_app.extensions.get(WEBHOOKS_EXTENSION_NAME)
    if webhook_services is not None:  # this process's buffered webhook counts first, so they are never a scrape late
        webhook_services.metrics.flush(webhook_services.redis_client)
    return Response(render_metrics(redis_client, session_factory, settings), content_type=CONTENT_TYPE)
