"""Fair sharing and deadlines: a broadcast's priority, its deadline, and how many of its chunks were released.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("broadcasts", sa.Column("priority", sa.String(10), nullable=False, server_default="normal"))
    op.add_column("broadcasts", sa.Column("deadline", sa.DateTime(timezone=True)))
    op.add_column("broadcasts", sa.Column("chunks_released", sa.Integer(), nullable=False, server_default="0"))
    # Broadcasts stored before windows existed had every chunk published at intake.
    op.execute("UPDATE broadcasts SET chunks_released = chunk_count WHERE enqueued_at IS NOT NULL")


def downgrade() -> None:
    op.drop_column("broadcasts", "chunks_released")
    op.drop_column("broadcasts", "deadline")
    op.drop_column("broadcasts", "priority")
