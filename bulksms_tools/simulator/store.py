"""The simulator's memory of accepted messages: compact records, indexed by recipient, rendered on demand.

A record holds only what the Message resource needs; its SID is not stored but derived from its position
(a scrambled counter behind a per-run key), so a million messages cost a few hundred bytes each. A message's
status is derived from the clock. It moves one step every `step_seconds` after `base` (its creation, or its
SendAt), except that the step that needs the sender ("sent", or a failure after transmission) waits until the
message leaves its sender's queue (`left_queue_at`, decided by the pool on acceptance); `date_sent` is that
moment, and a message still queued has none. The callback dispatcher posts the same steps at the same moments,
so a fetch never lags a callback.
"""

from __future__ import annotations

import secrets
import time
from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

from bulksms_tools.simulator.clock import SimulatorClock
from bulksms_tools.simulator.magic_numbers import DELIVERY_ERROR_MESSAGES
from bulksms_tools.simulator.pool import POOL_ERROR_MESSAGES, UNLIMITED_SENDER_ADDRESS

API_VERSION = "2010-04-01"
# The number a Messaging Service "picks" to send from when it has no pool (Twilio's own valid test sender).
MESSAGING_SERVICE_SENDER = UNLIMITED_SENDER_ADDRESS
PRICE_PER_SEGMENT = 0.0079
DUPLICATE_RECIPIENTS_KEPT = 100

_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# SIDs: a per-run key, then the record's position scrambled by an invertible multiply-and-xor (mod 2**64).
_SID_MULTIPLIER = 0x9E3779B97F4A7C15
_SID_INVERSE = pow(_SID_MULTIPLIER, -1, 2**64)
_UINT64 = 2**64 - 1


class Outcome:
    """The statuses a message moves through after acceptance, and the error code of its final status.

    `leave_step` (1-based) is the first step that happens once the message has left its sender's queue: it waits
    for the departure. `transmitted` says whether the message was sent at all (then it has a `date_sent`), or was
    dropped from the queue (queue overflow, validity expired, a rate or cap answer).
    """

    __slots__ = ("error_code", "error_message", "leave_step", "steps", "transmitted")

    def __init__(
        self, steps: tuple[str, ...], error_code: int | None = None, leave_step: int = 2, transmitted: bool = True
    ) -> None:
        self.steps = steps
        self.error_code = error_code
        self.error_message = (
            (DELIVERY_ERROR_MESSAGES.get(error_code) or POOL_ERROR_MESSAGES.get(error_code)) if error_code else None
        )
        self.leave_step = leave_step
        self.transmitted = transmitted


DELIVERED = Outcome(("queued", "sent", "delivered"))


def outcome_for_failure(final_status: str, error_code: int) -> Outcome:
    if final_status == "failed":  # a failure before the carrier took it: no "sent"
        return Outcome(("queued", "failed"), error_code)
    return Outcome(("queued", "sent", final_status), error_code)


_DROPPED: dict[int, Outcome] = {}


def outcome_for_dropped(error_code: int, expired: bool) -> Outcome:
    """A message the pool never transmitted: `failed` with the code. Dropped at once (overflow, rate, cap), or
    queued until its validity ran out (30036)."""
    key = -error_code if expired else error_code
    outcome = _DROPPED.get(key)
    if outcome is None:
        steps = ("queued", "failed") if expired else ("failed",)
        outcome = _DROPPED[key] = Outcome(steps, error_code, leave_step=len(steps), transmitted=False)
    return outcome


