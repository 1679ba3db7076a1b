"""Sending one chunk of a broadcast: claim its pending recipients, send them concurrently, record outcomes.

The claim and the recording are in shared.sending.claims; this module holds what happens in between: one
asyncio loop per worker process sends the chunk's messages concurrently inside the global cap on requests in
flight (shared.sending.concurrency), retrying rate-limited requests with backoff, holding no database
connection while it talks to Twilio. docs/sending.md: the state machine and the exactly-once argument.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis.asyncio
from redis.exceptions import RedisError
from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    stop_after_delay,
    stop_before_delay,
    wait_exponential,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from shared.broadcasts import store as broadcast_store
from shared.broadcasts.control import HALT_FLAG_TTL_SECONDS, HaltCallable, HaltCheck, halt_key, halted_in_database
from shared.broadcasts.outgoing import DeadlinePassed, OutgoingContent, load_outgoing_content
from shared.platform.db import create_database_engine, create_session_factory, session_scope
from shared.platform.metrics import (
    TWILIO_RATE_LIMITED,
    TWILIO_REQUEST_DURATION,
    TWILIO_REQUESTS,
    MetricsRecorder,
    record_send_metrics,
)
from shared.platform.settings import Settings
from shared.sending.breaker import BreakerPolicy, observe_async, send_label
from shared.sending.claims import ClaimedMessage, claim_pending_messages, record_send_outcomes
from shared.sending.concurrency import ConcurrencyLimiter, SlotPool, concurrency_key
from shared.sending.pacing import Pacer, PacingPolicy
from shared.twilio.accounts import TestAccountNotConfigured, test_account
from shared.twilio.gateway import (
    RATE_LIMITED_REASON,
    Accepted,
    Ambiguous,
    Permanent,
    Retryable,
    SendOutcome,
    TwilioGateway,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

# A request is never started so late that it could still be in flight when its claim's lease runs out
# (see `send_deadline`): this is the extra second of slack on top of the request timeout.
LEASE_SAFETY_MARGIN_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class SendRetryPolicy:
    """Retries of Retryable outcomes only: exponential backoff with jitter, bounded in attempts and time."""

    max_attempts: int
    max_seconds: float
    initial_wait_seconds: float = 0.5
    max_wait_seconds: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> SendRetryPolicy:
        return cls(max_attempts=max(settings.send_retry_max_attempts, 1), max_seconds=settings.send_retry_max_seconds)


@dataclass
class ChunkResult:
    claimed: int = 0
    accepted: int = 0
    failed: int = 0
    unknown: int = 0
    released: int = 0  # back to `pending` after the retry budget: the task must come back for them

    @classmethod
    def of(cls, results: Sequence[tuple[ClaimedMessage, SendOutcome]]) -> ChunkResult:
        counts = cls(claimed=len(results))
        for _, outcome in results:
            if isinstance(outcome, Accepted):
                counts.accepted += 1
            elif isinstance(outcome, Permanent):
                counts.failed += 1
            elif isinstance(outcome, Ambiguous):
                counts.unknown += 1
            else:
                counts.released += 1
        return counts


@dataclass
class SendingResources:
    """What one worker process keeps for its lifetime: one event loop, Twilio client, Redis client, engine."""

    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    loop: asyncio.AbstractEventLoop
    redis: redis.asyncio.Redis
    gateway: TwilioGateway  # the live account's
    limiter: ConcurrencyLimiter  # the live account's concurrency budget
    pacer: Pacer | None = None  # the live account's pace; None: TWILIO_SEGMENTS_PER_SECOND=unlimited
    retry_policy: SendRetryPolicy = field(init=False)
    breaker_policy: BreakerPolicy = field(init=False)
    _test_channel: tuple[TwilioGateway, ConcurrencyLimiter] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.retry_policy = SendRetryPolicy.from_settings(self.settings)
        self.breaker_policy = BreakerPolicy.from_settings(self.settings)

    def channel(self, is_test: bool) -> tuple[TwilioGateway, ConcurrencyLimiter]:
        """The gateway and concurrency budget of a broadcast's account: the test account's (its own Redis key, its
        own endpoint) for a test key's broadcast, opened on first use; TestAccountNotConfigured without one."""
        if not is_test:
            return self.gateway, self.limiter
        if self._test_channel is None:
            account = test_account(self.settings)
            gateway = self.run(TwilioGateway.open(self.settings, account))
            limiter = ConcurrencyLimiter(
                self.redis,
                concurrency_key(account.account_sid),
                self.settings.twilio_max_concurrency,
                self.settings.concurrency_lease_seconds,
            )
            self._test_channel = (gateway, limiter)
        return self._test_channel

    @classmethod
    def create(cls, settings: Settings) -> SendingResources:
        settings.require("database_url", "redis_url", "twilio_account_sid")
        assert settings.redis_url is not None and settings.twilio_account_sid is not None
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        gateway = loop.run_until_complete(TwilioGateway.open(settings))
        redis_client = redis.asyncio.Redis.from_url(
            settings.redis_url, socket_connect_timeout=5, socket_timeout=10, health_check_interval=30
        )
        limiter = ConcurrencyLimiter(
            redis_client,
            concurrency_key(settings.twilio_account_sid),
            settings.twilio_max_concurrency,
            settings.concurrency_lease_seconds,
        )
        policy = PacingPolicy.from_settings(settings)
        pacer = Pacer(redis_client, settings.twilio_account_sid, policy) if policy.enabled else None
        logger.info("pacing: %s", policy.describe())
        engine = create_database_engine(settings, pool_size=2)
        return cls(settings, engine, create_session_factory(engine), loop, redis_client, gateway, limiter, pacer)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def close(self) -> None:
        try:
            self.run(self.gateway.close())
            if self._test_channel is not None:
                self.run(self._test_channel[0].close())
            self.run(self.redis.aclose())
        finally:
            self.engine.dispose()
            self.loop.close()


