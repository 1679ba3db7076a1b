"""Releasing delivery retries: messages whose receipt earned a new attempt wait in PostgreSQL until due.

The status consumer (shared.receipts.events) puts a message in `retry_scheduled` with a `retry_due_at`; beat runs
`release_and_enqueue_due_retries` every few seconds. Each batch, in one transaction, archives the current attempt
into `message_attempts` (its SID keeps receiving late callbacks there) and resets the message to `pending`
(`release_due_retries` in the message store, which also says why two releases never make two attempts); after
the commit the chunks are enqueued, and the ordinary chunk claim sends attempt n+1 with a new SID. A lost
enqueue is harmless: the sweeper re-enqueues idle pending chunks.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from shared.messages.store import ReleasedRetry, release_due_retries
from shared.platform.db import session_scope
from shared.platform.task_queue import enqueue_chunks

logger = logging.getLogger(__name__)

RELEASE_BATCH_SIZE = 1_000
# One run releases at most this many batches, then returns its worker process; the next beat continues.
MAX_BATCHES_PER_RUN = 20


@dataclass
class ReleaseReport:
    released: int = 0
    chunks_enqueued: int = 0
    enqueue_failed: bool = False  # the rows are pending anyway: the sweeper re-enqueues idle chunks
    broadcasts: set[uuid.UUID] = field(default_factory=set)


def chunks_of(released: list[ReleasedRetry]) -> dict[uuid.UUID, list[int]]:
    """The distinct chunk numbers to enqueue, per broadcast, in order."""
    chunks: dict[uuid.UUID, set[int]] = defaultdict(set)
    for message in released:
        chunks[message.broadcast_id].add(message.chunk_number)
    return {broadcast_id: sorted(numbers) for broadcast_id, numbers in chunks.items()}


def release_and_enqueue_due_retries(
    session_factory: sessionmaker[Session],
    app: Celery,
    *,
    batch_size: int = RELEASE_BATCH_SIZE,
    max_batches: int = MAX_BATCHES_PER_RUN,
    now: datetime | None = None,
) -> ReleaseReport:
    """Release due retries batch by batch, enqueueing each batch's chunks after its commit."""
    report = ReleaseReport()
    for _ in range(max_batches):
        with session_scope(session_factory) as session:
            released = release_due_retries(session, batch_size, now)
        if not released:
            break
        report.released += len(released)
        for broadcast_id, chunk_numbers in chunks_of(released).items():
            report.broadcasts.add(broadcast_id)
            try:
                enqueue_chunks(app, broadcast_id, chunk_numbers)
            except Exception as error:  # any broker failure: the sweeper re-enqueues idle pending chunks
                report.enqueue_failed = True
                logger.warning(
                    "released retries of broadcast %s but could not enqueue %d chunks (%s); the sweeper will",
                    broadcast_id,
                    len(chunk_numbers),
                    type(error).__name__,
                )
            else:
                report.chunks_enqueued += len(chunk_numbers)
        if len(released) < batch_size:
            break
    if report.released:
        logger.info(
            "released %d delivery retries of %d broadcasts (%d chunks enqueued)",
            report.released,
            len(report.broadcasts),
            report.chunks_enqueued,
        )
    return report
