"""Helpers for tests that play Twilio: status callback parameters, signed the way Twilio signs them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from typing import Any

from shared.receipts.status_queue import QueuedCallback

CALLBACK_PATH = "/webhooks/twilio/status"


def twilio_signature(auth_token: str, url: str, parameters: Mapping[str, str]) -> str:
    """X-Twilio-Signature, computed independently of twilio-python: base64 HMAC-SHA1 of URL + sorted name/values."""
    data = url + "".join(name + parameters[name] for name in sorted(parameters))
    return base64.b64encode(hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def new_sid() -> str:
    return "SM" + secrets.token_hex(16)


def callback_parameters(
    sid: str,
    status: str,
    *,
    error_code: int | None = None,
    to: str = "+15555550100",
    account_sid: str = "AC" + "a1" * 16,
) -> dict[str, str]:
    parameters = {
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": status,
        "SmsStatus": status,
        "AccountSid": account_sid,
        "From": "+15005550006",
        "To": to,
        "ApiVersion": "2010-04-01",
    }
    if error_code is not None:
        parameters["ErrorCode"] = str(error_code)
    return parameters


def queued(
    sid: str,
    status: str,
    *,
    message_id: int | None = None,
    attempt: int | None = None,
    error_code: int | None = None,
    to: str = "+15555550100",
    received_at: float | None = None,
) -> QueuedCallback:
    """A callback as the webhook would have queued it (for tests of the consumer logic alone)."""
    parameters: dict[str, Any] = callback_parameters(sid, status, error_code=error_code, to=to)
    return QueuedCallback(
        entry_id=f"{time.time_ns()}-0",
        parameters=parameters,
        message_id=None if message_id is None else str(message_id),
        attempt=None if attempt is None else str(attempt),
        received_at=time.time() if received_at is None else received_at,
    )
