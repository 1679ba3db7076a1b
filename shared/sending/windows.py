"""Which chunks of a broadcast are handed to the broker: a bounded window each, so broadcasts share the workers.

Intake does not publish every chunk task at once (a 1,000,000-recipient broadcast would put 10,000 tasks ahead
of everything submitted after it on the one FIFO queue). Each broadcast has at most a window of chunk tasks out,
`SEND_WINDOW_CHUNKS` for `normal`, twice that for `high`, half for `bulk` (4:2:1, at least one). A chunk task that
finishes releases the next chunks of its broadcast to fill the window again; so the queue holds every sending
broadcast's tasks interleaved in proportion to their windows, the workers take them in turn, and a 10-recipient
broadcast waits behind a few chunks, never behind a whole broadcast. No priority starves: a `bulk` window is
still at least one chunk, always in the queue's rotation. Celery keeps the queue and the workers; this module only
decides what to publish.

The window is counted from the database, never from the broker: chunks below the broadcast's `chunks_released`
mark that still have due `pending` rows or `sending` rows are out; releasing is idempotent (the broadcast row
is locked, the mark only moves forward), so a chunk task delivered twice, or the sweeper topping up while a chunk
finishes, never widens the window. A top-up lost with its worker is redone by the sweeper's next pass
(`top_up_windows`). Publishing a chunk twice is harmless: its claim takes only `pending` rows.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from celery import Celery
from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.broadcasts import store as broadcast_store
from shared.platform.models import BroadcastPriority, MessageState
from shared.platform.settings import Settings
from shared.platform.task_queue import enqueue_chunks

logger = logging.getLogger(__name__)

DEFAULT_WINDOW_CHUNKS = Settings.send_window_chunks
# Window sizes relative to `normal`: the 4:2:1 share of high, normal and bulk broadcasts sending at once.
PRIORITY_WINDOW_FACTORS = {BroadcastPriority.HIGH: 2.0, BroadcastPriority.NORMAL: 1.0, BroadcastPriority.BULK: 0.5}


def window_size(priority: str | None, normal_window: int) -> int:
    """How many chunk tasks of a broadcast of this priority may be out at once (at least one)."""
    factor = PRIORITY_WINDOW_FACTORS.get(BroadcastPriority(priority or BroadcastPriority.NORMAL), 1.0)
    return max(1, int(normal_window * factor))


@dataclass(frozen=True, slots=True)
class Release:
    """Chunks to publish for one broadcast: newly released ones, and (on a restart) released ones still waiting."""

    broadcast_id: uuid.UUID
    new_chunks: list[int]
    waiting_chunks: list[int]

    @property
    def chunks(self) -> list[int]:
        return sorted(set(self.new_chunks) | set(self.waiting_chunks))


def release_chunks(session: Session, broadcast_id: uuid.UUID, normal_window: int, *, restart: bool = False) -> Release:
    """Move the broadcast's release mark so that its window is full again (the caller commits, then publishes
    `Release.chunks`). Nothing for a broadcast that may not send now (scheduled, paused, canceled, done, past its
    deadline).

    `restart`: the broker may have lost what was released before (a resume, a broadcast never enqueued), so the
    released chunks that still have due pending rows are published again too.
    """
    row = session.execute(
        text(
            "SELECT status, priority, chunk_count, chunks_released, "
            # Past its deadline (less than a second left) nothing more is sent: its rows are expired instead.
            "coalesce(deadline < now() + interval '1 second', false) AS past_deadline "
            "FROM broadcasts WHERE id = :id FOR UPDATE"
        ),
        {"id": broadcast_id},
    ).one_or_none()
    if row is None or row.status not in broadcast_store.SENDABLE_STATUSES or row.past_deadline:
        return Release(broadcast_id, [], [])
    out = session.execute(
        text(
            # The chunk's range of ix_messages_broadcast_state_chunk_id, below the mark: only the window's rows.
            "SELECT chunk_number, bool_or(state = :pending) AS waiting FROM messages "
            "WHERE broadcast_id = :id AND chunk_number < :released AND (state = :sending "
            # Rows deferred by quiet hours do not hold a window place: sms.release_deferred publishes them.
            "  OR (state = :pending AND (not_before IS NULL OR not_before <= now()))) "
            "GROUP BY chunk_number ORDER BY chunk_number"
        ),
        {
            "id": broadcast_id,
            "released": row.chunks_released,
            "pending": MessageState.PENDING,
            "sending": MessageState.SENDING,
        },
    ).all()
    free = window_size(row.priority, normal_window) - len(out)
    released = min(row.chunk_count, row.chunks_released + max(free, 0))
    new_chunks = list(range(row.chunks_released, released))
    if new_chunks:
        broadcast_store.mark_chunks_released(session, broadcast_id, released)
    waiting = [chunk.chunk_number for chunk in out if chunk.waiting] if restart else []
    return Release(broadcast_id, new_chunks, waiting)


def release_and_enqueue(
    session: Session,
    app: Celery,
    broadcast_id: uuid.UUID,
    normal_window: int = DEFAULT_WINDOW_CHUNKS,
    *,
    restart: bool = False,
) -> int:
    """`release_chunks`, commit, then publish the chunks; returns how many were published. If publishing fails the
    chunks stay released with their rows pending: the sweeper publishes idle ones again."""
    release = release_chunks(session, broadcast_id, normal_window, restart=restart)
    session.commit()
    chunks = release.chunks
    if chunks:
        enqueue_chunks(app, broadcast_id, chunks)
    return len(chunks)


def broadcasts_with_unreleased_chunks(session: Session, limit: int = 1_000) -> list[uuid.UUID]:
    """Enqueued broadcasts that may send and still hold chunks back (the sweeper tops up their windows)."""
    rows = session.execute(
        text(
            "SELECT id FROM broadcasts WHERE completed_at IS NULL AND enqueued_at IS NOT NULL "
            "AND status = ANY(CAST(:sendable AS text[])) AND chunks_released < chunk_count "
            "ORDER BY created_at LIMIT :limit"
        ),
        {"sendable": [status.value for status in broadcast_store.SENDABLE_STATUSES], "limit": limit},
    ).scalars()
    return list(rows)


def top_up_windows(session: Session, app: Celery, normal_window: int) -> int:
    """Fill the window of every broadcast that holds chunks back: what a lost top-up (a worker that died between
    recording its chunk and releasing the next) left unreleased. Returns the chunks published."""
    published = 0
    for broadcast_id in broadcasts_with_unreleased_chunks(session):
        published += release_and_enqueue(session, app, broadcast_id, normal_window)
    if published:
        logger.info("windows topped up: %d chunks released", published)
    return published
