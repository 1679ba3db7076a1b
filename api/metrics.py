"""`GET /metrics`: Prometheus text exposition of bulksms's counters (shared in Redis) and live gauges.

With METRICS_TOKEN set, every process that serves it asks for `Authorization: Bearer <METRICS_TOKEN>` (401
otherwise). Without it, the API serves it openly (for `bulksms up` and a private network) and the webhook service,
which faces the internet, does not serve it at all (api.webhook_app). docs/operations.md, "Metrics".
"""

from __future__ import annotations

import hmac

import redis
from flask import Blueprint, Flask, Response, current_app, request
from sqlalchemy.orm import Session, sessionmaker

from api.errors import problem_response
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


def presents_token(authorization: str, token: str) -> bool:
    """Whether an Authorization header is `Bearer <token>` (compared in constant time)."""
    scheme, _, presented = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode())


@blueprint.get("/metrics")
def metrics() -> Response:
    """Prometheus metrics (text exposition format 0.0.4): sends, Twilio latency, queues, callbacks."""
    redis_client, session_factory, settings = current_app.extensions[EXTENSION_NAME]
    if settings.metrics_token and not presents_token(request.headers.get("Authorization", ""), settings.metrics_token):
        return problem_response(
            401,
            "Send the metrics token as `Authorization: Bearer <METRICS_TOKEN>`.",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    webhook_services = current_app.extensions.get(WEBHOOKS_EXTENSION_NAME)
    if webhook_services is not None:  # this process's buffered webhook counts first, so they are never a scrape late
        webhook_services.metrics.flush(webhook_services.redis_client)
    return Response(render_metrics(redis_client, session_factory, settings), content_type=CONTENT_TYPE)
