"""Bearer API keys: every /v1 endpoint needs `Authorization: Bearer bsk_...` of a key that is not revoked."""

from __future__ import annotations

from flask import g, request

from api.context import db_session
from api.errors import ApiProblem
from shared.platform.api_keys import authenticate_api_key
from shared.platform.models import ApiKey


def require_api_key() -> ApiKey:
    """The authenticated key of this request; 401 with `WWW-Authenticate: Bearer` otherwise."""
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
