"""Delivery receipts: raw status events, archived attempts, delivery retries, opt-outs, broadcast completion.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "status_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("message_sid", sa.String(34), nullable=False),
        sa.Column("message_status", sa.String(32), nullable=False),
        sa.Column("error_code", sa.Integer()),
        sa.Column("message_id", sa.BigInteger()),
        sa.Column("attempt", sa.Integer()),
        sa.Column("parameters", postgresql.JSONB(), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_status_events_message_sid", "status_events", ["message_sid"])
    op.create_index(
        "ix_status_events_unapplied", "status_events", ["id"], postgresql_where=sa.text("applied_at IS NULL")
    )
    op.create_table(
        "message_attempts",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("message_id", sa.BigInteger(), nullable=False),
        sa.Column("attempt_number", sa.Integer(), nullable=False),
        sa.Column("twilio_sid", sa.String(34)),
        sa.Column("twilio_status", sa.String(20)),
        sa.Column("error_code", sa.Integer()),
        sa.Column("error_message", sa.Text()),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Column("final_at", sa.DateTime(timezone=True)),
        sa.Column("archived_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.UniqueConstraint("message_id", "attempt_number", name="uq_message_attempts_message_attempt"),
    )
    op.create_index(
        "uq_message_attempts_twilio_sid",
        "message_attempts",
        ["twilio_sid"],
        unique=True,
        postgresql_where=sa.text("twilio_sid IS NOT NULL"),
    )
    op.create_table(
        "opted_out_numbers",
        sa.Column("phone_number", sa.String(16), primary_key=True),
        sa.Column("source", sa.String(40), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.add_column("messages", sa.Column("retry_due_at", sa.DateTime(timezone=True)))
    op.add_column("messages", sa.Column("final_at", sa.DateTime(timezone=True)))
    op.add_column("messages", sa.Column("last_receipt_at", sa.DateTime(timezone=True)))
    op.create_index(
        "ix_messages_retry_due", "messages", ["retry_due_at"], postgresql_where=sa.text("retry_due_at IS NOT NULL")
    )
    op.add_column("broadcasts", sa.Column("callback_url", sa.Text()))
    op.add_column("broadcasts", sa.Column("last_receipt_at", sa.DateTime(timezone=True)))
    op.add_column("broadcasts", sa.Column("completed_at", sa.DateTime(timezone=True)))
    op.add_column("broadcasts", sa.Column("callback_sent_at", sa.DateTime(timezone=True)))
    op.add_column("broadcasts", sa.Column("callback_attempts", sa.Integer(), nullable=False, server_default="0"))
    op.create_index(
        "ix_broadcasts_unfinished", "broadcasts", ["created_at"], postgresql_where=sa.text("completed_at IS NULL")
    )
    op.add_column("api_keys", sa.Column("signing_secret", sa.String(64)))


def downgrade() -> None:
    op.drop_column("api_keys", "signing_secret")
    op.drop_index("ix_broadcasts_unfinished", table_name="broadcasts")
    for column in ("callback_attempts", "callback_sent_at", "completed_at", "last_receipt_at", "callback_url"):
        op.drop_column("broadcasts", column)
    op.drop_index("ix_messages_retry_due", table_name="messages")
    for column in ("last_receipt_at", "final_at", "retry_due_at"):
        op.drop_column("messages", column)
    op.drop_table("opted_out_numbers")
    op.drop_table("message_attempts")
    op.drop_table("status_events")
