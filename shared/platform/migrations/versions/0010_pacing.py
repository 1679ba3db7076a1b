"""Pacing: how many of a broadcast's messages Twilio still held queued when it was paused or canceled; why and
until when a broadcast is `held` (a daily cap, its circuit breaker); attempts that do not count as delivery
attempts (rate and cap answers).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("broadcasts", sa.Column("queued_at_twilio_when_stopped", sa.Integer()))
    op.add_column("broadcasts", sa.Column("held_reason", sa.Text()))
    op.add_column("broadcasts", sa.Column("held_until", sa.DateTime(timezone=True)))
    op.add_column("broadcasts", sa.Column("held_at", sa.DateTime(timezone=True)))
    op.add_column("messages", sa.Column("uncounted_attempts", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_column("messages", "uncounted_attempts")
    op.drop_column("broadcasts", "held_at")
    op.drop_column("broadcasts", "held_until")
    op.drop_column("broadcasts", "held_reason")
    op.drop_column("broadcasts", "queued_at_twilio_when_stopped")
