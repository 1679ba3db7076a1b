"""The tables: broadcasts, one row per recipient message, API keys.

The schema itself is created only by the Alembic migrations in `shared/migrations`; these classes must match them
(a test compares the two).
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class BroadcastStatus(enum.StrEnum):
    QUEUED = "queued"  # stored and enqueued, no recipient claimed yet
    SENDING = "sending"  # at least one chunk claimed
    SUBMITTED = "submitted"  # every recipient has a Twilio outcome (accepted, failed)


class MessageState(enum.StrEnum):
    PENDING = "pending"  # waiting for a chunk task to claim it
    SENDING = "sending"  # claimed by a worker; the Twilio request may be in flight
    ACCEPTED = "accepted"  # Twilio answered 201 and gave a SID
    FAILED = "failed"  # Twilio refused it permanently (error code and message recorded)
    UNKNOWN = "unknown"  # the request left but no answer came (timeout, 5xx): reconciled before any resend


# A message in one of these still owes the broadcast a Twilio outcome.
UNFINISHED_MESSAGE_STATES = (MessageState.PENDING, MessageState.SENDING, MessageState.UNKNOWN)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # The first characters of the key, stored in clear so a presented key is found with one indexed lookup;
    # the secret part is only ever stored as a SHA-256 digest.
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Broadcast(Base):
    __tablename__ = "broadcasts"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default=BroadcastStatus.QUEUED)
    encoding: Mapped[str] = mapped_column(String(10))
    characters: Mapped[int] = mapped_column(Integer)
    segments: Mapped[int] = mapped_column(Integer)
    recipients_received: Mapped[int] = mapped_column(Integer)
    recipients_accepted: Mapped[int] = mapped_column(Integer)
    recipients_duplicates: Mapped[int] = mapped_column(Integer)
    recipients_invalid: Mapped[int] = mapped_column(Integer)
    invalid_sample: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    chunk_size: Mapped[int] = mapped_column(Integer)
    chunk_count: Mapped[int] = mapped_column(Integer)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Set once every chunk task has been handed to the broker; NULL after a crash in between (the sweeper looks).
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    first_send_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_send_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_broadcasts_created_at_id", "created_at", "id"),
        Index(
            "uq_broadcasts_api_key_idempotency_key",
            "api_key_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        Index("ix_broadcasts_not_enqueued", "created_at", postgresql_where=text("enqueued_at IS NULL")),
    )


class Message(Base):
    """One recipient of one broadcast, and what happened to its send."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    # No foreign key on purpose: intake writes a broadcast and its recipients in one transaction and nothing
    # deletes broadcasts, while a per-row key check costs a quarter of the COPY of a 1,000,000-recipient list.
    broadcast_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    chunk_number: Mapped[int] = mapped_column(Integer)
    to_number: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(20), default=MessageState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    twilio_sid: Mapped[str | None] = mapped_column(String(34))
    twilio_status: Mapped[str | None] = mapped_column(String(20))
    error_code: Mapped[int | None] = mapped_column(Integer)
    error_message: Mapped[str | None] = mapped_column(Text)
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        # One index for three jobs: progress counts (index-only scan per state), a chunk task's claim of its
        # pending rows (broadcast, 'pending', chunk), and state-filtered paging (ids grow with chunk numbers).
        # A separate partial index for the claim would cost another ~1.5 s on a 1,000,000-recipient intake.
        Index("ix_messages_broadcast_state_chunk_id", "broadcast_id", "state", "chunk_number", "id"),
        # Unfiltered paging of one broadcast's messages.
        Index("ix_messages_broadcast_id_id", "broadcast_id", "id"),
        # Claims whose lease ran out (a worker died mid-send) and ambiguous sends, for the reconciler.
        Index(
            "ix_messages_needs_reconciliation",
            "claimed_until",
            postgresql_where=text("state IN ('sending', 'unknown')"),
        ),
        Index("uq_messages_twilio_sid", "twilio_sid", unique=True, postgresql_where=text("twilio_sid IS NOT NULL")),
    )