class MessageRecord:
    __slots__ = (
        "base",
        "body",
        "created",
        "left_queue_at",
        "num_media",
        "options",
        "outcome",
        "picked",
        "scheduled",
        "segments",
        "sender",
        "sent_body",
        "service_sid",
        "step_seconds",
        "to",
    )

    def __init__(
        self,
        to: str,
        sender: str | None,
        service_sid: str | None,
        body: str | None,
        segments: int,
        num_media: int,
        outcome: Outcome,
        created: float,
        base: float,
        step_seconds: float,
        scheduled: bool,
        options: dict[str, Any] | None = None,
        left_queue_at: float | None = None,
        picked: str = MESSAGING_SERVICE_SENDER,
        sent_body: str | None = None,
    ) -> None:
        self.to = to
        self.sender = sender
        self.service_sid = service_sid
        # The body as Twilio stores it (Smart Encoding applied), and what the request carried when that differs.
        self.body = body
        self.sent_body = sent_body
        self.segments = segments
        self.num_media = num_media
        self.outcome = outcome
        self.created = created
        self.base = base
        self.step_seconds = step_seconds
        self.scheduled = scheduled
        # When the message leaves its sender's queue (transmitted, or dropped for its failure code), and the
        # sender the Messaging Service picked.
        self.left_queue_at = base if left_queue_at is None else left_queue_at
        self.picked = picked
        # The request's optional parameters (MediaUrl, ValidityPeriod, SmartEncoded), None when none was sent:
        # shown by GET /_simulator/messages so tests can see what reached "Twilio".
        self.options = options

    def step_time(self, step: int) -> float:
        """When the outcome's `step` (1-based) happens: every `step_seconds` after `base`, except that the step
        that needs the sender waits for the departure from its queue, and the later ones follow it."""
        leave_step = self.outcome.leave_step
        if step < leave_step:
            return self.base + step * self.step_seconds
        left = max(self.left_queue_at, self.base + leave_step * self.step_seconds)
        return left + (step - leave_step) * self.step_seconds

    def steps_done(self, now: float) -> int:
        """-1 while scheduled, 0 in the initial status, else how many of the outcome's steps have happened."""
        if self.scheduled and now < self.base:
            return -1
        done = 0
        for step in range(1, len(self.outcome.steps) + 1):
            if self.step_time(step) > now:
                break
            done = step
        return done

    def date_sent(self, now: float) -> float | None:
        """When the message left its sender's queue; None while it waits there, or if it never left."""
        if not self.outcome.transmitted or now < self.left_queue_at or (self.scheduled and now < self.base):
            return None
        return self.left_queue_at

    @property
    def initial_status(self) -> str:
        # Twilio: "accepted" when a Messaging Service picks the sender, "queued" with an explicit From.
        return "accepted" if self.service_sid or self.scheduled else "queued"

    def status_after(self, steps_done: int) -> str:
        if steps_done < 0:
            return "scheduled"
        if steps_done == 0:
            return self.initial_status
        return self.outcome.steps[steps_done - 1]

    def sending_number(self) -> str:
        return self.sender or self.picked


