"""How many of a broadcast's messages are in each state, read from maintained counts instead of counting rows.

Triggers on `messages` (migration 0005) append each statement's net change per (broadcast, state, error code) to
`message_counts` in the writer's own transaction: intake's COPY, every transition of shared.messages.store,
retention and erasure alike. A reader sums a broadcast's rows, so the answer is exactly `count(*) GROUP BY state`
at the reader's snapshot, at the cost of a few dozen rows whatever the broadcast's size. `compact` (beat, every
sweep interval) folds a broadcast's appended rows into one per key so that stays true.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.platform.models import MessageState

# Broadcasts folded per compaction statement; a run repeats until none is left or its budget is spent.
COMPACT_BATCH_SIZE = 200


def _all_states() -> dict[str, int]:
    return {state.value: 0 for state in MessageState}


def state_counts(session: Session, broadcast_id: uuid.UUID) -> dict[str, int]:
    """Messages per state of one broadcast, every MessageState present (zeros included)."""
    return state_counts_by_broadcast(session, [broadcast_id])[broadcast_id]


def state_counts_by_broadcast(session: Session, broadcast_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, int]]:
    """{broadcast id: {state: messages}} for every id given, every MessageState present (zeros included)."""
    counts = {broadcast_id: _all_states() for broadcast_id in broadcast_ids}
    if not broadcast_ids:
        return counts
    rows = session.execute(
        text(
            "SELECT broadcast_id, state, sum(messages) AS messages FROM message_counts "
            "WHERE broadcast_id = ANY(CAST(:ids AS uuid[])) GROUP BY broadcast_id, state"
        ),
        {"ids": [str(broadcast_id) for broadcast_id in broadcast_ids]},
    )
    for row in rows:
        counts[row.broadcast_id][row.state] = int(row.messages)
    return counts


def error_code_counts(session: Session, broadcast_id: uuid.UUID, states: Sequence[str]) -> list[tuple[int | None, int]]:
    """(error code, messages) over the broadcast's messages in `states` (failed, undelivered: the states whose
    codes are counted), most frequent first."""
    rows = session.execute(
        text(
            "SELECT error_code, sum(messages) AS messages FROM message_counts "
            "WHERE broadcast_id = :id AND state = ANY(CAST(:states AS text[])) "
            "GROUP BY error_code HAVING sum(messages) > 0 ORDER BY messages DESC, error_code NULLS LAST"
        ),
        {"id": broadcast_id, "states": list(states)},
    )
    return [(row.error_code, int(row.messages)) for row in rows]


def unfinished_broadcast_state_counts(session: Session) -> dict[str, int]:
    """Messages per state over every broadcast not yet completed (the `/metrics` gauge)."""
    rows = session.execute(
        text(
            "SELECT c.state, sum(c.messages) AS messages FROM message_counts AS c "
            "WHERE c.broadcast_id IN (SELECT id FROM broadcasts WHERE completed_at IS NULL) "
            "GROUP BY c.state HAVING sum(c.messages) <> 0 ORDER BY c.state"
        )
    )
    return {str(row.state): int(row.messages) for row in rows}


def compact(session: Session, limit: int = COMPACT_BATCH_SIZE) -> int:
    """Fold the appended rows of up to `limit` broadcasts into one row per (state, error code); returns how many
    broadcasts were folded. Exact under concurrency: each appended row is deleted once and its value inserted
    once, in one statement; a concurrent fold of the same broadcast skips the rows this one deleted."""
    result = session.execute(
        text(
            "WITH chosen AS ("
            "    SELECT DISTINCT broadcast_id FROM message_counts WHERE NOT compacted LIMIT :limit), "
            "moved AS ("
            "    DELETE FROM message_counts WHERE broadcast_id IN (SELECT broadcast_id FROM chosen) "
            "    RETURNING broadcast_id, state, error_code, messages), "
            "folded AS ("
            "    INSERT INTO message_counts (broadcast_id, state, error_code, messages, compacted) "
            "    SELECT broadcast_id, state, error_code, sum(messages), true FROM moved "
            "    GROUP BY broadcast_id, state, error_code HAVING sum(messages) <> 0) "
            "SELECT count(*) FROM chosen"
        ),
        {"limit": limit},
    )
    return int(result.scalar_one())
