"""A global cap on Twilio requests in flight: a Redis semaphore whose slots are leases.

The slots live in one sorted set per Twilio account: member = a random token, score = lease expiry in ms
(Redis server time, so hosts with skewed clocks agree). Every acquire first removes expired holders, so the
slots of a SIGKILLed worker free themselves within `CONCURRENCY_LEASE_SECONDS`. Holders renew their leases.

To keep Redis off the per-message path, a `SlotPool` asks for several slots in one call ("up to N"), hands a
slot from one finished request straight to the next waiting one, renews all its leases in one call, and gives
slots back to Redis as soon as nothing in the process waits for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

# KEYS[1]: the holders' sorted set. ARGV: limit, lease in ms, then one candidate token per slot wanted.
# Returns the tokens granted (a prefix of the candidates), possibly none.
_ACQUIRE_SCRIPT = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local limit = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
local free = limit - redis.call('ZCARD', KEYS[1])
local granted = {}
for i = 3, #ARGV do
    if free <= 0 then break end
    redis.call('ZADD', KEYS[1], now + lease, ARGV[i])
    granted[#granted + 1] = ARGV[i]
    free = free - 1
end
if #granted > 0 then
    redis.call('PEXPIRE', KEYS[1], lease * 2)
end
return granted
"""

# KEYS[1]: the holders' sorted set. ARGV: lease in ms, then the tokens to renew.
# Returns the tokens that were no longer held (their lease had run out and another acquire purged them).
_RENEW_SCRIPT = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local lease = tonumber(ARGV[1])
local lost = {}
for i = 2, #ARGV do
    local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
    if score and tonumber(score) > now then
        redis.call('ZADD', KEYS[1], now + lease, ARGV[i])
    else
        redis.call('ZREM', KEYS[1], ARGV[i])
        lost[#lost + 1] = ARGV[i]
    end
end
redis.call('PEXPIRE', KEYS[1], lease * 2)
return lost
"""


def concurrency_key(account_sid: str) -> str:
    """One semaphore per Twilio account: the account's limit is what we must not exceed."""
    return f"bulksms:twilio-in-flight:{account_sid}"


class ConcurrencyLimiter:
    """The Redis semaphore itself: acquire up to N slots, renew, release. Every call is one round-trip."""

    def __init__(self, client: redis.asyncio.Redis, key: str, limit: int, lease_seconds: float) -> None:
        if limit <= 0:
            raise ValueError("limit must be positive")
        self.client = client
        self.key = key
        self.limit = limit
        self.lease_seconds = lease_seconds
        self._lease_ms = max(int(lease_seconds * 1000), 1)
        self._acquire: Any = client.register_script(_ACQUIRE_SCRIPT)
        self._renew: Any = client.register_script(_RENEW_SCRIPT)

    async def try_acquire(self, wanted: int = 1) -> list[str]:
        """Take up to `wanted` free slots at once, without waiting; returns their tokens (maybe none)."""
        if wanted <= 0:
            return []
        candidates = [uuid.uuid4().hex for _ in range(min(wanted, self.limit))]
        granted = await self._acquire(keys=[self.key], args=[self.limit, self._lease_ms, *candidates])
        return [token.decode() if isinstance(token, bytes) else str(token) for token in granted]

    async def renew(self, tokens: list[str] | set[str]) -> list[str]:
        """Extend the leases of `tokens`; returns those already lost (expired), which the caller must drop."""
        if not tokens:
            return []
        lost = await self._renew(keys=[self.key], args=[self._lease_ms, *tokens])
        return [token.decode() if isinstance(token, bytes) else str(token) for token in lost]

    async def release(self, tokens: list[str] | set[str]) -> None:
        if tokens:
            await self.client.zrem(self.key, *tokens)

    async def in_flight(self) -> int:
        """Slots currently held (expired ones included until the next acquire purges them)."""
        return int(await self.client.zcard(self.key))


class SlotPool:
    """The slots one process holds for a batch of requests, shared by many coroutines.

    `async with pool.slot(deadline) as token:` waits for a slot (None when the deadline passed first).
    A background filler asks Redis for as many slots as there are waiters, polling briefly while the cap is
    full; a background renewer extends every held lease; slots nobody here waits for go back to Redis at once.
    Use it as an async context manager so everything is released at the end.
    """

    def __init__(self, limiter: ConcurrencyLimiter, poll_interval_seconds: float = 0.005) -> None:
        self.limiter = limiter
        self.poll_interval_seconds = poll_interval_seconds
        self._held: set[str] = set()
        self._free: list[str] = []
        self._waiters: deque[asyncio.Future[str]] = deque()
        self._lost: set[str] = set()
        self._filler: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._flush_scheduled = False
        self._closed = False
        self._background: set[asyncio.Future[None]] = set()

    async def __aenter__(self) -> SlotPool:
        self._renewer = asyncio.create_task(self._renew_forever())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def held(self) -> int:
        return len(self._held)

    @contextlib.asynccontextmanager
    async def slot(self, deadline: float | None = None) -> AsyncIterator[str | None]:
        token = await self.acquire(deadline)
        try:
            yield token
        finally:
            if token is not None:
                self.release(token)

    async def acquire(self, deadline: float | None = None) -> str | None:
        """A slot's token, or None if `deadline` (a `time.monotonic()` value) passes first."""
        if self._closed:
            raise RuntimeError("slot pool is closed")
        if self._free:
            return self._free.pop()
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        if self._filler is None or self._filler.done():
            self._filler = asyncio.create_task(self._fill())
        timeout = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        try:
            await asyncio.wait((waiter,), timeout=timeout)
        except asyncio.CancelledError:
            self._abandon(waiter)
            raise
        if waiter.done():
            return waiter.result()
        self._abandon(waiter)
        return None

    def _abandon(self, waiter: asyncio.Future[str]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)
        if waiter.done() and not waiter.cancelled():
            self.release(waiter.result())  # granted as we gave up: pass it on
        else:
            waiter.cancel()

    def release(self, token: str) -> None:
        """Give a slot back: to the next waiter here, else to Redis (batched with others freed meanwhile)."""
        if token in self._lost:
            self._lost.discard(token)
            self._held.discard(token)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(token)
                return
        self._free.append(token)
        if not self._flush_scheduled and not self._closed:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._start_flush)

    async def close(self) -> None:
        self._closed = True
        for task in (self._filler, self._renewer):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for waiter in self._waiters:
            waiter.cancel()
        self._waiters.clear()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        tokens, self._held, self._free = set(self._held), set(), []
        if tokens:
            try:
                await self.limiter.release(tokens)
            except RedisError:
                logger.warning("could not release %d concurrency slots; their leases will expire", len(tokens))

    def _waiting(self) -> int:
        return sum(1 for waiter in self._waiters if not waiter.done())

    async def _fill(self) -> None:
        while not self._closed:
            wanted = self._waiting() - len(self._free)
            if wanted <= 0:
                return
            try:
                tokens = await self.limiter.try_acquire(wanted)
            except RedisError as error:
                logger.warning("concurrency semaphore unavailable (%s); retrying", type(error).__name__)
                await asyncio.sleep(0.5)
                continue
            for token in tokens:
                self._held.add(token)
                self.release(token)
            if len(tokens) < wanted:
                await asyncio.sleep(self.poll_interval_seconds)

    def _start_flush(self) -> None:
        self._flush_scheduled = False
        if self._closed or not self._free or self._waiting():
            return
        tokens, self._free = self._free, []
        self._held.difference_update(tokens)
        task = asyncio.ensure_future(self._release_quietly(tokens))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _release_quietly(self, tokens: list[str]) -> None:
        try:
            await self.limiter.release(tokens)
        except RedisError:
            logger.warning("could not release %d concurrency slots; their leases expire", len(tokens))

    async def _renew_forever(self) -> None:
        interval = max(self.limiter.lease_seconds / 3, 0.05)
        while True:
            await asyncio.sleep(interval)
            if not self._held:
                continue
            try:
                lost = await self.limiter.renew(set(self._held))
            except RedisError as error:
                logger.warning("could not renew concurrency leases (%s)", type(error).__name__)
                continue
            if lost:
                # Only if this loop stalled longer than a lease: those slots may now be someone else's.
                logger.warning("lost %d concurrency slot leases", len(lost))
                for token in lost:
                    if token in self._free:
                        self._free.remove(token)
                        self._held.discard(token)
                    else:
                        self._lost.add(token)
