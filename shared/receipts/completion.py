"""Completing broadcasts, and the signed completion callback to the client's `callback_url`.

Beat runs `complete_broadcasts` over the unfinished broadcasts (partial index ix_broadcasts_unfinished): one is
`completed` when every message is final (delivered, undelivered, failed), or when nothing is left to send and no
receipt came for COMPLETION_IDLE_SECONDS after it was submitted (the rest stay "sent, no receipt"). Each check is
a few EXISTS probes of the (broadcast_id, state, ...) index. Completion happens once (guarded by
`completed_at IS NULL`), and it makes the callback due (`broadcasts.callback_due_at`). Beat enqueues every due
callback as `sms.notify_completion` on its own queue (`sms.callbacks`), which POSTs the summary signed with the API
key's signing secret (`X-Bulksms-Signature`, docs/api.md) through shared.platform.outbound (checked, pinned
address, one deadline). Each attempt first pushes the due time past its own lease, and a failure sets the next due
time: retries wait in PostgreSQL, so a worker killed mid-POST or a lost task only delays the callback.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from shared.broadcasts import store as broadcast_store
from shared.broadcasts.options import View, shown_columns, shown_values
from shared.broadcasts.progress import AWAITING_RECEIPT_STATES, broadcast_progress
from shared.platform.db import session_scope
from shared.platform.models import BroadcastStatus, MessageState
from shared.platform.outbound import UnsafeDestinationError, post_with_deadline

logger = logging.getLogger(__name__)

# Work is still to be done for these: a send, a reconciliation, or a delivery retry.
WORK_LEFT_STATES = (MessageState.PENDING, MessageState.SENDING, MessageState.UNKNOWN, MessageState.RETRY_SCHEDULED)
COMPLETION_BATCH_SIZE = 1_000

SIGNATURE_HEADER = "X-Bulksms-Signature"
SIGNATURE_TOLERANCE_SECONDS = 300
# Waits before the 2nd, 3rd, ... POST of a completion callback; after the last one the callback is given up.
CALLBACK_RETRY_DELAYS_SECONDS = (10, 30, 60, 300, 900, 1800)
CALLBACK_MAX_ATTEMPTS = len(CALLBACK_RETRY_DELAYS_SECONDS) + 1


@dataclass(frozen=True, slots=True)
class CompletedBroadcast:
    id: uuid.UUID
    callback_url: str | None


def complete_broadcasts(
    session: Session, idle_seconds: float, limit: int = COMPLETION_BATCH_SIZE
) -> list[CompletedBroadcast]:
    """Mark `completed` every unfinished broadcast that is done (caller commits, then notifies).

    A canceled broadcast keeps its status (canceled and skipped messages count as final); a scheduled or
    paused one is never completed; a row being recorded is skipped this time, never waited for.
    """
    completed = broadcast_store.complete_finished(
        session,
        idle_seconds,
        limit,
        work_left_states=[state.value for state in WORK_LEFT_STATES],
        awaiting_receipt_states=[state.value for state in AWAITING_RECEIPT_STATES],
    )
    return [CompletedBroadcast(broadcast_id, callback_url) for broadcast_id, callback_url in completed]


def due_completion_callbacks(session: Session) -> list[uuid.UUID]:
    """Completed broadcasts whose callback POST is due: just completed, a retry whose wait ended, or an attempt
    whose worker died (its lease ran out)."""
    return broadcast_store.due_callbacks(session)


SUMMARY_COLUMNS = (
    "id",
    "status",
    "test",
    "recipients_accepted",
    "created_at",
    "first_send_at",
    "last_send_at",
    "last_receipt_at",
    "submitted_at",
    "completed_at",
)


def _timestamp(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def completion_summary(session: Session, broadcast_id: uuid.UUID) -> dict[str, Any] | None:
    """The JSON document POSTed to `callback_url`: the broadcast's final counts, rates, error codes and timing,
    and the options it echoes (shared.broadcasts.options)."""
    columns = ", ".join((*SUMMARY_COLUMNS, *shown_columns(View.COMPLETION_CALLBACK)))
    broadcast = session.execute(
        text(f"SELECT {columns} FROM broadcasts WHERE id = :id"),  # noqa: S608 - declared names, never a request's
        {"id": broadcast_id},
    ).one_or_none()
    if broadcast is None:
        return None
    progress = broadcast_progress(session, broadcast_id)
    return {
        "event": "broadcast.completed",
        "broadcast": {
            "id": str(broadcast.id),
            "status": broadcast.status,
            "test": bool(broadcast.test),  # a test key's broadcast: sent to the test account, never to a phone
            "completion": completion_reason(broadcast.status, progress.awaiting_receipt),
            "messages": {"total": progress.total, **progress.counts},
            "progress": progress.summary(),
            "sent_no_receipt": progress.awaiting_receipt,
            "error_codes": progress.error_code_list(),
            "created_at": _timestamp(broadcast.created_at),
            "first_send_at": _timestamp(broadcast.first_send_at),
            "last_send_at": _timestamp(broadcast.last_send_at),
            "last_receipt_at": _timestamp(broadcast.last_receipt_at),
            "submitted_at": _timestamp(broadcast.submitted_at),
            "completed_at": _timestamp(broadcast.completed_at),
            **shown_values(broadcast, View.COMPLETION_CALLBACK),
        },
    }


def completion_reason(status: str, awaiting_receipt: int) -> str | None:
    """`all_final`, `no_receipt_timeout` (some messages never got a receipt), or None while not completed."""
    if status != BroadcastStatus.COMPLETED:
        return None
    return "no_receipt_timeout" if awaiting_receipt else "all_final"


# ------------------------------------------------------------------------------------------- the signature


def sign_callback(signing_secret: str, body: bytes, timestamp: int) -> str:
    """`t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, the value of X-Bulksms-Signature."""
    digest = hmac.new(signing_secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_callback_signature(
    signing_secret: str,
    body: bytes,
    header: str | None,
    *,
    tolerance_seconds: float = SIGNATURE_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """True when `header` signs `body` with `signing_secret` and its time is within the tolerance of `now`."""
    if not header:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_seconds:
        return False
    expected = sign_callback(signing_secret, body, timestamp).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


# -------------------------------------------------------------------------------------- the callback POST


@dataclass(frozen=True, slots=True)
class CallbackAttempt:
    outcome: str  # "sent", "failed" (due again later), "given_up", "nothing_to_do"
    attempt: int = 0
    detail: str = ""


def deliver_completion_callback(
    session_factory: sessionmaker[Session],
    broadcast_id: uuid.UUID,
    *,
    deadline_seconds: float,
    allow_private: bool,
    max_attempts: int = CALLBACK_MAX_ATTEMPTS,
) -> CallbackAttempt:
    """POST the signed summary to the broadcast's callback_url once, if it is due; record the attempt, then
    success or when to try again."""
    with session_scope(session_factory) as session:
        row = session.execute(
            text(
                "SELECT b.callback_url, b.callback_attempts, k.signing_secret, "
                "b.callback_due_at <= now() AS due FROM broadcasts b JOIN api_keys k ON k.id = b.api_key_id "
                "WHERE b.id = :id AND b.completed_at IS NOT NULL AND b.callback_sent_at IS NULL "
                "AND b.callback_url IS NOT NULL FOR UPDATE OF b"
            ),
            {"id": broadcast_id},
        ).one_or_none()
        # Not due: delivered, given up, or another task (a duplicate enqueue) holds this attempt.
        if row is None or not row.due:
            return CallbackAttempt("nothing_to_do")
        if row.callback_attempts >= max_attempts:
            broadcast_store.schedule_callback(session, broadcast_id, None)
            return CallbackAttempt("given_up", row.callback_attempts, "no attempts left")
        if not row.signing_secret:
            # The API refuses a callback_url for such keys; a key edited by hand afterwards ends here.
            logger.error("broadcast %s: its API key has no signing secret; completion callback dropped", broadcast_id)
            broadcast_store.schedule_callback(session, broadcast_id, None)
            return CallbackAttempt("given_up", row.callback_attempts, "API key without signing secret")
        attempt = row.callback_attempts + 1
        broadcast_store.start_callback_attempt(
            session, broadcast_id, attempt, lease_seconds=deadline_seconds + callback_retry_delay(attempt)
        )
        summary = completion_summary(session, broadcast_id)
    assert summary is not None
    body = json.dumps(summary, separators=(",", ":")).encode("utf-8")
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "bulksms-completion-callback",
        SIGNATURE_HEADER: sign_callback(row.signing_secret, body, int(time.time())),
    }
    try:
        response = post_with_deadline(
            row.callback_url, body, headers, deadline_seconds=deadline_seconds, allow_private=allow_private
        )
        ok, detail = 200 <= response.status < 300, f"HTTP {response.status}"
    except UnsafeDestinationError as error:
        ok, detail = False, str(error)
    except TimeoutError:
        ok, detail = False, f"no response within {deadline_seconds:g}s"
    except (OSError, http.client.HTTPException) as error:
        ok, detail = False, type(error).__name__
    with session_scope(session_factory) as session:
        if ok:
            broadcast_store.mark_callback_sent(session, broadcast_id)
        else:
            next_delay = None if attempt >= max_attempts else callback_retry_delay(attempt)
            broadcast_store.schedule_callback(session, broadcast_id, next_delay)
    if ok:
        logger.info("broadcast %s: completion callback delivered (attempt %d)", broadcast_id, attempt)
        return CallbackAttempt("sent", attempt, detail)
    if attempt >= max_attempts:
        logger.error(
            "broadcast %s: completion callback failed %d times (last: %s); giving up", broadcast_id, attempt, detail
        )
        return CallbackAttempt("given_up", attempt, detail)
    logger.warning("broadcast %s: completion callback attempt %d failed (%s)", broadcast_id, attempt, detail)
    return CallbackAttempt("failed", attempt, detail)


def callback_retry_delay(attempt: int) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based)."""
    return float(CALLBACK_RETRY_DELAYS_SECONDS[min(attempt, len(CALLBACK_RETRY_DELAYS_SECONDS)) - 1])
