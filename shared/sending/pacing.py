"""Fleet-wide pacing: segments per second, and a bounded queue at Twilio.

Twilio accepts a request at once and transmits from a queue per sender at the sender's throughput, so what we push
faster than that waits at Twilio (up to 10 hours), where pause and cancel no longer reach it. Two limits, shared by
every worker on every host through one Redis hash per Twilio account (Lua scripts, so each decision is atomic):

- a token bucket at `TWILIO_SEGMENTS_PER_SECOND` (one second of burst; a long message may
  borrow from the next second): a message costs its segments;
- a bound on what Twilio holds: segments accepted but not yet reported `sent`/`failed` by a status callback stay
  under `TWILIO_QUEUE_MAX_SECONDS` x the drain rate observed over the last `DRAIN_WINDOW_SECONDS` (never below
  `START_SEGMENTS_PER_SECOND`, the conservative start: the bound grows as the callbacks show the pool draining).

A send first *reserves* its segments (they count as queued at once, so two workers never both take the last room),
then *confirms* the reservation under the SID Twilio gave, or *releases* it (refunding the tokens) when Twilio took
nothing. The status consumer reports SIDs that left the queue. Everything has an expiry: a reservation of a worker
that died frees itself after `RESERVATION_SECONDS`, and a SID whose `sent` callback never comes stops counting after
`QUEUED_EXPIRY_FACTOR` x `TWILIO_QUEUE_MAX_SECONDS`, so lost receipts slow sending down but never stall it. When
entries expire without a single receipt over their whole life, receipts are taken as missing (no reachable
PUBLIC_BASE_URL) and the configured rate alone applies until a receipt shows up again. docs/sending.md: the rules.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio
from redis.exceptions import RedisError

from shared.platform.settings import Settings, parse_segments_per_second

logger = logging.getLogger(__name__)

# Before any callback showed the pool draining, the queue bound is TWILIO_QUEUE_MAX_SECONDS of this rate; with no
# TWILIO_SEGMENTS_PER_SECOND and no receipts, it is also the pace. A handful of long codes or one toll-free number.
START_SEGMENTS_PER_SECOND = 10.0
DRAIN_WINDOW_SECONDS = 20
# The bound aims this far under TWILIO_QUEUE_MAX_SECONDS: the drain rate is measured from callbacks applied in
# batches, so a window may count a batch that belongs to its neighbour (about a second's worth, 5 % of 20 s).
QUEUE_TARGET_SHARE = 0.9
# A SID still counts as queued at Twilio this many TWILIO_QUEUE_MAX_SECONDS after it was accepted, at least
# MIN_QUEUED_EXPIRY_SECONDS, when no callback said it left.
QUEUED_EXPIRY_FACTOR = 3.0
MIN_QUEUED_EXPIRY_SECONDS = 60.0
# A reservation not confirmed or released within this long belongs to a dead worker.
RESERVATION_SECONDS = 60.0
# A callback for a SID not (yet) confirmed is remembered this long: the confirm that follows it must not count it.
LEFT_MEMORY_SECONDS = 120.0
# How long a waiting sender sleeps at most before asking again (the answer may change as callbacks arrive).
MAX_WAIT_SECONDS = 0.5

# Callback statuses that mean the message left Twilio's queue. `sent`/`delivered`/`undelivered` were transmitted
# (they measure the drain rate); `failed`/`canceled` left without using the sender's time.
TRANSMITTED_STATUSES = frozenset({"sent", "delivered", "undelivered", "read"})
DROPPED_STATUSES = frozenset({"failed", "canceled"})

_PRUNE = """
local function now_ms()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function prune(state, queued, sizes, left, now)
    local expired = redis.call('ZRANGEBYSCORE', queued, '-inf', now, 'LIMIT', 0, 1000)
    if #expired > 0 then
        local total, sids = 0, 0
        for _, member in ipairs(expired) do
            total = total + (tonumber(redis.call('HGET', sizes, member)) or 0)
            redis.call('HDEL', sizes, member)
            redis.call('ZREM', queued, member)
            if string.sub(member, 1, 2) ~= 'r:' then sids = sids + 1 end
        end
        redis.call('HINCRBY', state, 'queued', -total)
        -- A SID accepted by Twilio expired without its callback (a dead worker's reservation proves nothing).
        if sids > 0 then redis.call('HSET', state, 'expired_at', now) end
    end
    redis.call('ZREMRANGEBYSCORE', left, '-inf', now)
end
local function add_drained(state, now, segments)
    local second = math.floor(now / 1000)
    local field = 'd' .. (second % (WINDOW + 2))
    local stored = redis.call('HGET', state, field)
    local count = 0
    if stored then
        local at, value = string.match(stored, '(%d+):(%d+)')
        if tonumber(at) == second then count = tonumber(value) end
    end
    redis.call('HSET', state, field, second .. ':' .. (count + segments), 'drained_at', now)
end
local function drain_rate(state, now)
    local second = math.floor(now / 1000)
    local total = 0
    for slot = 0, WINDOW + 1 do
        local stored = redis.call('HGET', state, 'd' .. slot)
        if stored then
            local at, value = string.match(stored, '(%d+):(%d+)')
            at = tonumber(at)
            if at >= second - WINDOW and at < second then total = total + tonumber(value) end
        end
    end
    return total / WINDOW
end
"""

# KEYS: state hash, queued zset (member -> expiry ms), sizes hash (member -> segments), left zset (sid -> expiry).
# ARGV: reservation token, cost, rate (0: none), queue max seconds (0: no bound), start rate, queued expiry ms,
# reservation ms. Returns {1, 0} (reserved) or {0, wait ms, reason}.
_RESERVE_SCRIPT = (
    _PRUNE
    + """
local state, queued, sizes, left = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local token, cost = ARGV[1], tonumber(ARGV[2])
local rate, queue_seconds, start_rate = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local expiry, reservation = tonumber(ARGV[6]), tonumber(ARGV[7])
local now = now_ms()
prune(state, queued, sizes, left, now)
local tokens = 0
-- Twilio answered 30022 / 63017 lately: the pace is lowered for a while (a configured rate, else the drain).
local slow_until = tonumber(redis.call('HGET', state, 'slow_until') or 0)
if slow_until > now then
    local factor = tonumber(redis.call('HGET', state, 'slow_factor') or 1)
    if rate <= 0 then rate = math.max(drain_rate(state, now), start_rate) end
    rate = rate * factor
end
if rate > 0 then
    -- A message may take the bucket into debt (down to 1 - cost): a 2-segment message then waits its turn
    -- like a 1-segment one instead of starving behind it, and the debt delays whoever comes next.
    tokens = tonumber(redis.call('HGET', state, 'tokens') or rate)
    local at = tonumber(redis.call('HGET', state, 'tokens_at') or now)
    tokens = math.min(rate, tokens + (now - at) * rate / 1000)
    redis.call('HSET', state, 'tokens', tokens, 'tokens_at', now)
    if tokens < 1 then
        return {0, math.ceil((1 - tokens) * 1000 / rate), 'rate'}
    end
end
if queue_seconds > 0 then
    local in_queue = tonumber(redis.call('HGET', state, 'queued') or 0)
    local expired_at = tonumber(redis.call('HGET', state, 'expired_at') or 0)
    local drained_at = tonumber(redis.call('HGET', state, 'drained_at') or 0)
    -- Receipts are missing when an entry expired without any receipt during its whole life.
    local receipts_missing = expired_at > 0 and drained_at < expired_at - expiry
    if not receipts_missing and in_queue > 0 then
        local drain = math.max(drain_rate(state, now), start_rate)
        local bound = queue_seconds * drain * TARGET
        if in_queue + cost > bound then
            return {0, math.ceil((in_queue + cost - bound) * 1000 / drain), 'queue'}
        end
    end
end
if rate > 0 then
    redis.call('HSET', state, 'tokens', tokens - cost)
end
if queue_seconds > 0 then
    redis.call('ZADD', queued, now + reservation, token)
    redis.call('HSET', sizes, token, cost)
    redis.call('HINCRBY', state, 'queued', cost)
end
for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, expiry * 2) end
return {1, 0, 'ok'}
"""
)

# KEYS: as above. ARGV: token, sid ('' : Twilio took nothing, refund), rate, queued expiry ms.
_SETTLE_SCRIPT = (
    _PRUNE
    + """
