"""Operator-issued API keys: `bsk_<prefix>_<secret>`, stored as the prefix and a SHA-256 digest of
the whole key.

The plaintext is shown once, when the key is created. A presented key is found by its prefix (one
indexed lookup) and checked with a constant-time comparison of digests; revoked keys are refused.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Collection
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.compliance.phone_numbers import check_country_codes, check_default_region
from shared.platform.models import ApiKey

KEY_SCHEME = "bsk"
PREFIX_LENGTH = 8  # hex characters: found in clear in the database, never enough to authenticate
SECRET_BYTES = 32  # 43 url-safe characters
SIGNING_SECRET_BYTES = 32  # 64 hex characters (HMAC-SHA256 key of the completion callbacks)
# What a key may do, each including the ones before it: read (GET only) < send (create and control broadcasts)
# < admin (opt-out list, erasure). api/auth.py says which scope each endpoint needs.
SCOPES = ("read", "send", "admin")
# Compared against when no key has the presented prefix: an unknown prefix costs the same comparison.
_NO_SUCH_KEY_DIGEST = "0" * 64


def _digest(presented: str) -> str:
    return hashlib.sha256(presented.encode("utf-8")).hexdigest()


def _split_key(presented: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed key, None for anything else."""
    parts = presented.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_SCHEME:
        return None
    prefix, secret = parts[1], parts[2]
    if len(prefix) != PREFIX_LENGTH or not secret:
        return None
    return prefix, secret


def create_api_key(
    session: Session,
    name: str,
    *,
    default_region: str | None = None,
    allowed_countries: Collection[str] | None = None,
    scope: str = "send",
    is_test: bool = False,
    rate_limit_per_minute: int | None = None,
    daily_message_limit: int | None = None,
) -> tuple[ApiKey, str]:
    """Create and commit a key named `name`; return it with its plaintext, which is not stored anywhere.

    The key also gets a `signing_secret` (returned on the ApiKey): completion callbacks are signed with it, so it
    is stored in clear and handed to the client once, with the key. `default_region` and `allowed_countries` (ISO
    codes; ValueError for an unknown one) apply to the recipients of its broadcasts, over the settings. `scope` is
    one of SCOPES; `is_test` sends its broadcasts through the test account; the limits override the settings'.
    """
    check_scope(scope)
    check_limits(rate_limit_per_minute, daily_message_limit)
    region = check_default_region(default_region)
    countries = sorted(check_country_codes(allowed_countries)) if allowed_countries is not None else None
    while True:
        prefix = secrets.token_hex(PREFIX_LENGTH // 2)
        if session.scalar(select(ApiKey.id).where(ApiKey.prefix == prefix)) is None:
            break
    plaintext = f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"
    api_key = ApiKey(
        name=name,
        prefix=prefix,
        secret_hash=_digest(plaintext),
        signing_secret=secrets.token_hex(SIGNING_SECRET_BYTES),
        default_region=region,
        allowed_countries=countries,
        scope=scope,
        is_test=is_test,
        rate_limit_per_minute=rate_limit_per_minute,
        daily_message_limit=daily_message_limit,
    )
    session.add(api_key)
    session.commit()
    return api_key, plaintext


def check_scope(scope: str) -> None:
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}: one of {', '.join(SCOPES)}")


def check_limits(*limits: int | None) -> None:
    if any(limit is not None and limit < 0 for limit in limits):
        raise ValueError("a limit is a number of requests or recipients, 0 or more")


def scope_allows(granted: str, needed: str) -> bool:
    """True when a key of scope `granted` may call an endpoint that needs `needed`."""
    return SCOPES.index(granted) >= SCOPES.index(needed)


_UNCHANGED: object = object()


def update_api_key(
    session: Session,
    key_id: int,
    *,
    scope: str | None = None,
    rate_limit_per_minute: int | object | None = _UNCHANGED,
    daily_message_limit: int | object | None = _UNCHANGED,
) -> ApiKey | None:
    """Change a key's scope or limits (None for a limit: back to the setting) and commit; None when no such key.
    A key's test flag never changes: a test key's broadcasts would otherwise start reaching real phones."""
    api_key = session.get(ApiKey, key_id)
    if api_key is None:
        return None
    if scope is not None:
        check_scope(scope)
        api_key.scope = scope
    if rate_limit_per_minute is not _UNCHANGED:
        assert rate_limit_per_minute is None or isinstance(rate_limit_per_minute, int)
        check_limits(rate_limit_per_minute)
        api_key.rate_limit_per_minute = rate_limit_per_minute
    if daily_message_limit is not _UNCHANGED:
        assert daily_message_limit is None or isinstance(daily_message_limit, int)
        check_limits(daily_message_limit)
        api_key.daily_message_limit = daily_message_limit
    session.commit()
    return api_key


def authenticate_api_key(session: Session, presented: str) -> ApiKey | None:
    """The active key matching `presented`, or None (unknown, malformed, wrong secret or revoked)."""
    parts = _split_key(presented)
    api_key = None
    if parts is not None:
        api_key = session.scalar(select(ApiKey).where(ApiKey.prefix == parts[0]))
    expected = api_key.secret_hash if api_key is not None else _NO_SUCH_KEY_DIGEST
    matches = hmac.compare_digest(expected.encode("ascii"), _digest(presented).encode("ascii"))
    if api_key is None or not matches or api_key.revoked_at is not None:
        return None
    return api_key


def list_api_keys(session: Session) -> list[ApiKey]:
    """Every key, revoked ones included, oldest first."""
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def revoke_api_key(session: Session, key_id: int) -> bool:
    """Revoke and commit; False when no such key exists. Revoking twice keeps the first revocation time."""
    api_key = session.get(ApiKey, key_id)
    if api_key is None:
        return False
    if api_key.revoked_at is None:
        api_key.revoked_at = datetime.now(UTC)
        session.commit()
    return True


# The name docs/architecture.md uses.
authenticate = authenticate_api_key
