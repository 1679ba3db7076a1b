"""Liveness (`/healthz`, no I/O) and readiness (`/readyz`: PostgreSQL, Redis, migrations at head)."""

from __future__ import annotations

import logging

import redis.exceptions
from flask import Blueprint, Response, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from api.context import services
from api.errors import PROBLEM_TYPE_BASE, problem_response
from shared.platform.migrate import is_at_head

logger = logging.getLogger(__name__)

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


def _check_postgres() -> dict[str, str]:
    """The database check and, when it is reachable, the migrations check."""
    try:
        with services().engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as error:
        logger.warning("readiness: PostgreSQL unreachable: %s", type(error).__name__)
        return {"postgres": "unreachable", "migrations": "unknown"}
    try:
        migrations = "ok" if is_at_head(services().engine) else "not at head: run `bulksms migrate`"
    except SQLAlchemyError:
        migrations = "unknown"
    return {"postgres": "ok", "migrations": migrations}


def _check_redis() -> str:
    try:
        services().redis_client.ping()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
        logger.warning("readiness: Redis unreachable: %s", type(error).__name__)
        return "unreachable"
    return "ok"


@blueprint.get("/readyz")
def readyz() -> Response:
    checks = {**_check_postgres(), "redis": _check_redis()}
    if all(result == "ok" for result in checks.values()):
        return jsonify({"status": "ready", "checks": checks})
    failed = ", ".join(name for name, result in checks.items() if result != "ok")
    return problem_response(
        503, f"Not ready: {failed}.", problem_type=PROBLEM_TYPE_BASE + "not-ready", extra={"checks": checks}
    )