local state, queued, sizes, left = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local token, sid, rate, expiry = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
local cost = tonumber(redis.call('HGET', sizes, token) or ARGV[5])
if redis.call('ZREM', queued, token) == 1 then
    redis.call('HDEL', sizes, token)
    redis.call('HINCRBY', state, 'queued', -cost)
end
if sid == '' then
    if rate > 0 then
        local tokens = tonumber(redis.call('HGET', state, 'tokens') or rate)
        redis.call('HSET', state, 'tokens', math.min(rate, tokens + cost))
    end
    return 0
end
if tonumber(ARGV[6]) == 0 then return 0 end
local gone = redis.call('ZSCORE', left, sid)
if gone then
    if redis.call('ZSCORE', left, sid .. ':t') then add_drained(state, now, cost) end
    return 0
end
redis.call('ZADD', queued, now + expiry, sid)
redis.call('HSET', sizes, sid, cost)
redis.call('HINCRBY', state, 'queued', cost)
return 1
"""
)

# KEYS: as above. ARGV: left-memory ms, then pairs (sid, 1 transmitted / 0 dropped).
_LEFT_SCRIPT = (
    _PRUNE
    + """
local state, queued, sizes, left = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local memory = tonumber(ARGV[1])
local now = now_ms()
prune(state, queued, sizes, left, now)
local removed, transmitted_segments = 0, 0
for i = 2, #ARGV, 2 do
    local sid, transmitted = ARGV[i], ARGV[i + 1] == '1'
    if redis.call('ZREM', queued, sid) == 1 then
        local cost = tonumber(redis.call('HGET', sizes, sid)) or 0
        redis.call('HDEL', sizes, sid)
        redis.call('HINCRBY', state, 'queued', -cost)
        removed = removed + 1
        if transmitted then transmitted_segments = transmitted_segments + cost end
    else
        redis.call('ZADD', left, now + memory, sid)
        if transmitted then redis.call('ZADD', left, now + memory, sid .. ':t') end
    end
