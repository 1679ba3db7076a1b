"""A broadcast's circuit breaker: a surge of failures among its recent outcomes holds it until an operator resumes it.

A million sends into a carrier filter cost money and the sender's reputation, so each broadcast keeps a window of
its recent outcomes in Redis (send answers and final receipts alike). Failures that trip it: receipts and answers
whose code the error-code table marks `trips_breaker` (30007 carrier filtering, 30034 unregistered 10DLC, 21610
opted out), and sends Twilio answered with 5xx or never answered (timeouts). Once at least
`CIRCUIT_BREAKER_MIN_OUTCOMES` outcomes are in the window and the failures' share reaches
`CIRCUIT_BREAKER_FAILURE_SHARE`, the breaker trips once: the caller holds the broadcast, with the codes and counts
in its reason. Resuming it (API, CLI) starts a fresh window. The window is two buckets of `MIN_OUTCOMES` each, so it
always covers the last one to two buckets' worth of outcomes.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio

from shared.platform.settings import Settings
from shared.twilio.error_codes import BREAKER_CODES
from shared.twilio.gateway import Accepted, Ambiguous, Permanent, SendOutcome

OK = "ok"
NO_ANSWER = "5xx/timeout"

# KEYS[1]: the broadcast's breaker hash. ARGV: bucket size, minimum outcomes, share (0..1), then a JSON object
# {label: count} of new outcomes ("ok" for successes). Returns a JSON object of the window's failures when it trips.
_OBSERVE_SCRIPT = """
if redis.call('HGET', KEYS[1], 'tripped') then return false end
local bucket, minimum, share = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local new = cjson.decode(ARGV[4])
local current = cjson.decode(redis.call('HGET', KEYS[1], 'current') or '{}')
for label, count in pairs(new) do current[label] = (current[label] or 0) + count end
local function total(counts)
    local sum = 0
    for _, count in pairs(counts) do sum = sum + count end
    return sum
end
if total(current) >= bucket then
    redis.call('HSET', KEYS[1], 'previous', cjson.encode(current))
    current = {}
end
redis.call('HSET', KEYS[1], 'current', cjson.encode(current))
redis.call('EXPIRE', KEYS[1], 7 * 86400)
local previous = cjson.decode(redis.call('HGET', KEYS[1], 'previous') or '{}')
local window, failures, failed = 0, 0, {}
for _, counts in ipairs({current, previous}) do
    for label, count in pairs(counts) do
        window = window + count
        if label ~= 'ok' then
            failures = failures + count
            failed[label] = (failed[label] or 0) + count
        end
    end
end
if window >= minimum and share > 0 and failures >= share * window then
    redis.call('HSET', KEYS[1], 'tripped', 1)
    failed['_window'] = window
    return cjson.encode(failed)
end
return false
"""


def breaker_key(broadcast_id: uuid.UUID | str) -> str:
    return f"bulksms:breaker:{broadcast_id}"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failure_share: float  # 0: never trips
    min_outcomes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> BreakerPolicy:
        return cls(settings.circuit_breaker_failure_share, settings.circuit_breaker_min_outcomes)

    @property
    def enabled(self) -> bool:
        return self.failure_share > 0

    def arguments(self, labels: Counter[str]) -> list[Any]:
        return [self.min_outcomes, self.min_outcomes, self.failure_share, json.dumps(dict(labels))]


def receipt_label(state: str, error_code: int | None) -> str | None:
    """A final receipt's label in the window (None: not an outcome yet, e.g. `sent`)."""
    if state == "delivered":
        return OK
    if state in ("undelivered", "failed"):
        return str(error_code) if error_code in BREAKER_CODES else OK
    return None


def send_label(outcome: SendOutcome) -> str | None:
    """A send answer's label (None: not an outcome, the message was not sent: 20429, paused)."""
    if isinstance(outcome, Accepted):
        return OK
    if isinstance(outcome, Ambiguous):
        return NO_ANSWER
    if isinstance(outcome, Permanent):
        return str(outcome.code) if outcome.code in BREAKER_CODES else OK
    return None


def trip_reason(tripped: Any) -> str | None:
    """The hold reason from the script's answer: the codes and counts that tripped it."""
    if not tripped:
        return None
    failed: dict[str, int] = json.loads(tripped)
    window = failed.pop("_window")
    counts = ", ".join(f"{label} x{count}" for label, count in sorted(failed.items(), key=lambda item: -item[1]))
    return f"circuit breaker: {sum(failed.values())} of the last {window} outcomes failed ({counts})"


def observe(
    client: redis.Redis, policy: BreakerPolicy, broadcast_id: uuid.UUID, labels: Iterable[str | None]
) -> str | None:
    """Add outcomes to the broadcast's window; the hold reason if the breaker just tripped."""
    counts = Counter(label for label in labels if label is not None)
    if not policy.enabled or not counts:
        return None
    script: Any = client.register_script(_OBSERVE_SCRIPT)
    return trip_reason(script(keys=[breaker_key(broadcast_id)], args=policy.arguments(counts)))


async def observe_async(
    client: redis.asyncio.Redis, policy: BreakerPolicy, broadcast_id: uuid.UUID, labels: Iterable[str | None]
) -> str | None:
    """`observe` for the asyncio senders."""
    counts = Counter(label for label in labels if label is not None)
    if not policy.enabled or not counts:
        return None
    script: Any = client.register_script(_OBSERVE_SCRIPT)
    return trip_reason(await script(keys=[breaker_key(broadcast_id)], args=policy.arguments(counts)))
