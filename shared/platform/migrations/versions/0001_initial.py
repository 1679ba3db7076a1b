"""Broadcasts, recipient messages and API keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), sa.Identity(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False, unique=True),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "broadcasts",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("api_key_id", sa.Integer(), sa.ForeignKey("api_keys.id"), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("encoding", sa.String(10), nullable=False),
        sa.Column("characters", sa.Integer(), nullable=False),
        sa.Column("segments", sa.Integer(), nullable=False),
        sa.Column("recipients_received", sa.Integer(), nullable=False),
        sa.Column("recipients_accepted", sa.Integer(), nullable=False),
        sa.Column("recipients_duplicates", sa.Integer(), nullable=False),
        sa.Column("recipients_invalid", sa.Integer(), nullable=False),
        sa.Column("invalid_sample", postgresql.JSONB(), nullable=False),
        sa.Column("chunk_size", sa.Integer(), nullable=False),
        sa.Column("chunk_count", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(255)),
        sa.Column("request_fingerprint", sa.String(64)),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("enqueued_at", sa.DateTime(timezone=True)),
        sa.Column("first_send_at", sa.DateTime(timezone=True)),
        sa.Column("last_send_at", sa.DateTime(timezone=True)),
        sa.Column("submitted_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_broadcasts_created_at_id", "broadcasts", ["created_at", "id"])
    op.create_index(
        "uq_broadcasts_api_key_idempotency_key",
        "broadcasts",
        ["api_key_id", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.create_index(
        "ix_broadcasts_not_enqueued", "broadcasts", ["created_at"], postgresql_where=sa.text("enqueued_at IS NULL")
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        # No foreign key: see shared/platform/models.py (it costs a quarter of a 1,000,000-row intake).
        sa.Column("broadcast_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("chunk_number", sa.Integer(), nullable=False),
        sa.Column("to_number", sa.String(16), nullable=False),
        sa.Column("state", sa.String(20), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("twilio_sid", sa.String(34)),
        sa.Column("twilio_status", sa.String(20)),
        sa.Column("error_code", sa.Integer()),
        sa.Column("error_message", sa.Text()),
        sa.Column("claimed_until", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_index("ix_messages_broadcast_state_chunk_id", "messages", ["broadcast_id", "state", "chunk_number", "id"])
    op.create_index("ix_messages_broadcast_id_id", "messages", ["broadcast_id", "id"])
    op.create_index(
        "ix_messages_needs_reconciliation",
        "messages",
        ["claimed_until"],
        postgresql_where=sa.text("state IN ('sending', 'unknown')"),
    )
    op.create_index(
        "uq_messages_twilio_sid",
        "messages",
        ["twilio_sid"],
        unique=True,
        postgresql_where=sa.text("twilio_sid IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_table("messages")
    op.drop_table("broadcasts")
    op.drop_table("api_keys")
