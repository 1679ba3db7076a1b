"""A broadcast's deadline: the rules it must keep, the ValidityPeriod it leaves each message, and the warning
when sending is expected to take longer than the time it allows. Pure: no I/O.

What the deadline does elsewhere: the claim refuses a chunk past it and expires its rows
(shared.sending.claims), the sweeper expires what is left (shared.sending.sweeper), and a message whose time ran
out between its claim and its request is released unsent and expired (shared.sending.chunks).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from shared.broadcasts.media import MAX_VALIDITY_PERIOD_SECONDS

DEADLINE_MAX_LEAD = timedelta(hours=72)
# Twilio's smallest ValidityPeriod: a message with less time left than this is not sent at all.
MIN_VALIDITY_PERIOD_SECONDS = 1


class DeadlineError(ValueError):
    """The deadline is in the past, too far ahead, or not after `send_at`."""


def check_deadline(deadline: datetime, now: datetime, send_at: datetime | None = None) -> None:
    if deadline.tzinfo is None:
        raise DeadlineError("Must be an ISO-8601 time with an offset or Z.")
    if deadline <= now:
        raise DeadlineError("Must be in the future.")
    if deadline > now + DEADLINE_MAX_LEAD:
        raise DeadlineError("Must be at most 72 hours ahead.")
    if send_at is not None and deadline <= send_at:
        raise DeadlineError("Must be after send_at.")


def validity_period_left(deadline: datetime | None, validity_period: int | None, now: datetime) -> int | None:
    """The `ValidityPeriod` to send now: the broadcast's own, cut to the whole seconds left before its deadline
    (Twilio takes 1 to 36,000); None without either. Below 1 second left, 0: the message must not be sent."""
    if deadline is None:
        return validity_period
    left = math.floor((deadline - now).total_seconds())
    if left < MIN_VALIDITY_PERIOD_SECONDS:
        return 0
    return min(left, validity_period or MAX_VALIDITY_PERIOD_SECONDS, MAX_VALIDITY_PERIOD_SECONDS)


def deadline_warnings(
    deadline: datetime | None,
    segments_total: int,
    seconds: float | None,
    now: datetime,
    send_at: datetime | None = None,
) -> list[str]:
    """The `warnings` of intake's answer: [] when the deadline is expected to be met (or cannot be judged).

    `seconds` is the broadcast's estimate (shared.broadcasts.estimate: its segments at the throughput sending goes
    at now); None, when unpaced with no known throughput, gives no warning."""
    if deadline is None or seconds is None:
        return []
    finish = max(send_at or now, now) + timedelta(seconds=seconds)
    if finish <= deadline:
        return []
    return [
        f"Sending {segments_total:,} segments is estimated to take {math.ceil(seconds):,} s and to end "
        f"{math.ceil((finish - deadline).total_seconds()):,} s after the deadline: what is not sent by "
        f"{deadline.isoformat()} will be expired."
    ]
