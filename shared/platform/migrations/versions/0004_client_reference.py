"""A broadcast's client_reference (the caller's own id), and the index that lists one key's broadcasts by it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("broadcasts", sa.Column("client_reference", sa.String(256)))
    # `GET /v1/broadcasts?client_reference=` reads it newest first for one API key. Partial: existing broadcasts
    # have no reference, so building it on a large table reads the table once and writes next to nothing.
    op.create_index(
        "ix_broadcasts_client_reference",
        "broadcasts",
        ["api_key_id", "client_reference", "created_at", "id"],
        postgresql_where=sa.text("client_reference IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_broadcasts_client_reference", table_name="broadcasts")
    op.drop_column("broadcasts", "client_reference")
