"""API keys get a scope (send, read, admin), optional per-key limits and a test flag; broadcasts of test keys are
marked `test`; idempotency keys expire (their broadcast keeps the key, the lookup ignores it after 24 hours).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing keys could do everything: they stay able to (admin), new ones name their scope.
    op.add_column("api_keys", sa.Column("scope", sa.String(10), nullable=False, server_default="admin"))
    op.create_check_constraint("ck_api_keys_scope", "api_keys", "scope IN ('send', 'read', 'admin')")
    op.add_column("api_keys", sa.Column("is_test", sa.Boolean(), nullable=False, server_default="false"))
    # Null: the RATE_LIMIT_PER_MINUTE / DAILY_MESSAGE_LIMIT settings apply.
    op.add_column("api_keys", sa.Column("rate_limit_per_minute", sa.Integer()))
    op.add_column("api_keys", sa.Column("daily_message_limit", sa.Integer()))
    op.add_column("broadcasts", sa.Column("test", sa.Boolean(), nullable=False, server_default="false"))
    # Idempotency keys expire after 24 hours, so the same key may appear on an older broadcast: no longer unique.
    op.drop_index("uq_broadcasts_api_key_idempotency_key", table_name="broadcasts")
    op.create_index(
        "ix_broadcasts_api_key_idempotency_key",
        "broadcasts",
        ["api_key_id", "idempotency_key", "created_at"],
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_broadcasts_api_key_idempotency_key", table_name="broadcasts")
    # Fails if a key was reused after expiring: keep the newest broadcast's key before downgrading.
    op.create_index(
        "uq_broadcasts_api_key_idempotency_key",
        "broadcasts",
        ["api_key_id", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.drop_column("broadcasts", "test")
    op.drop_column("api_keys", "daily_message_limit")
    op.drop_column("api_keys", "rate_limit_per_minute")
    op.drop_column("api_keys", "is_test")
    op.drop_constraint("ck_api_keys_scope", "api_keys")
    op.drop_column("api_keys", "scope")
