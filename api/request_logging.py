"""Request ids and one log line per request.

Each request gets an id, from `X-Request-Id` when the caller (or a proxy) sends a sensible one, else a new one;
it is echoed in the response's `X-Request-Id` and carried by every log line written while the request runs.
"""

from __future__ import annotations

import logging
import re
import time

from flask import Flask, Response, g, request

from shared.platform.logging_config import bind_log_context, clear_log_context, new_request_id

logger = logging.getLogger("api.requests")

REQUEST_ID_HEADER = "X-Request-Id"
# Accepted from outside only when short and plain: a request id ends up in logs and response headers.
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def _start_request() -> None:
    presented = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = presented if REQUEST_ID_PATTERN.fullmatch(presented) else new_request_id()
    clear_log_context()  # a worker thread serves many requests: nothing may leak from the previous one
    bind_log_context(request_id=request_id)
    g.request_id = request_id
    g.request_started = time.perf_counter()


def _finish_request(response: Response) -> Response:
    request_id = g.get("request_id")
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id
    started = g.get("request_started")
    logger.info(
        "%s %s %d",
        request.method,
        request.path,
        response.status_code,
        extra={
            "http_method": request.method,
            "path": request.path,
            "status": response.status_code,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1) if started is not None else None,
        },
    )
    return response


def _forget_request(_error: BaseException | None = None) -> None:
    clear_log_context()


def init_request_logging(app: Flask) -> None:
    """Give every request of `app` an id (header and logs) and log one line when it is answered."""
    app.before_request(_start_request)
    app.after_request(_finish_request)
    app.teardown_request(_forget_request)
