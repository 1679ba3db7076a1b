"""Maintained message counts per broadcast and state, and what retention and erasure need.

- `message_counts`: how many of a broadcast's messages are in each state (and, for failed / undelivered ones, each
  error code), kept by statement-level triggers on `messages` with transition tables. Every statement that
  inserts, updates, deletes or truncates messages appends its net change per (broadcast, state, error code) in the
  same transaction, so the counts are exactly what `count(*) ... GROUP BY state` would say, at any snapshot, under
  any concurrency, whoever the writer is. Rows are appended, never updated (no hot row, no lock between writers);
  beat folds them together (`shared.messages.counts.compact`), and `compacted` marks the folded rows.
- `messages.to_number` may be NULL: an erased (or retention-redacted) number. Indexed, for erasure by number.
- `broadcasts.redacted_at`: retention removed its body, numbers and template values.
- `status_events.abandoned_at`: an event that matched nothing for a day is no longer retried; the index the
  retry pass walks leaves it. A BRIN index on `received_at` finds raw events past retention cheaply; one on
  `message_id` finds the events of an erased person's messages.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# The error code is kept only where a breakdown by code is shown (failed and undelivered messages).
_COUNTED = "broadcast_id, state, CASE WHEN state IN ('failed', 'undelivered') THEN error_code END AS error_code"

COUNT_FUNCTION = """
CREATE FUNCTION count_message_states() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO message_counts (broadcast_id, state, error_code, messages)
        SELECT broadcast_id, state, error_code, count(*) FROM (SELECT COUNTED_COLUMNS FROM new_rows) AS added
        GROUP BY broadcast_id, state, error_code;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO message_counts (broadcast_id, state, error_code, messages)
        SELECT broadcast_id, state, error_code, sum(change) FROM (
            SELECT COUNTED_COLUMNS, 1 AS change FROM new_rows
            UNION ALL
            SELECT COUNTED_COLUMNS, -1 AS change FROM old_rows
        ) AS changes
        GROUP BY broadcast_id, state, error_code HAVING sum(change) <> 0;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO message_counts (broadcast_id, state, error_code, messages)
        SELECT broadcast_id, state, error_code, -count(*) FROM (SELECT COUNTED_COLUMNS FROM old_rows) AS removed
        GROUP BY broadcast_id, state, error_code;
    ELSE
        DELETE FROM message_counts;
    END IF;
    RETURN NULL;
END;
$$
""".replace("COUNTED_COLUMNS", _COUNTED)


def upgrade() -> None:
    op.create_table(
        "message_counts",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("broadcast_id", UUID(as_uuid=True), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("error_code", sa.Integer),
        sa.Column("messages", sa.BigInteger, nullable=False),
        sa.Column("compacted", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_message_counts_broadcast_id", "message_counts", ["broadcast_id"])
    op.create_index(
        "ix_message_counts_to_compact", "message_counts", ["broadcast_id"], postgresql_where=sa.text("NOT compacted")
    )
    op.execute(COUNT_FUNCTION)
    op.execute(
        "CREATE TRIGGER messages_count_insert AFTER INSERT ON messages REFERENCING NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION count_message_states()"
    )
    op.execute(
        "CREATE TRIGGER messages_count_update AFTER UPDATE ON messages "
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION count_message_states()"
    )
    op.execute(
        "CREATE TRIGGER messages_count_delete AFTER DELETE ON messages REFERENCING OLD TABLE AS old_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION count_message_states()"
    )
    op.execute(
        "CREATE TRIGGER messages_count_truncate AFTER TRUNCATE ON messages "
        "FOR EACH STATEMENT EXECUTE FUNCTION count_message_states()"
    )
    # The triggers above hold a lock that blocks writers of `messages` until this transaction commits, so the
    # counts of existing rows and the deltas of later writes never overlap.
    op.execute(
        (
            "INSERT INTO message_counts (broadcast_id, state, error_code, messages, compacted) "
            "SELECT broadcast_id, state, error_code, count(*), true "
            "FROM (SELECT COUNTED_COLUMNS FROM messages) AS existing "
            "GROUP BY broadcast_id, state, error_code"
        ).replace("COUNTED_COLUMNS", _COUNTED)
    )

    op.alter_column("messages", "to_number", existing_type=sa.String(16), nullable=True)
    op.create_index(
        "ix_messages_to_number", "messages", ["to_number"], postgresql_where=sa.text("to_number IS NOT NULL")
    )
    op.add_column("broadcasts", sa.Column("redacted_at", sa.DateTime(timezone=True)))

    op.add_column("status_events", sa.Column("abandoned_at", sa.DateTime(timezone=True)))
    op.drop_index("ix_status_events_unapplied", table_name="status_events")
    op.create_index(
        "ix_status_events_unapplied",
        "status_events",
        ["id"],
        postgresql_where=sa.text("applied_at IS NULL AND abandoned_at IS NULL"),
    )
    op.create_index("ix_status_events_received_at", "status_events", ["received_at"], postgresql_using="brin")
    op.create_index(
        "ix_status_events_message_id",
        "status_events",
        ["message_id"],
        postgresql_where=sa.text("message_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_status_events_message_id", table_name="status_events")
    op.drop_index("ix_status_events_received_at", table_name="status_events")
    op.drop_index("ix_status_events_unapplied", table_name="status_events")
    op.create_index(
        "ix_status_events_unapplied", "status_events", ["id"], postgresql_where=sa.text("applied_at IS NULL")
    )
    op.drop_column("status_events", "abandoned_at")
    op.drop_column("broadcasts", "redacted_at")
    op.drop_index("ix_messages_to_number", table_name="messages")
    op.alter_column("messages", "to_number", existing_type=sa.String(16), nullable=False)
    op.execute("DROP TRIGGER messages_count_truncate ON messages")
    op.execute("DROP TRIGGER messages_count_delete ON messages")
    op.execute("DROP TRIGGER messages_count_update ON messages")
    op.execute("DROP TRIGGER messages_count_insert ON messages")
    op.execute("DROP FUNCTION count_message_states()")
    op.drop_table("message_counts")
