"""Per-key limits counted in Redis, so every API process of the fleet sees the same counts: requests per minute
and recipients accepted per UTC day. Each check is one Lua script (atomic: two processes never both take the
last unit).

Keys: `bulksms:rate:{key id}:{minute}` and `bulksms:daily:{key id}:{YYYY-MM-DD}`, each expiring shortly after its
window, so nothing needs cleaning up.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis

RATE_WINDOW_SECONDS = 60
DAY_SECONDS = 86_400

# KEYS[1]: the window's counter. ARGV: limit, how much to take, expiry in seconds.
# Returns the count after taking, or -1 (nothing taken) when that would pass the limit.
_TAKE_SCRIPT = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local wanted = tonumber(ARGV[2])
if current + wanted > tonumber(ARGV[1]) then
    return -1
end
local now = redis.call('INCRBY', KEYS[1], wanted)
if now == wanted then
    redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
end
return now
"""


class LimitExceeded(Exception):
    """Over a key's limit: `retry_after_seconds` until the window that refused it ends."""

    def __init__(self, limit: int, retry_after_seconds: int, what: str) -> None:
        super().__init__(limit, retry_after_seconds, what)
        self.limit = limit
        self.retry_after_seconds = retry_after_seconds
        self.what = what  # "requests per minute" or "recipients per day"

    def __str__(self) -> str:
        return f"over the limit of {self.limit:,} {self.what}; retry after {self.retry_after_seconds} s"


@dataclass(frozen=True, slots=True)
class Reservation:
    key: str
    count: int


class KeyLimits:
    """The two counters of API keys, on `client` (the API's Redis)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._take = client.register_script(_TAKE_SCRIPT)

    def take_request(self, api_key_id: int, limit: int, now: float | None = None) -> None:
        """Count one request of this key in the current minute; LimitExceeded when it has had `limit` already."""
        now = time.time() if now is None else now
        window = int(now // RATE_WINDOW_SECONDS)
        key = f"bulksms:rate:{api_key_id}:{window}"
        if int(self._take(keys=[key], args=[limit, 1, RATE_WINDOW_SECONDS * 2])) < 0:
            retry_after = math.ceil((window + 1) * RATE_WINDOW_SECONDS - now)
            raise LimitExceeded(limit, max(retry_after, 1), "requests per minute")

    def reserve_recipients(self, api_key_id: int, count: int, limit: int, now: datetime | None = None) -> Reservation:
        """Take `count` recipients from today's (UTC) allowance of this key, all or nothing; LimitExceeded when
        they do not fit. Give them back with `give_back` if the broadcast is then not stored."""
        now = now or datetime.now(UTC)
        key = _daily_key(api_key_id, now)
        if int(self._take(keys=[key], args=[limit, count, DAY_SECONDS * 2])) < 0:
            raise LimitExceeded(limit, _seconds_to_midnight(now), "recipients per day")
        return Reservation(key, count)

    def give_back(self, reservation: Reservation) -> None:
        """Return a reservation whose broadcast was not stored (to the day it was taken from)."""
        self.client.decrby(reservation.key, reservation.count)

    def recipients_today(self, api_key_id: int, now: datetime | None = None) -> int:
        return int(self.client.get(_daily_key(api_key_id, now or datetime.now(UTC))) or 0)


def _daily_key(api_key_id: int, now: datetime) -> str:
    return f"bulksms:daily:{api_key_id}:{now.astimezone(UTC).date().isoformat()}"


def _seconds_to_midnight(now: datetime) -> int:
    utc = now.astimezone(UTC)
    midnight = datetime(utc.year, utc.month, utc.day, tzinfo=UTC) + timedelta(days=1)
    return max(math.ceil((midnight - utc).total_seconds()), 1)
