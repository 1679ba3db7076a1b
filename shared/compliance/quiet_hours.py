"""Quiet hours: no recipient gets a message inside the window of their own local time.

A number's zones come from `phonenumbers.timezone.time_zones_for_number`. When a number spans several zones
(a toll-free or non-geographic number), the message must be outside the window in all of them: the deferral
runs to the earliest instant that is outside in every zone. A number with no known zone (`Etc/Unknown`) is
judged in UTC (documented in docs/api.md). The decision is taken per chunk at claim time (`defer_quiet_rows`):
rows inside the window get `not_before` and stay `pending`; beat re-enqueues their chunks once due.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as phone_timezones
from sqlalchemy.orm import Session

from shared.messages import store as message_store

HH_MM_PATTERN = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
UNKNOWN_ZONE = "Etc/Unknown"
FALLBACK_ZONE = "UTC"
# Enough rounds for any set of real zones to settle; beyond it the last candidate is used.
MAX_SETTLE_ROUNDS = 64


@dataclass(frozen=True)
class QuietHours:
    start: time
    end: time

    @classmethod
    def parse(cls, start: str, end: str) -> QuietHours:
        return cls(parse_hh_mm(start), parse_hh_mm(end))

    @classmethod
    def of(cls, start: str | None, end: str | None) -> QuietHours | None:
        return cls.parse(start, end) if start and end else None

    def contains(self, local: time) -> bool:
        """Inside the window (start included, end excluded); a window with start > end wraps midnight."""
        if self.start <= self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def window_end_after(self, local: datetime) -> datetime:
        """The end of the window that `local` (an aware local time inside it) is in."""
        end = local.replace(hour=self.end.hour, minute=self.end.minute, second=0, microsecond=0)
        if end <= local:
            end += timedelta(days=1)
        # Re-attach the zone so a DST change in between is honoured (wall-clock end in that zone).
        return end.replace(tzinfo=local.tzinfo)


def parse_hh_mm(value: str) -> time:
    match = HH_MM_PATTERN.fullmatch(value)
    if match is None:
        raise ValueError(f"{value!r} is not a time as HH:MM (00:00 to 23:59)")
    return time(int(match.group(1)), int(match.group(2)))


@lru_cache(maxsize=4096)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(FALLBACK_ZONE)


@lru_cache(maxsize=200_000)
def zones_for_number(number: str) -> tuple[ZoneInfo, ...]:
    """The recipient's possible zones (UTC when unknown)."""
    try:
        names = phone_timezones.time_zones_for_number(phonenumbers.parse(number, None))
    except phonenumbers.NumberParseException:
        names = (UNKNOWN_ZONE,)
    names = tuple(name for name in names if name != UNKNOWN_ZONE) or (FALLBACK_ZONE,)
    return tuple(_zone(name) for name in names)


def not_before_for(zones: Iterable[ZoneInfo], quiet: QuietHours, now: datetime) -> datetime | None:
    """None when `now` is outside the window in every zone, else the earliest later instant that is."""
    zone_list = list(zones)
    candidate = now
    for _ in range(MAX_SETTLE_ROUNDS):
        moved = False
        for zone in zone_list:
            local = candidate.astimezone(zone)
            if quiet.contains(local.time()):
                candidate = quiet.window_end_after(local).astimezone(UTC)
                moved = True
        if not moved:
            break
    return None if candidate == now else candidate.astimezone(UTC)


def count_deferred(numbers: Iterable[str], quiet: QuietHours, at: datetime) -> int:
    """How many numbers are inside the window at `at`. Numbers are grouped by their first digits and length
    (the zone tables use prefixes of at most 9 digits), so a 1,000,000 list costs one zone lookup per group."""
    verdicts: dict[tuple[str, int], bool] = {}
    deferred = 0
    for number in numbers:
        key = (number[:10], len(number))
        verdict = verdicts.get(key)
        if verdict is None:
            verdict = verdicts[key] = not_before_for(zones_for_number(number), quiet, at) is not None
        deferred += verdict
    return deferred


def defer_quiet_rows(
    session: Session, broadcast_id: uuid.UUID, chunk_number: int, quiet: QuietHours, now: datetime
) -> int:
    """At claim: give the chunk's due pending rows that are inside the window a `not_before` (they stay pending)."""
    ids: list[int] = []
    until: list[datetime] = []
    for row in message_store.lock_due_pending_rows(session, broadcast_id, chunk_number, now):
        not_before = not_before_for(zones_for_number(row.to_number), quiet, now)
        if not_before is not None:
            ids.append(row.id)
            until.append(not_before)
    message_store.defer(session, ids, until)
    return len(ids)
