"""Retention: RETENTION_DAYS after a broadcast completed, its recipients' numbers, its template values and its
body are removed, and raw status callbacks older than RETENTION_DAYS are deleted, whatever their message.

What stays: each message's state, outcome, error code, SIDs and times (so counts, exports and the dashboard still
add up, with the numbers blank), the broadcast's options and counts, and the opt-out list, which is never dropped
(a suppression must outlive the data of the broadcasts that produced it). Beat runs `apply_retention` every
RETENTION_INTERVAL_SECONDS; it works in short transactions of a few thousand rows, each committed at once, so it
never holds a lock for long and a run cut short by its time budget is continued by the next one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from shared.broadcasts import store as broadcast_store
from shared.messages import store as message_store
from shared.platform.db import session_scope
from shared.receipts.events import delete_events_received_before

logger = logging.getLogger(__name__)

MESSAGES_PER_TRANSACTION = 2_000
EVENTS_PER_TRANSACTION = 5_000
BROADCASTS_PER_RUN = 50
RUN_BUDGET_SECONDS = 120.0


@dataclass
class RetentionReport:
    cutoff: datetime | None = None  # None: retention is off (RETENTION_DAYS = 0)
    events_deleted: int = 0
    messages_redacted: int = 0
    broadcasts_redacted: int = 0
    finished: bool = True  # False: the time budget ran out; the next run continues


def apply_retention(
    session_factory: sessionmaker[Session],
    retention_days: int,
    now: datetime | None = None,
    budget_seconds: float = RUN_BUDGET_SECONDS,
) -> RetentionReport:
    """Delete raw events received before the cutoff, then redact completed broadcasts older than it."""
    report = RetentionReport()
    if retention_days <= 0:
        return report
    report.cutoff = cutoff = (now or datetime.now(UTC)) - timedelta(days=retention_days)
    deadline = time.monotonic() + budget_seconds

    def out_of_time() -> bool:
        report.finished = time.monotonic() < deadline
        return not report.finished

    while not out_of_time():
        with session_scope(session_factory) as session:
            deleted = delete_events_received_before(session, cutoff, EVENTS_PER_TRANSACTION)
        report.events_deleted += deleted
        if deleted < EVENTS_PER_TRANSACTION:
            break

    with session_scope(session_factory) as session:
        broadcast_ids = broadcast_store.completed_before(session, cutoff, BROADCASTS_PER_RUN)
    for broadcast_id in broadcast_ids:
        after_id = 0
        while True:
            if out_of_time():
                return report
            with session_scope(session_factory) as session:
                batch = message_store.redact_broadcast_batch(session, broadcast_id, after_id, MESSAGES_PER_TRANSACTION)
            if batch is None:
                break
            report.messages_redacted += batch.redacted
            after_id = batch.last_id
        with session_scope(session_factory) as session:
            broadcast_store.mark_redacted(session, broadcast_id)
        report.broadcasts_redacted += 1
        logger.info("retention: broadcast %s redacted (completed before %s)", broadcast_id, cutoff.isoformat())
    return report