class RFC2822Clock:
    """Format epoch seconds as Twilio does (`Thu, 24 Aug 2023 05:01:45 +0000`), caching the last second."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def format(self, timestamp: float) -> str:
        second = int(timestamp)
        if second != self._second:
            parts = time.gmtime(second)
            day = f"{_WEEKDAYS[parts.tm_wday]}, {parts.tm_mday:02d} {_MONTHS[parts.tm_mon - 1]} {parts.tm_year}"
            self._text = f"{day} {parts.tm_hour:02d}:{parts.tm_min:02d}:{parts.tm_sec:02d} +0000"
            self._second = second
        return self._text


class MessageStore:
    """Accepted messages in arrival order, with an index by recipient and duplicate tracking."""

    def __init__(self, account_sid: str, clock: SimulatorClock | None = None) -> None:
        self.account_sid = account_sid
        self.clock = clock or SimulatorClock()
        self.dates = RFC2822Clock()
        self.clear()

    def clear(self) -> None:
        self.records: list[MessageRecord] = []
        # One int for a recipient messaged once (the usual case), a list of ints after that.
        self.by_recipient: dict[str, int | list[int]] = {}
        self.duplicate_recipients: list[str] = []
        self.duplicate_recipient_count = 0
        self.run_key = secrets.token_hex(8)
        self._scramble_key = int(self.run_key, 16)

    def now(self) -> float:
        """The simulator clock's seconds, never going backwards, so records stay sorted by creation time."""
        return self.clock.now()

    def add(self, record: MessageRecord) -> int:
        index = len(self.records)
        self.records.append(record)
        existing = self.by_recipient.get(record.to)
        if existing is None:
            self.by_recipient[record.to] = index
        elif isinstance(existing, int):
            self.by_recipient[record.to] = [existing, index]
            self.duplicate_recipient_count += 1
            if len(self.duplicate_recipients) < DUPLICATE_RECIPIENTS_KEPT:
                self.duplicate_recipients.append(record.to)
        else:
            existing.append(index)
        return index

    @property
    def distinct_recipients(self) -> int:
        return len(self.by_recipient)

    def sid(self, index: int) -> str:
        prefix = "MM" if self.records[index].num_media else "SM"
        scrambled = (((index + 1) * _SID_MULTIPLIER) & _UINT64) ^ self._scramble_key
        return f"{prefix}{self.run_key}{scrambled:016x}"

    def find(self, sid: str) -> int | None:
        """The index of the message with this SID, or None if this run never issued it."""
        if len(sid) != 34 or sid[:2] not in ("SM", "MM") or sid[2:18] != self.run_key:
            return None
        try:
            scrambled = int(sid[18:], 16)
        except ValueError:
            return None
        index = (((scrambled ^ self._scramble_key) * _SID_INVERSE) & _UINT64) - 1
        if not 0 <= index < len(self.records) or self.sid(index) != sid:
            return None
        return index

    def select(
        self,
        to: str | None = None,
        sender: str | None = None,
        sent_from: float | None = None,
        sent_until: float | None = None,
        now: float | None = None,
    ) -> Sequence[int]:
        """Indices of matching messages, oldest first; cheap by `to` (indexed).

        `sent_from` / `sent_until` filter on `date_sent` (as Twilio's DateSent does): a message still queued, or
        dropped from its queue, has none and never matches them.
        """
        candidates: Sequence[int]
        if to is not None:
            entry = self.by_recipient.get(to)
            candidates = [] if entry is None else [entry] if isinstance(entry, int) else entry
        else:
            candidates = range(len(self.records))
        records = self.records
        if sent_until is not None:
            # Sent no later than `sent_until` means created no later either: cut the tail by creation time.
            candidates = candidates[: bisect_right(candidates, sent_until, key=lambda i: records[i].created)]
        if sent_from is not None or sent_until is not None:
            moment = self.now() if now is None else now
            low = -1.0 if sent_from is None else sent_from
            high = moment if sent_until is None else sent_until
            candidates = [
                i for i in candidates if (sent := records[i].date_sent(moment)) is not None and low <= sent <= high
            ]
        if sender is not None:
            candidates = [i for i in candidates if records[i].sending_number() == sender]
        return candidates

    def resource(self, index: int, now: float | None = None) -> dict[str, Any]:
        """The Message resource in Twilio's shape, with the status the message has reached by `now`."""
        record = self.records[index]
        if now is None:
            now = self.now()
        steps_done = record.steps_done(now)
        outcome = record.outcome
        final = steps_done == len(outcome.steps)
        status = record.status_after(steps_done)
        updated = record.created if steps_done <= 0 else record.step_time(steps_done)
        priced = final and status != "failed"
        sent = record.date_sent(now)
        sid = self.sid(index)
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}"
        dates = self.dates
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": record.body,
            "date_created": dates.format(record.created),
            "date_sent": None if sent is None else dates.format(sent),
            "date_updated": dates.format(updated),
            "direction": "outbound-api",
            "error_code": outcome.error_code if final else None,
            "error_message": outcome.error_message if final else None,
            "from": record.sender if record.sender or steps_done <= 0 else record.picked,
            "messaging_service_sid": record.service_sid,
            "num_media": str(record.num_media),
            "num_segments": str(record.segments),
            "price": f"-{PRICE_PER_SEGMENT * record.segments:.5f}" if priced else None,
            "price_unit": "USD" if priced else None,
            "sid": sid,
            "status": status,
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": record.to,
            "uri": f"{uri}.json",
        }
