"""Fleet-wide pacing against a real Redis: the rate, the queue bound, expiry of lost receipts, several processes."""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
import redis
import redis.asyncio

from shared.platform.settings import Settings, SettingsError, load_settings, parse_segments_per_second
from shared.sending.pacing import (
    QUEUE_TARGET_SHARE,
    START_SEGMENTS_PER_SECOND,
    Pacer,
    PacingPolicy,
    estimate_seconds,
    read_pacing_state,
    record_left_queue,
    record_slow_down,
)

T = TypeVar("T")
ACCOUNT = "AC" + "0f" * 16
BOUND_AT_START = round(2 * 10 * QUEUE_TARGET_SHARE)  # TestQueueBound's policy before anything drained


def run_with_pacer(redis_url: str, policy: PacingPolicy, body: Callable[[Pacer], Awaitable[T]]) -> T:
    async def main() -> T:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            return await body(Pacer(client, ACCOUNT, policy))
        finally:
            await client.aclose()

    return asyncio.run(main())


def _send_for(
    redis_url: str, rate: float, start_at: float, seconds: float, segments: int, results: multiprocessing.Queue
) -> None:
    """One worker process: from `start_at` (Unix time), reserve and settle as fast as pacing allows for `seconds`;
    report the segments sent."""
    policy = PacingPolicy(enabled=True, rate=rate, queue_max_seconds=0.0)

    async def body(pacer: Pacer) -> int:
        sent = 0
        await asyncio.sleep(max(start_at - time.time(), 0))
        end = time.monotonic() + seconds

        async def one() -> None:
            nonlocal sent
            while time.monotonic() < end:
                token = await pacer.reserve(segments, end)
                if token is None:
                    return
                await pacer.settle(token, segments, f"SM{token}")
                sent += segments

        await asyncio.gather(*(one() for _ in range(20)))
        return sent

    results.put(run_with_pacer(redis_url, policy, body))


class TestSettings:
    @pytest.mark.parametrize(
        ("text", "expected"), [(None, None), ("", None), ("50", 50.0), ("2.5", 2.5), ("unlimited", math.inf)]
    )
    def test_segments_per_second_is_a_number_unlimited_or_unset(self, text: str | None, expected: float) -> None:
        assert parse_segments_per_second(text) == expected

    @pytest.mark.parametrize("text", ["0", "-3", "fast", "nan"])
    def test_a_rate_that_is_not_positive_is_refused_at_start_up(self, text: str) -> None:
        with pytest.raises(SettingsError, match="TWILIO_SEGMENTS_PER_SECOND"):
            load_settings({"TWILIO_SEGMENTS_PER_SECOND": text}, dotenv_path=None)

    def test_unset_paces_adaptively_under_the_queue_bound_when_receipts_can_arrive(self) -> None:
        policy = PacingPolicy.from_settings(Settings(public_base_url="https://example.com"))
        assert policy.enabled and policy.rate is None and policy.queue_max_seconds == 60.0

    def test_without_receipts_the_configured_rate_alone_applies(self) -> None:
        assert PacingPolicy.from_settings(Settings(twilio_segments_per_second="25")) == PacingPolicy(True, 25.0, 0.0)
        unset = PacingPolicy.from_settings(Settings())
        assert unset.rate == START_SEGMENTS_PER_SECOND and unset.queue_max_seconds == 0.0

    def test_unlimited_is_the_explicit_way_to_send_unpaced(self) -> None:
        policy = PacingPolicy.from_settings(Settings(twilio_segments_per_second="unlimited", public_base_url="x"))
        assert not policy.enabled

    def test_estimate_is_segments_over_throughput(self) -> None:
        assert estimate_seconds(5_000, 50.0) == 100.0
        assert estimate_seconds(5_000, None) is None
        assert estimate_seconds(5_000, math.inf) is None


class TestRate:
    def test_three_processes_together_stay_at_the_configured_rate(
        self, redis_url: str, redis_client: redis.Redis
    ) -> None:
        context = multiprocessing.get_context("spawn")
        results: multiprocessing.Queue = context.Queue()
        rate, seconds, start_at = 40.0, 4.0, time.time() + 4
        processes = [
            context.Process(target=_send_for, args=(redis_url, rate, start_at, seconds, 2, results)) for _ in range(3)
        ]
        for process in processes:
            process.start()
        totals = [results.get(timeout=60) for _ in processes]
        for process in processes:
            process.join(timeout=30)
        # One second of burst on top of the rate, shared by all.
        assert sum(totals) <= rate * (seconds + 1) + 2, totals
        assert sum(totals) >= rate * seconds - 2, totals
        assert all(totals), totals  # every process got its turn

    def test_a_message_longer_than_a_second_of_burst_still_goes(
        self, redis_url: str, redis_client: redis.Redis
    ) -> None:
        policy = PacingPolicy(enabled=True, rate=2.0, queue_max_seconds=0.0)

        async def body(pacer: Pacer) -> bool:
            token = await pacer.reserve(5, time.monotonic() + 10)
            return token is not None

        assert run_with_pacer(redis_url, policy, body)

    def test_a_release_gives_the_segments_back(self, redis_url: str, redis_client: redis.Redis) -> None:
        policy = PacingPolicy(enabled=True, rate=5.0, queue_max_seconds=0.0)

        async def body(pacer: Pacer) -> int:
            granted = 0
            deadline = time.monotonic() + 0.2
            for _ in range(20):
                token = await pacer.reserve(1, deadline)
                if token is None:
                    break
                granted += 1
                await pacer.settle(token, 1, None)  # Twilio took nothing: the rate was not used
            return granted

        assert run_with_pacer(redis_url, policy, body) == 20


