"""Bearer API keys and what each may do: every /v1 endpoint needs `Authorization: Bearer bsk_...` of a key that
is not revoked, whose scope covers the endpoint (ENDPOINT_SCOPES, the one table), and that is within its request
rate limit (counted in Redis for the whole fleet).

Scopes include the ones below them: `read` (GET of the key's own broadcasts), `send` (create and control
broadcasts, add opt-outs), `admin` (read, export and remove the account-wide opt-out list, erase a person's
number). Keys are managed by the operator (`bulksms keys ...`, with database access), not over HTTP.
"""

from __future__ import annotations

import logging

import redis.exceptions
from flask import Flask, g, request

from api.context import db_session, services
from api.errors import ApiProblem
from shared.platform.api_keys import authenticate_api_key, scope_allows
from shared.platform.key_limits import KeyLimits, LimitExceeded
from shared.platform.models import ApiKey

logger = logging.getLogger(__name__)

PUBLIC = "public"  # no API key: health checks, docs, webhooks (signed by Twilio), metrics (its own token)
DASHBOARD = "dashboard"  # signed in with any active key (a cookie); read-only pages of that key's broadcasts

# Every endpoint of the API, and what it needs. tests/api/test_scopes.py fails when a route is missing here; an
# endpoint missing at run time is refused (500), never served without a key.
ENDPOINT_SCOPES: dict[str, str] = {
    "broadcasts.create": "send",
    "broadcasts.index": "read",
    "broadcasts.show_broadcast": "read",
    "broadcasts.show_messages": "read",
    "exports.messages_csv": "read",
    "broadcast_controls.pause": "send",
    "broadcast_controls.resume": "send",
    "broadcast_controls.cancel": "send",
    "broadcast_controls.reschedule": "send",
    # Adding numbers only ever stops messages; reading or removing them touches every key's recipients.
    "opt_outs.create": "send",
    "opt_outs.index": "admin",
    "opt_outs.export": "admin",
    "opt_outs.delete": "admin",
    "recipients.erase": "admin",
    "dashboard.index": DASHBOARD,
    "dashboard.broadcast_page": DASHBOARD,
    "dashboard.messages_export": DASHBOARD,
    # Signed in like the pages; the handler also asks the key's `send` scope, as POST .../resume does.
    "dashboard.resume": DASHBOARD,
    "dashboard.sign_in": PUBLIC,
    "dashboard.sign_out": PUBLIC,
    "health.healthz": PUBLIC,
    "health.readyz": PUBLIC,
    "metrics.metrics": PUBLIC,
    "openapi.docs": PUBLIC,
    "openapi.document": PUBLIC,
    "static": PUBLIC,
    "webhooks.twilio_inbound_message": PUBLIC,
    "webhooks.twilio_status_callback": PUBLIC,
}


def init_auth(app: Flask) -> None:
    """Authenticate, check the scope and count the request before any view of an endpoint that needs a key."""
    app.before_request(_authorize_request)


def _authorize_request() -> None:
    endpoint = request.endpoint
    if endpoint is None:
        return  # no such route: 404/405 follow
    needed = ENDPOINT_SCOPES.get(endpoint)
    if needed is None:
        raise RuntimeError(f"endpoint {endpoint} is not in api.auth.ENDPOINT_SCOPES")
    if needed in (PUBLIC, DASHBOARD):
        return
    api_key = _authenticate()
    if not scope_allows(api_key.scope, needed):
        raise ApiProblem(
            403,
            f"This API key has the `{api_key.scope}` scope; this endpoint needs `{needed}`.",
            problem="insufficient-scope",
            scope=api_key.scope,
            required_scope=needed,
        )
    _count_request(api_key)


def _authenticate() -> ApiKey:
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise ApiProblem(
            401,
            "Send an API key as `Authorization: Bearer <key>`.",
            headers={"WWW-Authenticate": 'Bearer realm="bulksms"'},
        )
    api_key = authenticate_api_key(db_session(), presented.strip())
    if api_key is None:
        raise ApiProblem(
            401,
            "The API key is unknown or revoked.",
            headers={"WWW-Authenticate": 'Bearer realm="bulksms", error="invalid_token"'},
        )
    g.api_key = api_key
    return api_key


def _count_request(api_key: ApiKey) -> None:
    settings = services().settings
    limit = (
        api_key.rate_limit_per_minute if api_key.rate_limit_per_minute is not None else settings.rate_limit_per_minute
    )
    try:
        key_limits().take_request(api_key.id, limit)
    except LimitExceeded as exceeded:
        raise too_many_requests(exceeded) from None
    except redis.exceptions.RedisError as error:
        # Requests are served while Redis is away (reads need only PostgreSQL); intake refuses on its own then.
        logger.warning("request rate limit not checked, Redis unavailable: %s", type(error).__name__)


def key_limits() -> KeyLimits:
    if "key_limits" not in g:
        g.key_limits = KeyLimits(services().redis_client)
    limits: KeyLimits = g.key_limits
    return limits


def too_many_requests(exceeded: LimitExceeded) -> ApiProblem:
    """429 problem+json with `Retry-After`: when the window that refused the request ends."""
    return ApiProblem(
        429,
        f"This API key is {exceeded}.",
        problem="rate-limited" if exceeded.what == "requests per minute" else "daily-limit",
        headers={"Retry-After": str(exceeded.retry_after_seconds)},
        limit=exceeded.limit,
        retry_after=exceeded.retry_after_seconds,
    )


def require_api_key() -> ApiKey:
    """The authenticated key of this request (checked before the view ran)."""
    api_key: ApiKey | None = g.get("api_key")
    if api_key is None:  # a view of an endpoint marked public asked for a key: a bug, never served without one
        raise RuntimeError(f"{request.endpoint} needs a key but api.auth.ENDPOINT_SCOPES marks it {PUBLIC}")
    return api_key