end
if transmitted_segments > 0 then add_drained(state, now, transmitted_segments) end
-- Any callback proves receipts arrive.
if #ARGV > 1 then redis.call('HSET', state, 'drained_at', now) end
return removed
"""
)


def _keyed(script: str) -> str:
    return script.replace("WINDOW", str(DRAIN_WINDOW_SECONDS)).replace("TARGET", str(QUEUE_TARGET_SHARE))


def pacing_keys(account_sid: str) -> list[str]:
    """The state hash, the queued set, the segment sizes and the recently-left set of one Twilio account."""
    base = f"bulksms:pacing:{{{account_sid}}}"
    return [base, f"{base}:queued", f"{base}:sizes", f"{base}:left"]


@dataclass(frozen=True, slots=True)
class PacingPolicy:
    """What the settings ask for. `rate` None: no token bucket (adaptive under the queue bound, or unpaced)."""

    enabled: bool
    rate: float | None
    queue_max_seconds: float  # 0: no bound (receipts cannot arrive)
    start_rate: float = START_SEGMENTS_PER_SECOND

    @classmethod
    def from_settings(cls, settings: Settings) -> PacingPolicy:
        configured = parse_segments_per_second(settings.twilio_segments_per_second)
        if configured == math.inf:
            return cls(enabled=False, rate=None, queue_max_seconds=0.0)
        receipts = bool(settings.public_base_url)
        queue_seconds = settings.twilio_queue_max_seconds if receipts else 0.0
        if configured is None and not receipts:
            # Nothing to learn from: the conservative start is the pace.
            return cls(enabled=True, rate=START_SEGMENTS_PER_SECOND, queue_max_seconds=0.0)
        return cls(enabled=True, rate=configured, queue_max_seconds=queue_seconds)

    @property
    def queued_expiry_seconds(self) -> float:
        return max(self.queue_max_seconds * QUEUED_EXPIRY_FACTOR, MIN_QUEUED_EXPIRY_SECONDS)

    def describe(self) -> str:
        """One line for logs and `bulksms doctor`."""
        if not self.enabled:
            return "unpaced (TWILIO_SEGMENTS_PER_SECOND=unlimited): only TWILIO_MAX_CONCURRENCY limits sending"
        rate = f"{self.rate:g} segments/s" if self.rate is not None else "adaptive (no configured rate)"
        if self.queue_max_seconds <= 0:
            return f"{rate}; no queue bound (no PUBLIC_BASE_URL, so no status callbacks): the rate alone applies"
        return (
            f"{rate}; queue at Twilio kept under {self.queue_max_seconds:g} s of the observed drain rate "
            f"(starting from {self.start_rate:g} segments/s)"
        )


def estimate_seconds(segments: int, segments_per_second: float | None) -> float | None:
    """How long `segments` take at a throughput (None when it is unknown or unlimited)."""
    if segments_per_second is None or not math.isfinite(segments_per_second) or segments_per_second <= 0:
        return None
    return segments / segments_per_second


def effective_segments_per_second(settings: Settings, client: redis.Redis | None) -> float | None:
    """The throughput sending goes at now, for estimates: the configured rate, or the drain the callbacks show
    when it is slower or no rate is configured (the start rate before anything drained); None when unpaced."""
    policy = PacingPolicy.from_settings(settings)
    if not policy.enabled:
        return None
    observed = 0.0
    if client is not None and policy.queue_max_seconds > 0 and settings.twilio_account_sid:
        try:
            observed = read_pacing_state(client, settings.twilio_account_sid).drain_segments_per_second
        except RedisError:
            observed = 0.0
    if policy.rate is None:
        return observed or policy.start_rate
    # Only a pool visibly slower than configured lowers it: a quiet moment drains nothing and means nothing.
    return observed if 0 < observed < policy.rate * 0.9 else policy.rate


class Pacer:
    """The Redis side for one worker process (asyncio): reserve segments before a send, settle after it.

    Reservations of this process take turns (one asks Redis at a time), so hundreds of waiting coroutines cost
    one Redis call per grant, not one each per poll.
    """

    def __init__(self, client: redis.asyncio.Redis, account_sid: str, policy: PacingPolicy) -> None:
        self.client = client
        self.policy = policy
        self.keys = pacing_keys(account_sid)
        self._reserve: Any = client.register_script(_keyed(_RESERVE_SCRIPT))
        self._settle: Any = client.register_script(_keyed(_SETTLE_SCRIPT))
        self._turn = asyncio.Lock()

    async def reserve(self, segments: int, deadline: float, halted: Any = None) -> str | None:
        """Wait until `segments` may go; a reservation token, or None when `deadline` (monotonic) came first or
        `halted()` turned true. Redis errors let the send go (pacing never blocks sending on an outage)."""
        policy = self.policy
        token = "r:" + uuid.uuid4().hex
        arguments = [
            token,
            max(segments, 1),
            policy.rate or 0,
            policy.queue_max_seconds,
            policy.start_rate,
            int(policy.queued_expiry_seconds * 1000),
            int(RESERVATION_SECONDS * 1000),
        ]
        async with self._turn:
            while True:
                if halted is not None and await halted():
                    return None
                try:
                    granted, wait_ms, _reason = await self._reserve(keys=self.keys, args=arguments)
                except RedisError as error:
                    logger.warning("pacing state unavailable (%s): sending unpaced meanwhile", type(error).__name__)
                    return token
                if int(granted):
                    return token
                wait = min(int(wait_ms) / 1000, MAX_WAIT_SECONDS)
                if time.monotonic() + wait >= deadline:
                    return None
                await asyncio.sleep(max(wait, 0.001))

    async def settle(self, token: str, segments: int, sid: str | None) -> None:
        """After Twilio answered: `sid` (accepted) keeps the segments counted as queued at Twilio until a callback
        says it left; None gives the reservation and its tokens back."""
        policy = self.policy
        try:
            await self._settle(
                keys=self.keys,
                args=[
                    token,
                    sid or "",
                    policy.rate or 0,
                    int(policy.queued_expiry_seconds * 1000),
                    max(segments, 1),
                    1 if policy.queue_max_seconds > 0 else 0,
                ],
            )
        except RedisError as error:
            logger.warning("could not settle a pacing reservation (%s); it expires", type(error).__name__)


# KEYS: state hash. ARGV: how long the lowered pace lasts (ms), the factor per answer batch, the lowest factor.
_SLOW_DOWN_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ms = tonumber(redis.call('HGET', KEYS[1], 'slow_until') or 0)
local factor = 1
if until_ms > now then factor = tonumber(redis.call('HGET', KEYS[1], 'slow_factor') or 1) end
factor = math.max(factor * tonumber(ARGV[2]), tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'slow_until', now + tonumber(ARGV[1]), 'slow_factor', factor)
return tostring(factor)
"""
SLOW_DOWN_SECONDS = 60.0
SLOW_DOWN_FACTOR = 0.5
SLOWEST_FACTOR = 0.1


