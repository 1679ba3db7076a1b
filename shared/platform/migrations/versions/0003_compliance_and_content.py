"""Compliance and content: MMS and Twilio options, templates, scheduling, quiet hours, pause/cancel, opt-out counts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("broadcasts", sa.Column("media_urls", postgresql.JSONB()))
    op.add_column("broadcasts", sa.Column("validity_period", sa.Integer()))
    op.add_column("broadcasts", sa.Column("smart_encoded", sa.Boolean(), nullable=False, server_default="false"))
    op.add_column("broadcasts", sa.Column("is_template", sa.Boolean(), nullable=False, server_default="false"))
    op.add_column("broadcasts", sa.Column("send_at", sa.DateTime(timezone=True)))
    op.add_column("broadcasts", sa.Column("quiet_hours_start", sa.String(5)))
    op.add_column("broadcasts", sa.Column("quiet_hours_end", sa.String(5)))
    op.add_column("broadcasts", sa.Column("max_segments", sa.Integer()))
    op.add_column("broadcasts", sa.Column("max_cost", sa.Numeric(14, 4)))
    op.add_column("broadcasts", sa.Column("estimated_cost", sa.Numeric(14, 4)))
    op.add_column("broadcasts", sa.Column("segments_total", sa.BigInteger()))
    op.add_column("broadcasts", sa.Column("segments_min", sa.Integer()))
    op.add_column("broadcasts", sa.Column("segments_max", sa.Integer()))
    op.add_column("broadcasts", sa.Column("recipients_opted_out", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("broadcasts", sa.Column("recipients_deferred", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("broadcasts", sa.Column("paused_at", sa.DateTime(timezone=True)))
    op.add_column("broadcasts", sa.Column("canceled_at", sa.DateTime(timezone=True)))
    op.create_index(
        "ix_broadcasts_scheduled", "broadcasts", ["send_at"], postgresql_where=sa.text("status = 'scheduled'")
    )
    op.add_column("messages", sa.Column("variables", postgresql.JSONB()))
    op.add_column("messages", sa.Column("not_before", sa.DateTime(timezone=True)))
    op.add_column("messages", sa.Column("skip_reason", sa.String(40)))
    op.create_index(
        "ix_messages_deferred",
        "messages",
        ["not_before"],
        postgresql_where=sa.text("state = 'pending' AND not_before IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_deferred", table_name="messages")
    for column in ("skip_reason", "not_before", "variables"):
        op.drop_column("messages", column)
    op.drop_index("ix_broadcasts_scheduled", table_name="broadcasts")
    for column in (
        "canceled_at",
        "paused_at",
        "recipients_deferred",
        "recipients_opted_out",
        "segments_max",
        "segments_min",
        "segments_total",
        "estimated_cost",
        "max_cost",
        "max_segments",
        "quiet_hours_end",
        "quiet_hours_start",
        "send_at",
        "is_template",
        "smart_encoded",
        "validity_period",
        "media_urls",
    ):
        op.drop_column("broadcasts", column)