# Twilio's connection overrides (the fragment is never sent, so it is not part of the signed URL): retry a
# callback up to 5 times (the maximum) on any failure, so a 503 from our webhook (Redis down) is retried.
STATUS_CALLBACK_OVERRIDES = "#rc=5&rp=all"


def status_callback_url(public_base_url: str | None, message: ClaimedMessage) -> str | None:
    if not public_base_url:
        return None
    base = public_base_url.rstrip("/")
    query = f"message_id={message.id}&attempt={message.attempts}"
    return f"{base}/webhooks/twilio/status?{query}{STATUS_CALLBACK_OVERRIDES}"


def send_deadline(claimed_at: float, settings: Settings) -> float:
    """The last `time.monotonic()` at which a request for a claim taken at `claimed_at` may start.

    A request lasts at most the timeout, so every request ends before the lease does: once the lease has
    expired, the sweeper knows nothing is still in flight for that claim.
    """
    return (
        claimed_at
        + settings.claim_lease_seconds
        - settings.twilio_request_timeout_seconds
        - LEASE_SAFETY_MARGIN_SECONDS
    )


class _stop_at_deadline(stop_base):
    """Stop retrying when the next attempt would start after `deadline` (a `time.monotonic()` value)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        return time.monotonic() + retry_state.upcoming_sleep >= self.deadline


# A Retryable with this reason was never sent: the broadcast was paused or canceled (no retry, back to pending).
HALTED_REASON = "broadcast paused or canceled"
# Never sent either: the broadcast's deadline came first (no retry; recorded as `expired`).
DEADLINE_REASON = "broadcast deadline passed"
NOT_RETRIED_REASONS = frozenset({HALTED_REASON, DEADLINE_REASON})


def _last_outcome(retry_state: RetryCallState) -> SendOutcome:
    assert retry_state.outcome is not None
    outcome: SendOutcome = retry_state.outcome.result()
    return outcome


async def send_messages(
    gateway: TwilioGateway,
    slots: SlotPool,
    body: str | OutgoingContent,
    messages: Sequence[ClaimedMessage],
    *,
    public_base_url: str | None,
    retry_policy: SendRetryPolicy,
    deadline: float,
    halted: HaltCallable | None = None,
    metrics: MetricsRecorder | None = None,
    pacer: Pacer | None = None,
) -> list[tuple[ClaimedMessage, SendOutcome]]:
    """Send all messages concurrently, each holding a concurrency slot only while its request is in flight.

    `halted` (the broadcast was paused or canceled) is asked before each request: once true, the rest are
    released unsent (back to `pending`) without further retries. `metrics` gets every request's result and
    latency (buffered in-process; the caller flushes it). `pacer` (shared.sending.pacing) admits each
    message's segments before its request and learns what Twilio accepted after it.
    """

    # The broadcast's content and options (`body` alone: a plain message without options).
    content = body if isinstance(body, OutgoingContent) else OutgoingContent(body)

    async def attempt(message: ClaimedMessage, callback_url: str | None) -> SendOutcome:
        try:
            content.send_options()  # past the deadline already: no waiting for pace or slot
        except DeadlinePassed:
            return Retryable(DEADLINE_REASON)
        text_body = content.body_for(message.variables)
        segments = content.segments_for(text_body) if pacer is not None else 0
        reservation = None
        if pacer is not None:
            reservation = await pacer.reserve(segments, deadline, halted)
            if reservation is None:
                halted_now = halted is not None and await halted()
                return Retryable(HALTED_REASON if halted_now else "no pacing room before the claim's deadline")
        outcome: SendOutcome = Retryable(HALTED_REASON)
        try:
            async with slots.slot(deadline) as token:
                if token is None:
                    outcome = Retryable("no concurrency slot before the claim's deadline")
                    return outcome
                if halted is not None and await halted():
                    return outcome
                try:
                    # Taken as the request leaves, after any wait for pace or slot: the ValidityPeriod left before
                    # the broadcast's deadline shrinks as the chunk sends.
                    options = content.send_options()
                except DeadlinePassed:
                    outcome = Retryable(DEADLINE_REASON)
                    return outcome
                started = time.perf_counter()
                outcome = await gateway.send(message.to_number, text_body, callback_url, **options)
                if metrics is not None:
                    _count_request(metrics, outcome, time.perf_counter() - started)
                return outcome
        finally:
            if pacer is not None and reservation is not None:
                # Only a Retryable was surely not taken by Twilio: its segments go back. An Ambiguous send may be
                # queued at Twilio, so it counts until its reservation expires.
                if isinstance(outcome, Accepted):
                    await pacer.settle(reservation, segments, outcome.sid)
                elif isinstance(outcome, Retryable | Permanent):
                    await pacer.settle(reservation, segments, None)

    async def send_one(message: ClaimedMessage) -> SendOutcome:
        # The slot is released before each backoff sleep (it is taken inside `attempt`).
        retrying = AsyncRetrying(
            stop=(
                stop_after_attempt(retry_policy.max_attempts)
                | stop_before_delay(retry_policy.max_seconds)
                | _stop_at_deadline(deadline)
            ),
            wait=wait_random_exponential(
                multiplier=retry_policy.initial_wait_seconds, max=retry_policy.max_wait_seconds
            ),
            retry=retry_if_result(
                lambda outcome: isinstance(outcome, Retryable) and outcome.reason not in NOT_RETRIED_REASONS
            ),
            retry_error_callback=_last_outcome,
        )
        outcome: SendOutcome = await retrying(attempt, message, status_callback_url(public_base_url, message))
        return outcome

    outcomes = await asyncio.gather(*(send_one(message) for message in messages))
    return list(zip(messages, outcomes, strict=True))


def _request_result(outcome: SendOutcome) -> str:
    if isinstance(outcome, Accepted):
        return "accepted"
    if isinstance(outcome, Permanent):
        return "failed"
    if isinstance(outcome, Ambiguous):
        return "unknown"
    return "rate_limited" if outcome.reason.startswith(RATE_LIMITED_REASON) else "not_sent"


def _count_request(metrics: MetricsRecorder, outcome: SendOutcome, seconds: float) -> None:
    result = _request_result(outcome)
    metrics.increment(TWILIO_REQUESTS, {"result": result})
    metrics.observe(TWILIO_REQUEST_DURATION, {"result": result}, seconds)
    if result == "rate_limited":
        metrics.increment(TWILIO_RATE_LIMITED)


def _flush_chunk_metrics(
    resources: SendingResources,
    metrics: MetricsRecorder,
    result: ChunkResult,
    results: Sequence[tuple[ClaimedMessage, SendOutcome]],
) -> None:
    """The chunk's outcomes and its requests' latencies, written to Redis in one round trip (never raises)."""
    record_send_metrics(
        metrics,
        {"accepted": result.accepted, "failed": result.failed, "unknown": result.unknown, "released": result.released},
        [outcome.code for _, outcome in results if isinstance(outcome, Permanent)],
    )
    resources.run(metrics.flush_async(resources.redis))


def _observe_breaker(
    resources: SendingResources, broadcast_id: uuid.UUID, results: Sequence[tuple[ClaimedMessage, SendOutcome]]
) -> None:
    """The chunk's answers go into the broadcast's circuit breaker; a surge holds it (shared.sending.breaker)."""
    policy = resources.breaker_policy
    if not policy.enabled:
        return
    labels = [send_label(outcome) for _, outcome in results]
    try:
        reason = resources.run(observe_async(resources.redis, policy, broadcast_id, labels))
    except RedisError as error:
        logger.warning("circuit breaker unavailable (%s)", type(error).__name__)
        return
    if reason is None:
        return
    with session_scope(resources.session_factory) as session:
        held = broadcast_store.hold(session, [broadcast_id], reason, None)
    if held:
        logger.warning("broadcast %s held: %s", broadcast_id, reason)

        async def raise_halt_flag() -> None:
            await resources.redis.set(halt_key(broadcast_id), "held", ex=HALT_FLAG_TTL_SECONDS)

        resources.run(raise_halt_flag())


def _database_retrying() -> Retrying:
    """Recording after Twilio answered must not be lost to a database blip: retry a few times."""
    return Retrying(
        retry=retry_if_exception_type((OperationalError, InterfaceError)),
        stop=stop_after_attempt(5) | stop_after_delay(30),
        wait=wait_exponential(multiplier=0.5, max=8),
        reraise=True,
    )


def send_chunk(resources: SendingResources, broadcast_id: uuid.UUID, chunk_number: int) -> ChunkResult:
    """Claim one chunk's pending recipients, send them, record the outcomes. Safe to run twice on a chunk."""
    settings = resources.settings
    claimed_at = time.monotonic()
    with session_scope(resources.session_factory) as session:
        body = load_outgoing_content(session, broadcast_id)
        if body is None:
            logger.warning("broadcast %s not found: nothing to send for chunk %d", broadcast_id, chunk_number)
            return ChunkResult()
        try:
            gateway, limiter = resources.channel(body.test)
        except TestAccountNotConfigured as error:
            # Never the live account instead: the chunk stays pending (the sweeper offers it again) until it is set.
            logger.error("broadcast %s chunk %d not sent: %s", broadcast_id, chunk_number, error)
            return ChunkResult()
        messages = claim_pending_messages(session, broadcast_id, chunk_number, settings.claim_lease_seconds)
    if not messages:
        return ChunkResult()
    metrics = MetricsRecorder()

    async def send_all() -> list[tuple[ClaimedMessage, SendOutcome]]:
        async with SlotPool(limiter) as slots:
            return await send_messages(
                gateway,
                slots,
                body,
                messages,
                public_base_url=settings.public_base_url,
                retry_policy=resources.retry_policy,
                deadline=send_deadline(claimed_at, settings),
                halted=HaltCheck(
                    resources.redis,
                    broadcast_id,
                    halted_in_database=lambda: halted_in_database(resources.session_factory, broadcast_id),
                ),
                metrics=metrics,
                # Test traffic never spends the live account's pace (the test account is a simulator).
                pacer=None if body.test else resources.pacer,
            )

    results = resources.run(send_all())
    for attempt in _database_retrying():
        with attempt, session_scope(resources.session_factory) as session:
            record_send_outcomes(session, broadcast_id, results)
    result = ChunkResult.of(results)
    _flush_chunk_metrics(resources, metrics, result, results)
    _observe_breaker(resources, broadcast_id, results)
    logger.info(
        "broadcast %s chunk %d: %d claimed, %d accepted, %d failed, %d unknown, %d released",
        broadcast_id,
        chunk_number,
        result.claimed,
        result.accepted,
        result.failed,
        result.unknown,
        result.released,
    )
    return result
