"""How long a broadcast will take: its segments still to send over the throughput bulksms sends at (pure).

The throughput comes from shared.sending.pacing (`effective_segments_per_second`): the configured
TWILIO_SEGMENTS_PER_SECOND, or what the status callbacks show the pool draining when that is slower (or when no rate
is configured). It is the whole account's: broadcasts sending at the same time share it, so each one's estimate is
what it would take alone (docs/sending.md, "The estimate").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import redis

from shared.platform.models import Broadcast, BroadcastStatus
from shared.platform.settings import Settings
from shared.sending.pacing import effective_segments_per_second, estimate_seconds

# Statuses in which nothing is left for bulksms to send.
_DONE = frozenset({BroadcastStatus.SUBMITTED, BroadcastStatus.COMPLETED, BroadcastStatus.CANCELED})


@dataclass(frozen=True, slots=True)
class BroadcastEstimate:
    seconds: float | None  # None: unpaced (no known throughput), or nothing left to send
    finish_at: datetime | None  # None as well while paused, or held until an operator resumes it


def remaining_segments(segments_total: int, recipients: int, unsent: int) -> int:
    """Segments of the `unsent` recipients, at the broadcast's average segments per recipient."""
    if recipients <= 0 or unsent <= 0:
        return 0
    return round(segments_total * min(unsent, recipients) / recipients)


def estimate_broadcast(
    status: str,
    segments_left: int,
    segments_per_second: float | None,
    now: datetime,
    send_at: datetime | None = None,
    held_until: datetime | None = None,
) -> BroadcastEstimate:
    """The estimate shown in the 202, GET /v1/broadcasts/{id}, `bulksms status` and the dashboard."""
    if status in _DONE or segments_left <= 0:
        return BroadcastEstimate(None, None)
    seconds = estimate_seconds(segments_left, segments_per_second)
    if seconds is None:
        return BroadcastEstimate(None, None)
    seconds = round(seconds, 1)
    start: datetime | None = now
    if status == BroadcastStatus.SCHEDULED:
        start = max(send_at or now, now)
    elif status == BroadcastStatus.PAUSED:
        start = None
    elif status == BroadcastStatus.HELD:
        start = max(held_until, now) if held_until is not None else None
    return BroadcastEstimate(seconds, None if start is None else start + timedelta(seconds=seconds))


def current_estimate(
    broadcast: Broadcast, unsent: int, settings: Settings, redis_client: redis.Redis | None, now: datetime
) -> BroadcastEstimate:
    """The estimate for `broadcast` with `unsent` recipients left, at the throughput sending goes at now."""
    segments_total = broadcast.segments_total or broadcast.segments * broadcast.recipients_accepted
    return estimate_broadcast(
        broadcast.status,
        remaining_segments(segments_total, broadcast.recipients_accepted, unsent),
        effective_segments_per_second(settings, redis_client),
        now,
        send_at=broadcast.send_at,
        held_until=broadcast.held_until,
    )
