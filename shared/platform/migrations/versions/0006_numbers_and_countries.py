"""Phone numbers as people write them: a default region and allowed countries per API key; a broadcast's default
region, strict_numbers, and its recipients counted per country and outside the assigned ranges.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Null: the key adds nothing to the DEFAULT_REGION / ALLOWED_COUNTRIES settings.
    op.add_column("api_keys", sa.Column("default_region", sa.String(2)))
    op.add_column("api_keys", sa.Column("allowed_countries", postgresql.ARRAY(sa.String(3))))
    op.add_column("broadcasts", sa.Column("default_region", sa.String(2)))
    op.add_column("broadcasts", sa.Column("strict_numbers", sa.Boolean()))
    # Existing broadcasts were not counted: null, shown as an empty object and zero.
    op.add_column("broadcasts", sa.Column("recipients_by_country", postgresql.JSONB()))
    op.add_column("broadcasts", sa.Column("recipients_not_valid", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_column("broadcasts", "recipients_not_valid")
    op.drop_column("broadcasts", "recipients_by_country")
    op.drop_column("broadcasts", "strict_numbers")
    op.drop_column("broadcasts", "default_region")
    op.drop_column("api_keys", "allowed_countries")
    op.drop_column("api_keys", "default_region")
