"""Read-only views of broadcasts for the dashboard: counts per state for a page of broadcasts, and a broadcast's
sends and receipts over time.

Both stay cheap on a 1,000,000-recipient broadcast: the counts come from the maintained counts
(shared.messages.counts), a few rows per broadcast, and the timeline is one pass over
the broadcast's rows grouped into at most MAX_BUCKETS `date_bin` buckets, so the answer is a few dozen rows
whatever the size of the broadcast.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.messages import counts as message_counts

MAX_BUCKETS = 60
# Bucket widths a reader takes in at a glance; the smallest one that keeps the span within MAX_BUCKETS wins.
BUCKET_WIDTHS = tuple(
    timedelta(seconds=seconds)
    for seconds in (
        1, 2, 5, 10, 15, 30,
        60, 120, 300, 600, 900, 1800,
        3600, 2 * 3600, 3 * 3600, 6 * 3600, 12 * 3600,
        86400, 2 * 86400, 7 * 86400,
    )
)  # fmt: skip


def state_counts_by_broadcast(session: Session, broadcast_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, int]]:
    """{broadcast id: {state: messages}} for every id given, every MessageState present (zeros included)."""
    return message_counts.state_counts_by_broadcast(session, broadcast_ids)


def bucket_width(start: datetime, end: datetime, max_buckets: int = MAX_BUCKETS) -> timedelta:
    """The smallest of BUCKET_WIDTHS that covers start..end in at most `max_buckets` buckets."""
    span = max(end - start, timedelta(0))
    for width in BUCKET_WIDTHS:
        # Two buckets of room: aligning the start down to a multiple of the width may add one.
        if span / width < max_buckets - 2:
            return width
    # Longer than the table foresees: stretch the last width.
    return BUCKET_WIDTHS[-1] * (int(span / (BUCKET_WIDTHS[-1] * max_buckets)) + 1)


def align_to(moment: datetime, width: timedelta) -> datetime:
    """`moment` rounded down to a multiple of `width` since the Unix epoch (so buckets start at 12:05:00, not
    12:04:37)."""
    epoch = datetime(1970, 1, 1, tzinfo=moment.tzinfo or UTC)
    return epoch + width * ((moment - epoch) // width)


@dataclass(frozen=True, slots=True)
class ActivityBucket:
    start: datetime
    sends: int
    receipts: int


@dataclass(frozen=True, slots=True)
class Activity:
    start: datetime
    width: timedelta
    buckets: list[ActivityBucket]  # every bucket from start to the end, empty ones included

    @property
    def total_sends(self) -> int:
        return sum(bucket.sends for bucket in self.buckets)

    @property
    def total_receipts(self) -> int:
        return sum(bucket.receipts for bucket in self.buckets)


def broadcast_activity(session: Session, broadcast_id: uuid.UUID, start: datetime, end: datetime) -> Activity:
    """Messages sent (`sent_at`) and receipts (`last_receipt_at`: each message's latest status callback) per bucket.

    `start`..`end` is the window drawn (the broadcast's first send to its last send or receipt, or now while it
    runs); times outside it are counted in the first or last bucket, so the totals are always complete.
    """
    width = bucket_width(start, end)
    start = align_to(start, width)
    bucket_count = int((end - start) / width) + 1
    rows = session.execute(
        text(
            # One pass over the broadcast's rows: each row contributes its send and its receipt bucket.
            "SELECT least(greatest(times.bucket, :start), :last) AS bucket, "
            "       sum(times.sends) AS sends, sum(times.receipts) AS receipts "
            "FROM messages m CROSS JOIN LATERAL (VALUES "
            "    (date_bin(:width, m.sent_at, :start), 1, 0), "
            "    (date_bin(:width, m.last_receipt_at, :start), 0, 1)) AS times(bucket, sends, receipts) "
            "WHERE m.broadcast_id = :id AND (m.sent_at IS NOT NULL OR m.last_receipt_at IS NOT NULL) "
            "AND times.bucket IS NOT NULL "
            "GROUP BY 1"
        ),
        {"id": broadcast_id, "width": width, "start": start, "last": start + width * (bucket_count - 1)},
    )
    found = {row.bucket: (int(row.sends), int(row.receipts)) for row in rows}
    buckets = []
    for index in range(bucket_count):
        bucket_start = start + width * index
        sends, receipts = found.get(bucket_start, (0, 0))
        buckets.append(ActivityBucket(bucket_start, sends, receipts))
    return Activity(start, width, buckets)
