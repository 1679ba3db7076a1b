"""The global cap on Twilio requests in flight, against a real Redis, from several processes."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
import redis
import redis.asyncio

from shared.sending.concurrency import ConcurrencyLimiter, SlotPool

T = TypeVar("T")
KEY = "tests:in-flight"
COUNTER = "tests:counter"
HIGHEST = "tests:highest"

# Count requests "in flight" while a slot is held, and keep the highest count ever seen.
_ENTER = """
local now = redis.call('INCR', KEYS[1])
if now > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], now) end
return now
"""


def run_with_limiter(
    redis_url: str, limit: int, lease_seconds: float, body: Callable[[ConcurrencyLimiter], Awaitable[T]]
) -> T:
    async def main() -> T:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            return await body(ConcurrencyLimiter(client, KEY, limit, lease_seconds))
        finally:
            await client.aclose()

    return asyncio.run(main())


def _hammer(redis_url: str, limit: int, requests: int, seed: int) -> None:
    """One worker process: `requests` concurrent coroutines, each holding a slot for a few ms at a time."""
    random.seed(seed)

    async def body(limiter: ConcurrencyLimiter) -> None:
        enter = limiter.client.register_script(_ENTER)
        async with SlotPool(limiter, poll_interval_seconds=0.002) as pool:

            async def one_request() -> None:
                for _ in range(3):
                    async with pool.slot() as token:
                        assert token is not None
                        await enter(keys=[COUNTER, HIGHEST])
                        await asyncio.sleep(random.uniform(0.001, 0.01))
                        await limiter.client.decr(COUNTER)

            await asyncio.gather(*(one_request() for _ in range(requests)))

    run_with_limiter(redis_url, limit, 10, body)


def _hold_slots_forever(redis_url: str, limit: int, lease_seconds: float, ready: Any) -> None:
    async def body(limiter: ConcurrencyLimiter) -> None:
        async with SlotPool(limiter) as pool:
            tokens = [await pool.acquire() for _ in range(limit)]
            assert all(tokens)
            ready.set()
            await asyncio.sleep(3600)

    run_with_limiter(redis_url, limit, lease_seconds, body)


def test_the_cap_is_never_exceeded_by_several_processes_competing(redis_url: str, redis_client: redis.Redis) -> None:
    limit = 7
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_hammer, args=(redis_url, limit, 25, seed)) for seed in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0

    assert int(redis_client.get(HIGHEST) or 0) == limit  # used up to the cap, never beyond it
    assert int(redis_client.get(COUNTER) or 0) == 0
    assert redis_client.zcard(KEY) == 0  # every slot given back


def test_slots_of_a_killed_process_free_themselves_after_the_lease(redis_url: str, redis_client: redis.Redis) -> None:
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    holder = context.Process(target=_hold_slots_forever, args=(redis_url, 3, 1.0, ready))
    holder.start()
    try:
        assert ready.wait(timeout=30)
        time.sleep(1.2)  # longer than the lease: only the holder's renewals keep its slots
        assert run_with_limiter(redis_url, 3, 1.0, lambda limiter: limiter.try_acquire(3)) == []
    finally:
        holder.kill()  # SIGKILL: no release
        holder.join()

    assert run_with_limiter(redis_url, 3, 1.0, lambda limiter: limiter.try_acquire(3)) == []
    time.sleep(1.1)
    assert len(run_with_limiter(redis_url, 3, 1.0, lambda limiter: limiter.try_acquire(3))) == 3


def test_released_slots_are_free_at_once_and_acquire_grants_only_what_is_free(
    redis_url: str, redis_client: redis.Redis
) -> None:
    async def body(limiter: ConcurrencyLimiter) -> list[int]:
        first = await limiter.try_acquire(3)
        second = await limiter.try_acquire(5)  # only 2 left
        third = await limiter.try_acquire(1)
        await limiter.release(first)
        fourth = await limiter.try_acquire(5)
        return [len(first), len(second), len(third), len(fourth)]

    assert run_with_limiter(redis_url, 5, 30, body) == [3, 2, 0, 3]


def test_a_pool_waits_for_a_slot_until_its_deadline(redis_url: str, redis_client: redis.Redis) -> None:
    async def body(limiter: ConcurrencyLimiter) -> tuple[Any, float, Any]:
        taken = await limiter.try_acquire(2)
        async with SlotPool(limiter) as pool:
            started = time.monotonic()
            none = await pool.acquire(deadline=time.monotonic() + 0.3)
            waited = time.monotonic() - started
            asyncio.get_running_loop().call_later(0.1, lambda: asyncio.ensure_future(limiter.release(taken[:1])))
            granted = await pool.acquire(deadline=time.monotonic() + 5)
            return none, waited, granted

    none, waited, granted = run_with_limiter(redis_url, 2, 30, body)
    assert none is None and waited == pytest.approx(0.3, abs=0.15)
    assert granted is not None
    assert redis_client.zcard(KEY) == 1  # the pool gave its slot back on exit; the other is still held


def test_held_slots_outlive_their_lease_while_renewed(redis_url: str, redis_client: redis.Redis) -> None:
    async def body(limiter: ConcurrencyLimiter) -> list[str]:
        async with SlotPool(limiter) as pool:
            assert await pool.acquire() is not None
            await asyncio.sleep(1.0)  # three leases of 0.3 s
            return await limiter.try_acquire(2)

    assert len(run_with_limiter(redis_url, 2, 0.3, body)) == 1
