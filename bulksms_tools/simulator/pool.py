"""The Messaging Service's sender pool: every sender transmits its own queue at its own rate, counted in segments.

Twilio accepts a message at once (the 201) and hands it to one sender of the service's pool; that sender transmits
its queue in arrival order at `segments_per_second`, so a 2-segment message takes twice as long as a 1-segment one.
A message waiting in a queue is `accepted` / `queued` and has no `date_sent`; it gets one when it leaves the queue.

The simulator runs no timer per sender: a sender's queue is one number, the moment it will be idle again
(`busy_until`). When a message arrives its departure is computed at once, `max(now, busy_until)`, and `busy_until`
moves on by its cost. For a first-in-first-out queue that is exact, and it costs a few microseconds per message.
Departure times are kept per sender (sorted, as an array), so queue lengths and "how much left after time T" are
bisections.

What cannot be queued fails a little later, as with Twilio (a status callback `failed` with the code):
- 30001 queue overflow: the sender's backlog already holds `queue_limit_seconds` (Twilio: 10 hours);
- 30036 validity period expired: the message would still be queued after its `ValidityPeriod` (default 36,000 s);
- 30022 rate limit exceeded, on demand: a share of sends, or what a sender is handed above a configured rate;
- 30023 / 30027 (daily caps, reset at midnight Pacific time) and 63038 (rolling 24 hours), on demand: every message
  past the configured number. A cap can also be answered on the request itself (HTTP 400 with the code).
None of these occupies the sender: a dropped message costs it no time.

Assignment of a message to a sender (Twilio does not document its own): `least_loaded` (default) picks the sender
that would finish transmitting it first; `sticky` keeps each recipient on one sender (a hash of the number), like
Twilio's Sticky Sender. An explicit `From` that is a pool sender uses that sender.

With no sender configured the pool is one sender of unlimited rate: every message leaves the queue the moment it is
accepted, which is how the simulator behaved before it had pools (and what keeps the existing tests' timings).
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
import re
import zlib
from array import array
from bisect import bisect_left, bisect_right
from collections import deque
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeGuard
from zoneinfo import ZoneInfo

from bulksms_tools.simulator.clock import SimulatorClock

# Twilio: a Messaging Service's sender queue holds 10 hours of the sender's throughput.
DEFAULT_QUEUE_LIMIT_SECONDS = 36_000.0
# Twilio's ValidityPeriod when the request names none (also its maximum).
DEFAULT_VALIDITY_PERIOD_SECONDS = 36_000
# The sender a Messaging Service "picks" when the pool is unlimited (Twilio's own valid test sender).
UNLIMITED_SENDER_ADDRESS = "+15005550006"
# US and Canadian toll-free area codes: a phone number's type comes from its number.
TOLL_FREE_PREFIXES = ("+1800", "+1833", "+1844", "+1855", "+1866", "+1877", "+1888")
PACIFIC = ZoneInfo("America/Los_Angeles")
ROLLING_DAY_SECONDS = 86_400.0

OVERFLOW_CODE = 30001
RATE_LIMIT_CODE = 30022
VALIDITY_EXPIRED_CODE = 30036
# Daily caps: 30023 (10DLC brand cap) and 30027 (T-Mobile) reset at midnight Pacific; 63038 is a rolling 24 hours.
CALENDAR_DAY_CAP_CODES = frozenset({30023, 30027})
ROLLING_CAP_CODES = frozenset({63038})
DAILY_CAP_CODES = CALENDAR_DAY_CAP_CODES | ROLLING_CAP_CODES

# error_message of a message the pool failed (Twilio's titles for these codes).
POOL_ERROR_MESSAGES: dict[int, str] = {
    OVERFLOW_CODE: "Queue overflow",
    RATE_LIMIT_CODE: "US A2P 10DLC - Rate Limits Exceeded",
    30023: "US A2P 10DLC - Daily Message Cap Reached",
    30027: "US A2P 10DLC - T-Mobile Daily Message Limit Reached",
    VALIDITY_EXPIRED_CODE: "Validity Period Expired",
    63038: "Account exceeded the daily messages limit",
}


class SenderKind(StrEnum):
    LONG_CODE = "long_code"
    TOLL_FREE = "toll_free"
    SHORT_CODE = "short_code"
    ALPHA = "alpha"


class Assignment(StrEnum):
    LEAST_LOADED = "least_loaded"
    STICKY = "sticky"


class CapAnswer(StrEnum):
    CALLBACK = "callback"  # accepted (201), then `failed` with the code: what Twilio does
    REQUEST = "request"  # refused at once: HTTP 400 with the code, nothing stored


# Twilio's resource SID prefix per sender list (Messaging API v1).
SID_PREFIXES = {
    SenderKind.LONG_CODE: "PN",
    SenderKind.TOLL_FREE: "PN",
    SenderKind.SHORT_CODE: "SC",
    SenderKind.ALPHA: "AI",
}
E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
SHORT_CODE = re.compile(r"^[0-9]{3,8}$")
ALPHA_SENDER = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")


class PoolConfigError(ValueError):
    """A pool configuration the simulator refuses; the message lists every problem."""


@dataclass(frozen=True)
class SenderSpec:
    kind: SenderKind
    segments_per_second: float
    address: str | None = None  # generated from the kind and position when not given


@dataclass(frozen=True)
class DailyCap:
    code: int
    limit: int  # messages per day (per rolling 24 h for 63038) before the cap answers
    answered_at: CapAnswer = CapAnswer.CALLBACK


@dataclass(frozen=True)
class PoolConfig:
    senders: tuple[SenderSpec, ...] = ()  # none: one sender of unlimited rate
    assignment: Assignment = Assignment.LEAST_LOADED
    queue_limit_seconds: float = DEFAULT_QUEUE_LIMIT_SECONDS
    rate_limit_30022: float = 0.0  # segments/s a sender takes (1 s burst) before it answers 30022; 0: never
    error_rate_30022: float = 0.0  # share of sends failed with 30022
    daily_cap: DailyCap | None = None

    def as_document(self) -> dict[str, Any]:
        return {
            "senders": [
                {"type": spec.kind.value, "segments_per_second": spec.segments_per_second, "address": spec.address}
                for spec in self.senders
            ],
            "assignment": self.assignment.value,
            "queue_limit_seconds": self.queue_limit_seconds,
            "rate_limit_30022_segments_per_second": self.rate_limit_30022,
            "error_rate_30022": self.error_rate_30022,
            "daily_cap": None
            if self.daily_cap is None
            else {
                "code": self.daily_cap.code,
                "limit": self.daily_cap.limit,
                "answered_at": self.daily_cap.answered_at.value,
            },
        }


# ------------------------------------------------------------------------------------------- configuration


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _sender_specs(items: Any, problems: list[str]) -> tuple[SenderSpec, ...]:
    if not isinstance(items, list):
        problems.append("senders must be a list of {type, count, segments_per_second, addresses}")
        return ()
    specs: list[SenderSpec] = []
    for position, item in enumerate(items):
        where = f"senders[{position}]"
        if not isinstance(item, dict):
            problems.append(f"{where} must be an object")
            continue
        unknown = set(item) - {"type", "count", "segments_per_second", "address", "addresses"}
        if unknown:
            problems.append(f"{where}: unknown keys {sorted(unknown)}")
        try:
            kind = SenderKind(item.get("type", SenderKind.LONG_CODE.value))
        except ValueError:
            problems.append(f"{where}.type must be one of {[k.value for k in SenderKind]}")
            continue
        rate = item.get("segments_per_second")
        if not _number(rate) or rate <= 0:
            problems.append(f"{where}.segments_per_second must be a number above 0")
            continue
        count = item.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 10_000:
            problems.append(f"{where}.count must be an integer from 1 to 10000")
            continue
        addresses = item.get("addresses")
        if "address" in item:
            addresses = [item["address"]]
        if addresses is not None and (
            not isinstance(addresses, list) or len(addresses) != count or not all(isinstance(a, str) for a in addresses)
        ):
            problems.append(f"{where}.addresses must be a list of {count} strings")
            continue
        for index in range(count):
            address = addresses[index] if addresses is not None else None
            if address is not None:
                problem = _address_problem(kind, address)
                if problem:
                    problems.append(f"{where}: {problem}")
            specs.append(SenderSpec(kind, float(rate), address))
    return tuple(specs)


def _address_problem(kind: SenderKind, address: str) -> str | None:
    if kind is SenderKind.SHORT_CODE:
        return None if SHORT_CODE.match(address) else f"short code {address!r} must be 3 to 8 digits"
    if kind is SenderKind.ALPHA:
        return None if ALPHA_SENDER.match(address) else f"alphanumeric sender {address!r} is not 1-11 letters/digits"
    if not E164.match(address):
        return f"phone number {address!r} is not E.164"
    toll_free = address.startswith(TOLL_FREE_PREFIXES)
    if (kind is SenderKind.TOLL_FREE) != toll_free:
        return f"{address} is {'a toll-free' if toll_free else 'not a toll-free'} number (type {kind.value})"
    return None


def _daily_cap(value: Any, problems: list[str]) -> DailyCap | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"code", "limit", "answered_at"}:
        problems.append("daily_cap must be null or {code, limit, answered_at}")
        return None
    code, limit = value.get("code"), value.get("limit", 0)
    if code not in DAILY_CAP_CODES:
        problems.append(f"daily_cap.code must be one of {sorted(DAILY_CAP_CODES)}")
        return None
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        problems.append("daily_cap.limit must be an integer >= 0 (messages before the cap answers)")
        return None
    try:
        answered_at = CapAnswer(value.get("answered_at", CapAnswer.CALLBACK.value))
    except ValueError:
        problems.append(f"daily_cap.answered_at must be one of {[a.value for a in CapAnswer]}")
        return None
    return DailyCap(int(code), limit, answered_at)


def updated_pool_config(current: PoolConfig, document: Any) -> PoolConfig:
    """`current` with the keys of a `POST /_simulator/pool` document applied (absent keys are kept)."""
    if not isinstance(document, dict):
        raise PoolConfigError("expected a JSON object")
    problems: list[str] = []
    known = {
        "senders",
        "assignment",
        "queue_limit_seconds",
        "rate_limit_30022_segments_per_second",
        "error_rate_30022",
        "daily_cap",
    }
    unknown = set(document) - known
    if unknown:
        problems.append(f"unknown keys {sorted(unknown)}; known: {sorted(known)}")
    changes: dict[str, Any] = {}
    if "senders" in document:
        changes["senders"] = _sender_specs(document["senders"], problems)
    if "assignment" in document:
        try:
            changes["assignment"] = Assignment(document["assignment"])
        except ValueError:
            problems.append(f"assignment must be one of {[a.value for a in Assignment]}")
    if "queue_limit_seconds" in document:
        value = document["queue_limit_seconds"]
        if _number(value) and value > 0:
            changes["queue_limit_seconds"] = float(value)
        else:
            problems.append("queue_limit_seconds must be a number above 0")
    if "rate_limit_30022_segments_per_second" in document:
        value = document["rate_limit_30022_segments_per_second"]
        if _number(value) and value >= 0:
            changes["rate_limit_30022"] = float(value)
        else:
            problems.append("rate_limit_30022_segments_per_second must be a number >= 0 (0: never)")
    if "error_rate_30022" in document:
        value = document["error_rate_30022"]
        if _number(value) and 0 <= value <= 1:
            changes["error_rate_30022"] = float(value)
        else:
            problems.append("error_rate_30022 must be between 0 and 1")
    if "daily_cap" in document:
        changes["daily_cap"] = _daily_cap(document["daily_cap"], problems)
    if problems:
        raise PoolConfigError("; ".join(problems))
    return replace(current, **changes)


def parse_pool_spec(text: str) -> tuple[SenderSpec, ...]:
    """The `--pool` flag: `COUNTxRATE[:TYPE]`, comma-separated (`10x5`, `10x5,2x100:short_code`)."""
    items = []
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        shape, _, kind = part.partition(":")
        count, separator, rate = shape.partition("x")
        if not separator:
            raise PoolConfigError(f"--pool item {part!r} is not COUNTxRATE[:TYPE]")
        try:
            items.append(
                {"type": kind or SenderKind.LONG_CODE.value, "count": int(count), "segments_per_second": float(rate)}
            )
        except ValueError as error:
            raise PoolConfigError(f"--pool item {part!r} is not COUNTxRATE[:TYPE]") from error
    return updated_pool_config(PoolConfig(), {"senders": items}).senders


# ------------------------------------------------------------------------------------------------ senders


def _generated_address(kind: SenderKind, position: int) -> str:
    """A sender address of the kind, numbered in the 555-01XX range kept for fiction (long codes, toll-free)."""
    if kind is SenderKind.LONG_CODE:
        return f"+1415555{100 + position:04d}"
    if kind is SenderKind.TOLL_FREE:
        return f"+1833555{100 + position:04d}"
    if kind is SenderKind.SHORT_CODE:
        return str(89100 + position)
    return "BulkSMS" if position == 0 else f"BulkSMS{position}"


class Sender:
    """One sender of the pool and its queue: when it is idle again, and when each of its messages left."""

    __slots__ = (
        "address",
        "backlog_peak_seconds",
        "busy_until",
        "created",
        "cumulative_segments",
        "departures",
        "kind",
        "position",
        "queue_peak",
        "segments_per_second",
        "sid",
        "tokens",
        "tokens_at",
    )

    def __init__(self, kind: SenderKind, address: str, segments_per_second: float, created: float) -> None:
        self.kind = kind
        self.address = address
        self.segments_per_second = segments_per_second
        self.sid = SID_PREFIXES[kind] + hashlib.md5(f"{kind.value}:{address}".encode()).hexdigest()  # noqa: S324 - an id
        self.created = created
        self.position = 0  # in the pool's list
        self.busy_until = 0.0
        # When each message this sender transmitted (or will) leaves the queue, ascending, and the running total of
        # their segments: "transmitted by T" and "queued at T" are bisections.
        self.departures = array("d")
        self.cumulative_segments = array("q")
        self.queue_peak = 0
        self.backlog_peak_seconds = 0.0
        self.tokens = 0.0
        self.tokens_at = 0.0

    @property
    def unlimited(self) -> bool:
        return math.isinf(self.segments_per_second)

    def cost(self, segments: int) -> float:
        return 0.0 if self.unlimited else segments / self.segments_per_second

    def transmitted(self, now: float) -> int:
        return bisect_right(self.departures, now)

    def queue_length(self, now: float) -> int:
        return len(self.departures) - self.transmitted(now)

    def segments_transmitted(self, now: float) -> int:
        sent = self.transmitted(now)
        return self.cumulative_segments[sent - 1] if sent else 0

    def segments_queued(self, now: float) -> int:
        total = self.cumulative_segments[-1] if self.cumulative_segments else 0
        return total - self.segments_transmitted(now)

    def take_tokens(self, segments: int, rate_limit: float, now: float) -> bool:
        """A token bucket of one second at `rate_limit` segments/s: False when these segments exceed it."""
        self.tokens = min(rate_limit, self.tokens + (now - self.tokens_at) * rate_limit)
        self.tokens_at = now
        if self.tokens < segments:
            return False
        self.tokens -= segments
        return True

    def summary(self, now: float) -> dict[str, Any]:
        sent = self.transmitted(now)
        return {
            "sid": self.sid,
            "type": self.kind.value,
            "address": self.address,
            "segments_per_second": None if self.unlimited else self.segments_per_second,
            "queue_length": len(self.departures) - sent,
            "queue_peak": self.queue_peak,
            "backlog_seconds": max(0.0, self.busy_until - now),
            "backlog_peak_seconds": self.backlog_peak_seconds,
            "transmitted": sent,
            "transmitted_segments": self.segments_transmitted(now),
            "first_transmitted_at": self.departures[0] if sent else None,
            "last_transmitted_at": self.departures[sent - 1] if sent else None,
        }


class _CapState:
    """How much of a daily cap is used: per Pacific calendar day, or over a rolling 24 hours."""

    def __init__(self, cap: DailyCap) -> None:
        self.cap = cap
        self.day: object = None
        self.used = 0
        self.recent: deque[float] = deque()

    def _roll(self, now: float) -> None:
        if self.cap.code in ROLLING_CAP_CODES:
            while self.recent and self.recent[0] <= now - ROLLING_DAY_SECONDS:
                self.recent.popleft()
            self.used = len(self.recent)
            return
        day = datetime.fromtimestamp(now, PACIFIC).date()
        if day != self.day:
            self.day, self.used = day, 0

    def exhausted(self, now: float) -> bool:
        self._roll(now)
        return self.used >= self.cap.limit

    def count(self, now: float) -> None:
        self._roll(now)
        self.used += 1
        if self.cap.code in ROLLING_CAP_CODES:
            self.recent.append(now)

    def resets_at(self, now: float) -> float | None:
        """When the cap lets messages through again (None while it is not reached)."""
        if not self.exhausted(now):
            return None
        if self.cap.code in ROLLING_CAP_CODES:
            if not self.recent:
                return None  # a limit of 0 never resets
            return self.recent[len(self.recent) - self.cap.limit] + ROLLING_DAY_SECONDS
        local = datetime.fromtimestamp(now, PACIFIC)
        midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), PACIFIC)
        return midnight.astimezone(UTC).timestamp()

    def summary(self, now: float) -> dict[str, Any]:
        resets_at = self.resets_at(now)
        return {
            "code": self.cap.code,
            "limit": self.cap.limit,
            "answered_at": self.cap.answered_at.value,
            "used": self.used,
            "exhausted": resets_at is not None,
            "resets_at": resets_at,
        }


@dataclass(frozen=True, slots=True)
class Admission:
    """Where a message went: the sender's address, when it leaves the queue, or the code it fails with."""

    sender_address: str
    leaves_queue_at: float
    failure_code: int | None = None