def record_slow_down(client: redis.Redis, account_sid: str) -> float:
    """Twilio answered 30022 / 63017 (too fast): halve the pace for `SLOW_DOWN_SECONDS` (again on every new batch
    of such answers, down to a tenth); it returns to the full pace by itself. Returns the factor now applied."""
    script: Any = client.register_script(_SLOW_DOWN_SCRIPT)
    factor = script(
        keys=pacing_keys(account_sid)[:1], args=[int(SLOW_DOWN_SECONDS * 1000), SLOW_DOWN_FACTOR, SLOWEST_FACTOR]
    )
    return float(factor)


def record_left_queue(client: redis.Redis, account_sid: str, statuses: Iterable[tuple[str, str]]) -> int:
    """Status callbacks `(MessageSid, MessageStatus)` that say a message left Twilio's queue: it stops counting
    against the queue bound, and a transmitted one counts towards the drain rate. Returns how many were counted."""
    pairs: list[str] = []
    for sid, status in statuses:
        if status in TRANSMITTED_STATUSES:
            pairs += [sid, "1"]
        elif status in DROPPED_STATUSES:
            pairs += [sid, "0"]
    if not pairs:
        return 0
    script: Any = client.register_script(_keyed(_LEFT_SCRIPT))
    return int(script(keys=pacing_keys(account_sid), args=[int(LEFT_MEMORY_SECONDS * 1000), *pairs]))


@dataclass(frozen=True, slots=True)
class PacingState:
    """What the pacing hash says now (doctor, estimates, tests)."""

    queued_segments: int
    queued_messages: int
    drain_segments_per_second: float


def read_pacing_state(client: redis.Redis, account_sid: str) -> PacingState:
    state_key, queued_key, _, _ = pacing_keys(account_sid)
    state: dict[Any, Any] = client.hgetall(state_key)
    fields = {(key.decode() if isinstance(key, bytes) else key): value for key, value in state.items()}
    second = int(time.time())
    drained = 0
    for name, value in fields.items():
        if name.startswith("d") and name[1:].isdigit():
            text = value.decode() if isinstance(value, bytes) else str(value)
            at, _, count = text.partition(":")
            if second - DRAIN_WINDOW_SECONDS <= int(at) < second:
                drained += int(count)
    return PacingState(
        queued_segments=int(fields.get("queued", 0) or 0),
        queued_messages=int(client.zcard(queued_key)),
        drain_segments_per_second=drained / DRAIN_WINDOW_SECONDS,
    )
