"""The tables: broadcasts, one row per recipient message, API keys, status events, attempts, opt-outs.

The schema itself is created only by the Alembic migrations in `shared/platform/migrations`; these classes must match
them (a test compares the two).
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class BroadcastStatus(enum.StrEnum):
    QUEUED = "queued"  # stored and enqueued, no recipient claimed yet
    SENDING = "sending"  # at least one chunk claimed
    SUBMITTED = "submitted"  # every recipient has a Twilio outcome (accepted, failed)
    COMPLETED = "completed"  # every message final, or no receipt for the configured time
    SCHEDULED = "scheduled"  # stored with a future send_at; beat releases it
    PAUSED = "paused"  # no new send starts; resume continues
    CANCELED = "canceled"  # every unsent message canceled
    HELD = "held"  # no new send starts: a daily cap (resumes at held_until) or its circuit breaker (an operator)


class BroadcastPriority(enum.StrEnum):
    """A broadcast's share of the sending capacity, against the others sending at the same time (4:2:1)."""

    HIGH = "high"
    NORMAL = "normal"
    BULK = "bulk"


class MessageState(enum.StrEnum):
    PENDING = "pending"  # waiting for a chunk task to claim it
    SENDING = "sending"  # claimed by a worker; the Twilio request may be in flight
    ACCEPTED = "accepted"  # Twilio answered 201 and gave a SID
    FAILED = "failed"  # Twilio refused it permanently (error code and message recorded)
    UNKNOWN = "unknown"  # the request left but no answer came (timeout, 5xx): reconciled before any resend
    # After a status callback: the carrier's verdict on the current attempt.
    SENT = "sent"  # handed to the carrier, no final receipt yet
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    RETRY_SCHEDULED = "retry_scheduled"  # 30003/30008-style failure: a new attempt is due at retry_due_at
    SKIPPED = "skipped"  # never sent, with skip_reason (the number opted out, ...)
    CANCELED = "canceled"  # the broadcast was canceled before this message was sent
    EXPIRED = "expired"  # its broadcast's deadline passed before it could be sent: never sent


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
    # Signs the completion callback POSTed to a broadcast's callback_url (HMAC-SHA256); the client keeps a copy.
    signing_secret: Mapped[str | None] = mapped_column(String(64))
    # The country national numbers are read in for this key's broadcasts that name none (over DEFAULT_REGION),
    # and the countries its recipients may be in (within ALLOWED_COUNTRIES). Null: the settings alone decide.
    default_region: Mapped[str | None] = mapped_column(String(2))
    allowed_countries: Mapped[list[str] | None] = mapped_column(ARRAY(String(3)))
    # What the key may do (api/auth.py maps every endpoint to one): read < send < admin.
    scope: Mapped[str] = mapped_column(String(10), default="admin", server_default="admin")
    # A test key's broadcasts go to the test Twilio account (the simulator), never to the real one.
    is_test: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    # Null: the RATE_LIMIT_PER_MINUTE / DAILY_MESSAGE_LIMIT settings apply.
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer)
    daily_message_limit: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (CheckConstraint("scope IN ('send', 'read', 'admin')", name="ck_api_keys_scope"),)


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
    callback_url: Mapped[str | None] = mapped_column(Text)
    last_receipt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    callback_sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    callback_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # When the next completion-callback POST is due (beat enqueues it); NULL: none to make.
    callback_due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    media_urls: Mapped[list[str] | None] = mapped_column(JSONB)
    validity_period: Mapped[int | None] = mapped_column(Integer)
    smart_encoded: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    is_template: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    send_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    quiet_hours_start: Mapped[str | None] = mapped_column(String(5))  # "21:00", recipient's local time
    quiet_hours_end: Mapped[str | None] = mapped_column(String(5))
    max_segments: Mapped[int | None] = mapped_column(Integer)
    max_cost: Mapped[Decimal | None] = mapped_column(Numeric(14, 4))
    estimated_cost: Mapped[Decimal | None] = mapped_column(Numeric(14, 4))
    segments_total: Mapped[int | None] = mapped_column(BigInteger)
    segments_min: Mapped[int | None] = mapped_column(Integer)
    segments_max: Mapped[int | None] = mapped_column(Integer)
    recipients_opted_out: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    recipients_deferred: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    paused_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    canceled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # At the last pause or cancel: messages Twilio had accepted (or was being sent) and not yet reported sent,
    # which go out whatever we decide (at most TWILIO_QUEUE_MAX_SECONDS of traffic under pacing).
    queued_at_twilio_when_stopped: Mapped[int | None] = mapped_column(Integer)
    held_reason: Mapped[str | None] = mapped_column(Text)  # the cap or the codes and counts that tripped the breaker
    held_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # NULL: until an operator resumes
    held_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    client_reference: Mapped[str | None] = mapped_column(String(256))  # the caller's own id for the broadcast
    # Retention removed its body, its recipients' numbers and template values (RETENTION_DAYS after completion).
    redacted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    default_region: Mapped[str | None] = mapped_column(String(2))  # national numbers were read in this country
    strict_numbers: Mapped[bool | None] = mapped_column(Boolean)  # numbers outside assigned ranges were refused
    recipients_by_country: Mapped[dict[str, int] | None] = mapped_column(JSONB)  # accepted recipients per ISO code
    # Accepted numbers libphonenumber does not know as assigned (fictional ranges aside).
    recipients_not_valid: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Its share of the sending capacity against other broadcasts (BroadcastPriority): the size of its chunk window.
    priority: Mapped[str] = mapped_column(String(10), default=BroadcastPriority.NORMAL, server_default="normal")
    # Nothing is sent after this time: what is left becomes `expired`, and Twilio's ValidityPeriod ends there.
    deadline: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Chunks 0 .. chunks_released - 1 have been handed to the broker (shared.sending.windows); the rest wait their
    # turn, a few at a time, so broadcasts sending at once share the workers.
    chunks_released: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Created with a test key: sent through the test Twilio account (the simulator), shown as test everywhere.
    test: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")

    __table_args__ = (
        Index("ix_broadcasts_created_at_id", "created_at", "id"),
        # One key's broadcasts with a given client_reference, newest first (the list filter).
        Index(
            "ix_broadcasts_client_reference",
            "api_key_id",
            "client_reference",
            "created_at",
            "id",
            postgresql_where=text("client_reference IS NOT NULL"),
        ),
        Index("ix_broadcasts_unfinished", "created_at", postgresql_where=text("completed_at IS NULL")),
        Index("ix_broadcasts_callback_due", "callback_due_at", postgresql_where=text("callback_due_at IS NOT NULL")),
        Index("ix_broadcasts_scheduled", "send_at", postgresql_where=text("status = 'scheduled'")),
        # Not unique: a key is honoured for 24 hours (an advisory lock serialises its requests), then may be reused.
        Index(
            "ix_broadcasts_api_key_idempotency_key",
            "api_key_id",
            "idempotency_key",
            "created_at",
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
    to_number: Mapped[str | None] = mapped_column(String(16))  # NULL: erased on request or by retention
    state: Mapped[str] = mapped_column(String(20), default=MessageState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Attempts Twilio answered with a rate or cap code (never transmitted): not counted as delivery attempts.
    uncounted_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    twilio_sid: Mapped[str | None] = mapped_column(String(34))
    twilio_status: Mapped[str | None] = mapped_column(String(20))
    error_code: Mapped[int | None] = mapped_column(Integer)
    error_message: Mapped[str | None] = mapped_column(Text)
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    retry_due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    final_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_receipt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    variables: Mapped[dict[str, str] | None] = mapped_column(JSONB)  # template values; rendered at send time
    not_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # quiet hours deferral
    skip_reason: Mapped[str | None] = mapped_column(String(40))

    __table_args__ = (
        Index(
            "ix_messages_deferred",
            "not_before",
            postgresql_where=text("state = 'pending' AND not_before IS NOT NULL"),
        ),
        Index("ix_messages_retry_due", "retry_due_at", postgresql_where=text("retry_due_at IS NOT NULL")),
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
        # Erasure on request finds a person's messages in every broadcast.
        Index("ix_messages_to_number", "to_number", postgresql_where=text("to_number IS NOT NULL")),
    )


class MessageCount(Base):
    """Net changes to how many of a broadcast's messages are in each state (and error code, for failed and
    undelivered ones): appended by triggers on `messages` in the writer's own transaction, summed by readers,
    folded together by `shared.messages.counts.compact`. Never written by application code otherwise."""

    __tablename__ = "message_counts"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    broadcast_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    state: Mapped[str] = mapped_column(String(20), nullable=False)
    error_code: Mapped[int | None] = mapped_column(Integer)
    messages: Mapped[int] = mapped_column(BigInteger, nullable=False)
    compacted: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")

    __table_args__ = (
        Index("ix_message_counts_broadcast_id", "broadcast_id"),
        Index("ix_message_counts_to_compact", "broadcast_id", postgresql_where=text("NOT compacted")),
    )


class MessageAttempt(Base):
    """An earlier attempt of a message that was retried: its SID keeps receiving late callbacks here."""

    __tablename__ = "message_attempts"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    message_id: Mapped[int] = mapped_column(BigInteger)
    attempt_number: Mapped[int] = mapped_column(Integer)
    twilio_sid: Mapped[str | None] = mapped_column(String(34))
    twilio_status: Mapped[str | None] = mapped_column(String(20))
    error_code: Mapped[int | None] = mapped_column(Integer)
    error_message: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    final_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    archived_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        UniqueConstraint("message_id", "attempt_number", name="uq_message_attempts_message_attempt"),
        Index(
            "uq_message_attempts_twilio_sid", "twilio_sid", unique=True, postgresql_where=text("twilio_sid IS NOT NULL")
        ),
    )


class StatusEvent(Base):
    """Every status callback Twilio sent us, kept as received (append-only); applied_at NULL = not matched yet."""

    __tablename__ = "status_events"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    message_sid: Mapped[str] = mapped_column(String(34))
    message_status: Mapped[str] = mapped_column(String(32))
    error_code: Mapped[int | None] = mapped_column(Integer)
    message_id: Mapped[int | None] = mapped_column(BigInteger)  # from our callback URL's query string
    attempt: Mapped[int | None] = mapped_column(Integer)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONB)
    stored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    applied_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Matched nothing for UNAPPLIED_RETRY_WINDOW: no longer retried (kept for a human until retention).
    abandoned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_status_events_message_sid", "message_sid"),
        Index("ix_status_events_unapplied", "id", postgresql_where=text("applied_at IS NULL AND abandoned_at IS NULL")),
        # Append-only in time order: a block-range index finds raw events past retention at almost no cost.
        Index("ix_status_events_received_at", "received_at", postgresql_using="brin"),
        # Erasure: the events of a person's messages, SID or not.
        Index("ix_status_events_message_id", "message_id", postgresql_where=text("message_id IS NOT NULL")),
    )


class OptedOutNumber(Base):
    """A number that must not be sent to (21610 from Twilio, or later a STOP reply)."""

    __tablename__ = "opted_out_numbers"

    phone_number: Mapped[str] = mapped_column(String(16), primary_key=True)
    source: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
