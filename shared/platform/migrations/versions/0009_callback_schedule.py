"""Completion callbacks retried from PostgreSQL: when the next POST is due (a worker killed mid-POST loses
nothing: the attempt's lease runs out and beat enqueues it again).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Null: no POST to make (no callback_url, delivered, given up, or the broadcast is not completed yet).
    op.add_column("broadcasts", sa.Column("callback_due_at", sa.DateTime(timezone=True)))
    op.create_index(
        "ix_broadcasts_callback_due",
        "broadcasts",
        ["callback_due_at"],
        postgresql_where=sa.text("callback_due_at IS NOT NULL"),
    )
    # Completed broadcasts whose callback is still to be delivered are due now.
    op.execute(
        "UPDATE broadcasts SET callback_due_at = now() WHERE callback_url IS NOT NULL AND completed_at IS NOT NULL "
        "AND callback_sent_at IS NULL AND callback_attempts < 7"
    )


def downgrade() -> None:
    op.drop_index("ix_broadcasts_callback_due", table_name="broadcasts")
    op.drop_column("broadcasts", "callback_due_at")