class SenderPool:
    """The pool's senders and queues, its counters, and the daily cap; `admit` places each accepted message."""

    def __init__(self, config: PoolConfig, clock: SimulatorClock) -> None:
        self.clock = clock
        self.configure(config)

    def configure(self, config: PoolConfig, new_senders: bool = False, fresh: bool = False) -> None:
        """Apply a configuration. New senders (`new_senders`, or a different sender list) start with empty queues
        and counters; messages already placed keep their times. A different daily cap starts unused. `fresh`
        starts everything anew (a reset)."""
        now = self.clock.now()
        previous: PoolConfig | None = None if fresh else getattr(self, "config", None)
        self.config = config
        if previous is None or new_senders or previous.senders != config.senders:
            self._build_senders(config, now)
        if previous is None or previous.daily_cap != config.daily_cap:
            self.cap = None if config.daily_cap is None else _CapState(config.daily_cap)

    def _build_senders(self, config: PoolConfig, now: float) -> None:
        positions: dict[SenderKind, int] = {}
        self.senders: list[Sender] = []
        for spec in config.senders:
            position = positions.get(spec.kind, 0)
            positions[spec.kind] = position + 1
            address = spec.address or _generated_address(spec.kind, position)
            self.senders.append(Sender(spec.kind, address, spec.segments_per_second, now))
        # Sends from a number outside the pool, and every send when there is no pool: transmitted at once.
        self.direct = Sender(SenderKind.LONG_CODE, UNLIMITED_SENDER_ADDRESS, math.inf, now)
        for position, sender in enumerate(self.senders):
            sender.position = position
        self._next_sender = 0
        self.by_address = {sender.address: sender for sender in self.senders}
        self.total_rate = sum(sender.segments_per_second for sender in self.senders)
        self.failed_by_code: dict[int, int] = {}
        # (departure, segments) of every message still queued anywhere in the pool.
        self._queued: list[tuple[float, int]] = []
        self.queued_segments = 0
        self.queue_peak = 0
        self.queue_peak_segments = 0

    @property
    def unlimited(self) -> bool:
        return not self.senders

    def request_refusal(self, now: float) -> int | None:
        """The code to refuse a request with, when a daily cap answered at the request is reached."""
        cap = self.cap
        if cap is not None and cap.cap.answered_at is CapAnswer.REQUEST and cap.exhausted(now):
            return cap.cap.code
        return None

    def _choose(self, to: str, segments: int, now: float, from_address: str | None) -> Sender:
        if from_address is not None:
            return self.by_address.get(from_address, self.direct)
        senders = self.senders
        if not senders:
            return self.direct
        if self.config.assignment is Assignment.STICKY:
            return senders[zlib.crc32(to.encode()) % len(senders)]
        # The sender that would finish this message first; ties (idle senders) taken in turn, not always the first.
        count = len(senders)
        start = self._next_sender % count
        best = senders[start]
        best_finish = math.inf
        for offset in range(count):
            sender = senders[(start + offset) % count]
            finish = max(now, sender.busy_until) + sender.cost(segments)
            if finish < best_finish:
                best, best_finish = sender, finish
        self._next_sender = best.position + 1
        return best

    def _fail(self, sender: Sender, code: int, at: float) -> Admission:
        self.failed_by_code[code] = self.failed_by_code.get(code, 0) + 1
        return Admission(sender.address, at, code)

    def admit(
        self, to: str, segments: int, now: float, validity_seconds: int | None = None, from_address: str | None = None
    ) -> Admission:
        """Queue one accepted message on a sender, or decide the code it fails with (it then costs no sender time)."""
        config = self.config
        sender = self._choose(to, segments, now, from_address)
        cap = self.cap
        if cap is not None and cap.cap.answered_at is CapAnswer.CALLBACK and cap.exhausted(now):
            return self._fail(sender, cap.cap.code, now)
        if (config.error_rate_30022 and random.random() < config.error_rate_30022) or (
            config.rate_limit_30022 and not sender.take_tokens(segments, config.rate_limit_30022, now)
        ):
            return self._fail(sender, RATE_LIMIT_CODE, now)
        departure = max(now, sender.busy_until)
        waiting = departure - now
        if waiting > config.queue_limit_seconds:
            return self._fail(sender, OVERFLOW_CODE, now)
        validity = DEFAULT_VALIDITY_PERIOD_SECONDS if validity_seconds is None else validity_seconds
        if waiting > validity:
            # Still queued when its validity ends: Twilio drops it then, before the sender reaches it.
            return self._fail(sender, VALIDITY_EXPIRED_CODE, now + validity)
        sender.busy_until = departure + sender.cost(segments)
        departures = sender.departures
        departures.append(departure)
        cumulative = sender.cumulative_segments
        cumulative.append((cumulative[-1] if cumulative else 0) + segments)
        if cap is not None:
            cap.count(now)
        if departure > now:
            self._note_queued(sender, departure, segments, now)
        return Admission(sender.address, departure)

    def _note_queued(self, sender: Sender, departure: float, segments: int, now: float) -> None:
        length = sender.queue_length(now)
        if length > sender.queue_peak:
            sender.queue_peak = length
        backlog = sender.busy_until - now
        if backlog > sender.backlog_peak_seconds:
            sender.backlog_peak_seconds = backlog
        queued = self._queued
        while queued and queued[0][0] <= now:
            self.queued_segments -= heapq.heappop(queued)[1]
        heapq.heappush(queued, (departure, segments))
        self.queued_segments += segments
        if len(queued) > self.queue_peak:
            self.queue_peak = len(queued)
        if self.queued_segments > self.queue_peak_segments:
            self.queue_peak_segments = self.queued_segments

    def _all_senders(self) -> list[Sender]:
        return [*self.senders, self.direct]

    def summary(self) -> dict[str, Any]:
        """Queues now and at their peak, what left them and when, what failed: the pool part of the summary."""
        now = self.clock.now()
        senders = [sender.summary(now) for sender in self.senders]
        every = [*senders, self.direct.summary(now)]
        sent = [entry for entry in every if entry["transmitted"]]
        return {
            "configured": not self.unlimited,
            **self.config.as_document(),
            "segments_per_second": self.total_rate or None,
            "senders": senders,
            "queue_length": sum(entry["queue_length"] for entry in every),
            "queue_segments": sum(sender.segments_queued(now) for sender in self._all_senders()),
            "queue_peak": self.queue_peak,
            "queue_peak_segments": self.queue_peak_segments,
            # The deepest the pool's queue has been, in seconds of the whole pool's throughput.
            "queue_peak_seconds": self.queue_peak_segments / self.total_rate if self.total_rate else 0.0,
            "transmitted": sum(entry["transmitted"] for entry in every),
            "transmitted_segments": sum(entry["transmitted_segments"] for entry in every),
            "first_transmitted_at": min((entry["first_transmitted_at"] for entry in sent), default=None),
            "last_transmitted_at": max((entry["last_transmitted_at"] for entry in sent), default=None),
            "failed_by_code": {str(code): count for code, count in sorted(self.failed_by_code.items())},
            "daily_cap_state": None if self.cap is None else self.cap.summary(now),
            "now": now,
        }

    def transmissions(self, since: float | None, until: float | None) -> dict[str, Any]:
        """Messages and segments that left the queues in [since, until] (until: at most now)."""
        now = self.clock.now()
        end = now if until is None else min(until, now)
        start = -math.inf if since is None else since
        messages = segments = 0
        first: float | None = None
        last: float | None = None
        for sender in self._all_senders():
            departures = sender.departures
            low, high = bisect_left(departures, start), bisect_right(departures, end)
            if high <= low:
                continue
            cumulative = sender.cumulative_segments
            messages += high - low
            segments += cumulative[high - 1] - (cumulative[low - 1] if low else 0)
            first = departures[low] if first is None else min(first, departures[low])
            last = departures[high - 1] if last is None else max(last, departures[high - 1])
        window = end - since if since is not None and end > since else None
        return {
            "since": since,
            "until": end,
            "messages": messages,
            "segments": segments,
            "first_at": first,
            "last_at": last,
            "segments_per_second": segments / window if window else None,
        }

    def senders_of(self, kinds: frozenset[SenderKind]) -> list[Sender]:
        return [sender for sender in self.senders if sender.kind in kinds]
