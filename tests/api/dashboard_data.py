"""Broadcasts in a known situation for the dashboard tests: rows written directly, no worker involved."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.platform.api_keys import create_api_key
from shared.platform.models import ApiKey, Broadcast, BroadcastStatus
from tests.factories import create_broadcast, numbers

# What `seed_broadcast` does to a 100-recipient broadcast, by position in the list (first..last, exclusive).
SEEDED_STATES = (
    (0, 40, "delivered", None),
    (40, 60, "sent", None),
    (60, 70, "failed", 21610),
    (70, 78, "undelivered", 30007),
    (78, 82, "undelivered", 30005),
    (82, 84, "failed", 39999),  # a code the table has no notes on
    (84, 100, "pending", None),
)


@dataclass(frozen=True)
class SignedKey:
    api_key: ApiKey
    plaintext: str


def new_key(session: Session, name: str) -> SignedKey:
    api_key, plaintext = create_api_key(session, name)
    return SignedKey(api_key, plaintext)


def seed_broadcast(
    session: Session,
    api_key: ApiKey,
    *,
    status: str = BroadcastStatus.SENDING,
    body: str = "Polling stations are open until 10pm today.",
    started: datetime | None = None,
) -> Broadcast:
    """100 recipients: 40 delivered, 20 sent, 10 failed 21610, 8 undelivered 30007, 4 undelivered 30005,
    2 failed 39999, 16 pending. Sends spread over 3 minutes from `started`, receipts 20 s after each send."""
    started = started or datetime.now(UTC) - timedelta(minutes=4)
    broadcast = create_broadcast(session, numbers(100), body=body, api_key=api_key)
    first_id = session.execute(
        text("SELECT min(id) FROM messages WHERE broadcast_id = :id"), {"id": broadcast.id}
    ).scalar_one()
    for first, last, state, code in SEEDED_STATES:
        sent = state != "pending"
        receipt = state in ("delivered", "undelivered")
        session.execute(
            text(
                "UPDATE messages SET state = :state, error_code = :code, attempts = CASE WHEN :sent THEN 1 ELSE 0 END, "
                "sent_at = CASE WHEN :sent THEN :started + make_interval(secs => (id - :first_id) * 1.8) END, "
                "last_receipt_at = CASE WHEN :receipt "
                "    THEN :started + make_interval(secs => (id - :first_id) * 1.8 + 20) END "
                "WHERE broadcast_id = :id AND id >= :low AND id < :high"
            ),
            {
                "state": state,
                "code": code,
                "sent": sent,
                "receipt": receipt,
                "started": started,
                "first_id": first_id,
                "id": broadcast.id,
                "low": first_id + first,
                "high": first_id + last,
            },
        )
    finished = status not in (BroadcastStatus.QUEUED, BroadcastStatus.SENDING, BroadcastStatus.SUBMITTED)
    session.execute(
        text(
            "UPDATE broadcasts SET status = :status, first_send_at = :started, "
            "last_send_at = :started + interval '150 seconds', "
            "last_receipt_at = :started + interval '170 seconds', "
            "completed_at = CASE WHEN :finished THEN :started + interval '200 seconds' END WHERE id = :id"
        ),
        {"status": status, "started": started, "finished": finished, "id": broadcast.id},
    )
    session.commit()
    session.refresh(broadcast)
    return broadcast