class TestQueueBound:
    def policy(self, queue_seconds: float = 2.0) -> PacingPolicy:
        # No rate: only the bound (2 s of the observed drain, 10 segments/s before anything drained).
        return PacingPolicy(enabled=True, rate=None, queue_max_seconds=queue_seconds, start_rate=10.0)

    def fill(self, redis_url: str, count: int, seconds: float = 0.3, offset: int = 0) -> list[str]:
        """Send up to `count` one-segment messages as the bound allows within `seconds`; their SIDs."""

        async def body(pacer: Pacer) -> list[str]:
            sids = []
            deadline = time.monotonic() + seconds
            for index in range(offset, offset + count):
                token = await pacer.reserve(1, deadline)
                if token is None:
                    break
                await pacer.settle(token, 1, f"SM{index:032d}")
                sids.append(f"SM{index:032d}")
            return sids

        return run_with_pacer(redis_url, self.policy(), body)

    def test_what_twilio_holds_stays_under_the_bound_until_callbacks_say_it_left(
        self, redis_url: str, redis_client: redis.Redis
    ) -> None:
        sent = self.fill(redis_url, 100)
        assert len(sent) == BOUND_AT_START  # 90 % of 2 s x 10 segments/s: the conservative start
        assert read_pacing_state(redis_client, ACCOUNT).queued_segments == BOUND_AT_START

        assert record_left_queue(redis_client, ACCOUNT, [(sid, "sent") for sid in sent[:15]]) == 15
        state = read_pacing_state(redis_client, ACCOUNT)
        assert state.queued_segments == BOUND_AT_START - 15 and state.queued_messages == BOUND_AT_START - 15
        # Delivered after sent, and a callback for a SID we never counted, change nothing.
        assert record_left_queue(redis_client, ACCOUNT, [(sent[0], "delivered"), ("SM" + "f" * 32, "sent")]) == 0

    def test_the_bound_grows_with_the_drain_the_callbacks_show(self, redis_url: str, redis_client: redis.Redis) -> None:
        # A pool that transmits whatever it gets at once: every callback arrives right away.
        sent = 0
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            batch = self.fill(redis_url, 1000, seconds=0.02, offset=sent)
            record_left_queue(redis_client, ACCOUNT, [(sid, "sent") for sid in batch])
            sent += len(batch)
        time.sleep(1.05)  # the drain of whole seconds counts
        drained_per_second = read_pacing_state(redis_client, ACCOUNT).drain_segments_per_second
        assert drained_per_second > 10  # faster than the start rate
        allowed = len(self.fill(redis_url, 10_000, offset=sent))
        assert allowed == pytest.approx(2 * QUEUE_TARGET_SHARE * drained_per_second, abs=2)
        assert allowed > BOUND_AT_START

    def test_a_callback_before_the_confirm_is_not_counted_as_queued(
        self, redis_url: str, redis_client: redis.Redis
    ) -> None:
        async def body(pacer: Pacer) -> None:
            token = await pacer.reserve(1, time.monotonic() + 1)
            assert token is not None
            # Twilio transmitted it and the callback was applied before the worker recorded the SID.
            record_left_queue(redis_client, ACCOUNT, [("SM" + "a" * 32, "sent")])
            await pacer.settle(token, 1, "SM" + "a" * 32)

        run_with_pacer(redis_url, self.policy(), body)
        assert read_pacing_state(redis_client, ACCOUNT).queued_segments == 0

    def test_a_dead_workers_reservations_free_themselves(self, redis_url: str, redis_client: redis.Redis) -> None:
        import shared.sending.pacing as pacing

        original = pacing.RESERVATION_SECONDS
        pacing.RESERVATION_SECONDS = 0.5
        try:

            async def body(pacer: Pacer) -> list[str | None]:
                deadline = time.monotonic() + 0.2
                return [await pacer.reserve(1, deadline) for _ in range(25)]  # never settled: the worker "died"

            tokens = run_with_pacer(redis_url, self.policy(), body)
        finally:
            pacing.RESERVATION_SECONDS = original
        assert tokens.count(None) == 25 - BOUND_AT_START
        time.sleep(0.6)
        assert len(self.fill(redis_url, 100)) == BOUND_AT_START  # the room is back


class TestSlowDown:
    def test_a_rate_answer_halves_the_pace_for_a_while(self, redis_url: str, redis_client: redis.Redis) -> None:
        policy = PacingPolicy(enabled=True, rate=40.0, queue_max_seconds=0.0)

        def granted_in(seconds: float) -> int:
            async def body(pacer: Pacer) -> int:
                granted = 0
                deadline = time.monotonic() + seconds
                while await pacer.reserve(1, deadline) is not None:
                    granted += 1
                return granted

            return run_with_pacer(redis_url, policy, body)

        granted_in(1.1)  # empty the bucket's burst first
        full = granted_in(2.0)
        assert record_slow_down(redis_client, ACCOUNT) == 0.5
        slowed = granted_in(2.0)
        assert full == pytest.approx(80, abs=6)
        assert slowed == pytest.approx(40, abs=6)
        assert record_slow_down(redis_client, ACCOUNT) == 0.25  # another batch of 30022: slower still
