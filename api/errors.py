"""Every error the API returns is `application/problem+json` (RFC 9457): type, title, status,
detail, and `errors` per field where a request failed validation. Never a stack trace.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import kombu.exceptions
import redis.exceptions
from flask import Flask, Response, json, request
from marshmallow import ValidationError
from sqlalchemy.exc import InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

logger = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
# Problem types specific to this API; documented in docs/api.md. Plain HTTP errors use "about:blank".
PROBLEM_TYPE_BASE = "urn:bulksms:problem:"


class ApiProblem(Exception):
    """Raised by views to answer with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        problem: str | None = None,
        title: str | None = None,
        errors: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.problem_type = PROBLEM_TYPE_BASE + problem if problem else "about:blank"
        self.title = title or HTTPStatus(status).phrase
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra


def problem_response(
    status: int,
    detail: str,
    *,
    problem_type: str = "about:blank",
    title: str | None = None,
    errors: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    document: dict[str, Any] = {
        "type": problem_type,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        document["errors"] = errors
    document.update(extra or {})
    response = Response(json.dumps(document), status=status, content_type=PROBLEM_CONTENT_TYPE)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _api_problem(error: ApiProblem) -> Response:
    return problem_response(
        error.status,
        error.detail,
        problem_type=error.problem_type,
        title=error.title,
        errors=error.errors,
        headers=error.headers,
        extra=error.extra,
    )


def _http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    headers = {name: value for name, value in error.get_headers() if name.lower() != "content-type"}
    if status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    detail = error.description or HTTPStatus(status).phrase
    if status == 413:
        detail = "The request body is larger than this server accepts."
    return problem_response(status, detail, headers=headers)


def _validation_error(error: ValidationError) -> Response:
    messages = error.messages if isinstance(error.messages, dict) else {"_schema": error.messages}
    return problem_response(
        422,
        "The request body failed validation; see `errors`.",
        problem_type=PROBLEM_TYPE_BASE + "validation",
        errors=messages,
    )


def _dependency_unavailable(error: Exception) -> Response:
    dependency = "PostgreSQL" if isinstance(error, OperationalError | InterfaceError) else "Redis"
    logger.warning("%s unreachable during %s %s: %s", dependency, request.method, request.path, type(error).__name__)
    return problem_response(
        503,
        f"{dependency} is unreachable, so the request was not carried out (nothing was stored). Retry later.",
        problem_type=PROBLEM_TYPE_BASE + "dependency-unavailable",
        headers={"Retry-After": "5"},
    )


def _unexpected(error: Exception) -> Response:
    logger.exception("unhandled error during %s %s", request.method, request.path)
    return problem_response(500, "An unexpected error occurred; it has been logged.")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ApiProblem, _api_problem)
    app.register_error_handler(HTTPException, _http_exception)
    app.register_error_handler(ValidationError, _validation_error)
    for dependency_error in (
        OperationalError,
        InterfaceError,
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        kombu.exceptions.OperationalError,
    ):
        app.register_error_handler(dependency_error, _dependency_unavailable)
    app.register_error_handler(Exception, _unexpected)
