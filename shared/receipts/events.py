"""Applying Twilio status callbacks to PostgreSQL: keep every event once, move each message's status only forward.

The webhook queues raw callbacks in a Redis Stream (shared.receipts.status_queue); `drain_status_stream` reads them in
batches, `apply_status_events` stores each batch in `status_events` and applies it in one transaction, and only
then are the stream entries acknowledged. Matching: the SID first (current attempt in `messages`, older ones in
`message_attempts`), then the message id + attempt from our callback URL (a SID the worker never recorded);
an event that matches nothing stays with `applied_at` NULL and is retried by `apply_unapplied_events` for a day,
then marked abandoned.
A callback is the same callback when it names the same (MessageSid, MessageStatus, ErrorCode): a repeat (Twilio's
retry, an attacker's replay, a batch read again) is neither stored nor applied again. STOP/START replies travel
in the same stream and are stored the same way (status `received`) before they change the opt-out list.
Retention and erasure remove raw events here too (`delete_events_received_before`, `redact_events`): this module is
the only writer of `status_events`.
docs/receipts.md: the ordering rules, delivery retries and the exactly-once argument.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import redis
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from shared.broadcasts import store as broadcast_store
from shared.broadcasts.control import HALT_FLAG_TTL_SECONDS, halt_key, hold_broadcasts
from shared.compliance.opt_outs import SOURCE_CALLBACK_21610, SOURCE_INBOUND, add_opt_outs, classify_reply, lift_stop
from shared.compliance.phone_numbers import mask_phone_number, normalise_phone_number
from shared.messages import store as message_store
from shared.messages.store import AttemptReceipt, ReceiptUpdate
from shared.platform.db import session_scope
from shared.platform.metrics import record_applied_callbacks
from shared.platform.models import UNFINISHED_MESSAGE_STATES, BroadcastStatus, MessageState
from shared.platform.settings import Settings
from shared.receipts.delivery_status import STATUS_RANK, StatusReport, advances, fold_status_reports
from shared.receipts.status_queue import (
    INBOUND_REPLY,
    STATUS_CALLBACK,
    TEST_STATUS_CALLBACK,
    ConsumerSlot,
    QueuedCallback,
    StatusStreamConsumer,
    claim_periodic_pass,
    ensure_consumer_group,
)
from shared.sending.breaker import BreakerPolicy, receipt_label
from shared.sending.breaker import observe as observe_breaker
from shared.sending.pacing import record_left_queue, record_slow_down
from shared.twilio.error_codes import (
    CALENDAR_DAY_CAP_CODES,
    CALLBACK_OPT_OUT_CODES,
    HOLD_ALL_CODES,
    SLOW_DOWN_CODES,
    UNCOUNTED_RETRY_CODES,
)

logger = logging.getLogger(__name__)

INBOUND_STATUS = "received"  # Twilio's status of a message it received for us: how replies are kept
# Two consumer slots may hold copies of one callback in batches applied at the same moment; they take turns on
# this transaction-scoped lock for the "already stored?" check and the insert, so a copy is never stored twice.
# Batches of one broadcast already take turns on its row lock, so this costs little.
STATUS_EVENTS_DEDUPE_LOCK = 0x62756C6B736D7301  # "bulksms" + 1: an arbitrary, fixed advisory lock key
RETRY_JITTER = 0.2  # ± 20 % on every delivery retry delay
# Consumers draining the stream at once (each holds one slot); more gain little, as batches of one broadcast
# take turns on its row lock.
STATUS_CONSUMER_SLOTS = 2
STATUS_CONSUMER_LOCK_SECONDS = 15.0  # a killed consumer's slot (and its unacknowledged batch) frees after this
STATUS_DRAIN_SECONDS = 5.0  # one task drains for at most this long, then returns its worker process
UNAPPLIED_PASS_INTERVAL_SECONDS = 5.0
UNAPPLIED_RETRY_WINDOW = timedelta(hours=24)  # older unmatched events are left for a human to look at

_MAX_INT32 = 2**31 - 1
_MAX_INT64 = 2**63 - 1
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_UNFINISHED = frozenset(str(state) for state in UNFINISHED_MESSAGE_STATES)


# ---------------------------------------------------------------------------------------------------- pure parts


@dataclass(frozen=True, slots=True)
class ReceivedEvent:
    """A queued callback, parsed and bounded to the columns of `status_events`."""

    message_sid: str
    status: str
    error_code: int | None
    message_id: int | None
    attempt: int | None
    parameters: dict[str, Any]
    received_at: datetime


@dataclass(frozen=True, slots=True)
class DeliveryRetryPolicy:
    """When an undelivered / failed receipt earns a new attempt (DELIVERY_RETRY_* settings)."""

    retry_codes: frozenset[int]
    max_attempts: int
    base_seconds: float
    # 30001: a new attempt once Twilio's queue has drained (TWILIO_QUEUE_MAX_SECONDS).
    drained_seconds: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryRetryPolicy:
        return cls(
            settings.delivery_retry_codes,
            settings.delivery_retry_max_attempts,
            settings.delivery_retry_base_seconds,
            settings.twilio_queue_max_seconds,
        )


def _bounded_int(value: Any, maximum: int) -> int | None:
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if 0 <= number <= maximum else None


def _first(value: Any) -> str:
    if isinstance(value, list):
        return str(value[0]) if value else ""
    return "" if value is None else str(value)


def parse_inbound_reply(callback: QueuedCallback) -> ReceivedEvent | None:
    """A queued STOP/START reply as an event of its own SID (status `received`); None without a SID."""
    sid = _first(callback.parameters.get("MessageSid")).strip()
    if not sid:
        return None
    return ReceivedEvent(
        message_sid=sid[:34],
        status=INBOUND_STATUS,
        error_code=None,
        message_id=None,
        attempt=None,
        parameters=callback.parameters,
        received_at=datetime.fromtimestamp(callback.received_at, UTC),
    )


def parse_callback(callback: QueuedCallback) -> ReceivedEvent | None:
    """The event a queued callback describes; None when it lacks a SID or status (the webhook refuses those)."""
    sid = _first(callback.parameters.get("MessageSid")).strip()
    status = _first(callback.parameters.get("MessageStatus")).strip().lower()
    if not sid or not status:
        return None
    error_code = callback.parameters.get("ErrorCode")
    return ReceivedEvent(
        message_sid=sid[:34],
        status=status[:32],
        error_code=_bounded_int(_first(error_code), _MAX_INT32) if error_code not in (None, "") else None,
        message_id=_bounded_int(callback.message_id, _MAX_INT64),
        attempt=_bounded_int(callback.attempt, _MAX_INT32),
        parameters=callback.parameters,
        received_at=datetime.fromtimestamp(callback.received_at, UTC),
    )


def message_state_for(status: str) -> MessageState:
    """Our message state after Twilio reports `status` (before any delivery retry decision)."""
    if status in ("accepted", "scheduled"):
        return MessageState.ACCEPTED
    if status in ("delivered", "read"):
        return MessageState.DELIVERED
    if status == "undelivered":
        return MessageState.UNDELIVERED
    if status in ("failed", "canceled"):
        return MessageState.FAILED
    return MessageState.SENT  # queued, sending, sent


def retry_delay_seconds(attempts: int, base_seconds: float, jitter: float) -> float:
    """Delay before attempt `attempts + 1`: base * 4^(attempts-1), scaled by (1 + jitter), jitter in ±0.2."""
    return base_seconds * 4 ** max(attempts - 1, 0) * (1.0 + jitter)


@dataclass(frozen=True, slots=True)
class MessageRow:
    id: int
    broadcast_id: uuid.UUID
    to_number: str
    state: str
    attempts: int
    twilio_sid: str | None
    twilio_status: str | None
    error_code: int | None
    # A completed broadcast sends nothing more (its summary went out): a late callback's verdict is final.
    broadcast_completed: bool = False
    uncounted_attempts: int = 0  # rate and cap answers: not delivery attempts


# A message Twilio answered 30022 / 63017 (too fast) gets its new attempt after this long, at the lowered pace.
SLOW_DOWN_RETRY_SECONDS = 30.0
PACIFIC = ZoneInfo("America/Los_Angeles")
ROLLING_DAY = timedelta(hours=24)


def cap_resets_at(code: int, received_at: datetime) -> datetime:
    """When a daily cap answered with `code` lets messages through again: 30023 / 30027 at the next midnight
    Pacific time; 63038 (a rolling 24 hours, whose oldest message we do not know) a day after the answer."""
    if code in CALENDAR_DAY_CAP_CODES:
        local = received_at.astimezone(PACIFIC)
        midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), PACIFIC)
        return midnight.astimezone(UTC)
    return received_at + ROLLING_DAY


def uncounted_retry_due(
    code: int | None, received_at: datetime, now: datetime, policy: DeliveryRetryPolicy
) -> datetime | None:
    """When a message answered with a rate or cap code is sent again (None: not such a code)."""
    if code is None or code not in UNCOUNTED_RETRY_CODES:
        return None
    if code in HOLD_ALL_CODES:
        return cap_resets_at(code, received_at)
    if code in SLOW_DOWN_CODES:
        return now + timedelta(seconds=SLOW_DOWN_RETRY_SECONDS)
    return now + timedelta(seconds=policy.drained_seconds)


def decide_message_update(
    row: MessageRow,
    report: StatusReport,
    received_at: datetime,
    now: datetime,
    policy: DeliveryRetryPolicy,
    jitter: Callable[[], float] = lambda: random.uniform(-RETRY_JITTER, RETRY_JITTER),
) -> ReceiptUpdate | None:
    """What the message becomes after `report` for its current attempt; None if nothing moves forward."""
    if not advances(row.twilio_status, report.status):
        return None
    state = message_state_for(report.status)
    final_at: datetime | None = None
    retry_due_at: datetime | None = None
    error_code = report.error_code if report.error_code is not None else row.error_code
    error_message = None
    if state in (MessageState.UNDELIVERED, MessageState.FAILED):
        error_message = f"Twilio reported {report.status}" + (f" (error {error_code})" if error_code else "")
        uncounted_due = uncounted_retry_due(error_code, received_at, now, policy)
        if uncounted_due is not None and not row.broadcast_completed:
            # Never transmitted: sent again whatever the attempts so far (this one will not count either).
            state = MessageState.RETRY_SCHEDULED
            retry_due_at = uncounted_due
        elif (
            error_code in policy.retry_codes
            and row.attempts - row.uncounted_attempts < policy.max_attempts
            and not row.broadcast_completed
        ):
            state = MessageState.RETRY_SCHEDULED
            retry_due_at = now + timedelta(seconds=retry_delay_seconds(row.attempts, policy.base_seconds, jitter()))
        else:
            final_at = now
    elif state == MessageState.DELIVERED:
        final_at = now
    return ReceiptUpdate(
        id=row.id,
        state=str(state),
        twilio_sid=report.message_sid,
        twilio_status=report.status,
        error_code=error_code,
        error_message=error_message,
        retry_due_at=retry_due_at,
        final_at=final_at,
        last_receipt_at=received_at,
    )


def fold_events(events: Sequence[ReceivedEvent]) -> StatusReport | None:
    """The most advanced report among one SID's events (see shared.receipts.delivery_status.fold_status_reports)."""
    folded = fold_status_reports(StatusReport(e.message_sid, e.status, e.error_code) for e in events)
    return next(iter(folded.values()), None)


# --------------------------------------------------------------------------------------------- database parts


@dataclass
class ApplyReport:
    stored: int = 0  # status callbacks written to status_events (repeats of stored ones excluded)
    applied: int = 0  # events matched to a message or an attempt
    unmatched: int = 0  # left with applied_at NULL for a later pass
    messages_updated: int = 0
    old_attempts_updated: int = 0
    retries_scheduled: int = 0
    opted_out: int = 0  # numbers added to the opt-out list (21610 in a callback, or a STOP reply)
    inbound_replies: int = 0  # STOP/START replies stored and applied (repeats excluded)
    opted_in: int = 0  # numbers a START reply took off the list
    stored_by_status: Counter[str] = field(default_factory=Counter)  # the stored status callbacks, by status
    abandoned: int = 0  # unmatched for UNAPPLIED_RETRY_WINDOW: no longer retried
    slow_down_answers: int = 0  # 30022 / 63017: pacing slows down
    held: list[uuid.UUID] = field(default_factory=list)  # broadcasts a daily cap held (their halt flags are due)
    # (broadcast, label) of each final receipt, for the circuit breaker (shared.sending.breaker)
    outcomes: list[tuple[uuid.UUID, str]] = field(default_factory=list)

    def add(self, other: ApplyReport) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(frozen=True, slots=True)
class _StoredEvent:
    id: int
    message_sid: str
    status: str
    error_code: int | None
    message_id: int | None
    attempt: int | None
    to_number: str | None
    received_at: datetime


def apply_status_events(
    session: Session, callbacks: Sequence[QueuedCallback], settings: Settings, now: datetime | None = None
) -> ApplyReport:
    """Store one batch of queued callbacks and STOP/START replies, and apply what was new; the caller commits
    (then acknowledges the batch)."""
    status_events = [parse_callback(c) for c in callbacks if c.kind == STATUS_CALLBACK]
    test_account_events = [parse_callback(c) for c in callbacks if c.kind == TEST_STATUS_CALLBACK]
    status_events += admit_test_account_events(session, [e for e in test_account_events if e is not None])
    replies = [parse_inbound_reply(c) for c in callbacks if c.kind == INBOUND_REPLY]
    stored = store_new_events(session, [e for e in status_events if e is not None])
    report = apply_stored_events(
        session, [event_id for _, event_id in stored], DeliveryRetryPolicy.from_settings(settings), now
    )
    report.stored = len(stored)
    report.stored_by_status = Counter(event.status for event, _ in stored)
    report.add(apply_inbound_replies(session, store_new_events(session, [e for e in replies if e is not None])))
    return report


def admit_test_account_events(session: Session, events: Sequence[ReceivedEvent]) -> list[ReceivedEvent]:
    """The callbacks signed by the test account that may be applied: those naming (in our callback URL) a message
    of a test broadcast, with a SID no live message or attempt has. The rest are dropped unstored: the test
    account's token must never change a real message."""
    if not events:
        return []
    message_ids = [event.message_id for event in events if event.message_id is not None]
    test_messages = set(
        session.execute(
            text(
                "SELECT m.id FROM messages AS m JOIN broadcasts AS b ON b.id = m.broadcast_id "
                "WHERE m.id = ANY(CAST(:ids AS bigint[])) AND b.test"
            ),
            {"ids": message_ids},
        ).scalars()
    )
    sids = [event.message_sid for event in events]
    live_sids = set(
        session.execute(
            text(
                "SELECT m.twilio_sid FROM messages AS m JOIN broadcasts AS b ON b.id = m.broadcast_id "
                "WHERE m.twilio_sid = ANY(CAST(:sids AS text[])) AND NOT b.test "
                "UNION SELECT a.twilio_sid FROM message_attempts AS a JOIN messages AS m ON m.id = a.message_id "
                "JOIN broadcasts AS b ON b.id = m.broadcast_id "
                "WHERE a.twilio_sid = ANY(CAST(:sids AS text[])) AND NOT b.test"
            ),
            {"sids": sids},
        ).scalars()
    )
    admitted = [e for e in events if e.message_id in test_messages and e.message_sid not in live_sids]
    if len(admitted) < len(events):
        logger.warning(
            "%d callbacks signed by the test account named no test message: dropped", len(events) - len(admitted)
        )
    return admitted


def store_events(session: Session, events: Sequence[ReceivedEvent]) -> list[int]:
    """Insert the events not stored yet; returns their ids."""
    return [event_id for _, event_id in store_new_events(session, events)]


def store_new_events(session: Session, events: Sequence[ReceivedEvent]) -> list[tuple[ReceivedEvent, int]]:
    """Insert the events not stored yet, in order; returns each with its id.

    An event is already stored when one with the same (SID, status, error code) is: Twilio retrying a callback
    we answered too slowly, the same signed request replayed, or a batch applied and committed whose
    acknowledgement to Redis was lost (crash, Redis blip) and that is read again.
    """
    if not events:
        return []
    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": STATUS_EVENTS_DEDUPE_LOCK})
    already = {
        (row.message_sid, row.message_status, row.error_code)
        for row in session.execute(
            text(
                "SELECT message_sid, message_status, error_code FROM status_events "
                "WHERE message_sid = ANY(CAST(:sids AS text[]))"
            ),
            {"sids": list({e.message_sid for e in events})},
        )
    }
    fresh: list[ReceivedEvent] = []
    for event in events:
        key = (event.message_sid, event.status, event.error_code)
        if key not in already:
            already.add(key)
            fresh.append(event)
    if not fresh:
        return []
    rows = session.execute(
        text(
            "INSERT INTO status_events (received_at, message_sid, message_status, error_code, message_id, "
            "attempt, parameters) "
            "SELECT * FROM unnest(CAST(:received AS timestamptz[]), CAST(:sids AS text[]), "
            "CAST(:statuses AS text[]), CAST(:codes AS integer[]), CAST(:message_ids AS bigint[]), "
            "CAST(:attempts AS integer[]), CAST(:parameters AS jsonb[])) RETURNING id"
        ),
        {
            "received": [e.received_at for e in fresh],
            "sids": [e.message_sid for e in fresh],
            "statuses": [e.status for e in fresh],
            "codes": [e.error_code for e in fresh],
            "message_ids": [e.message_id for e in fresh],
            "attempts": [e.attempt for e in fresh],
            "parameters": [json.dumps(e.parameters) for e in fresh],
        },
    ).scalars()
    return list(zip(fresh, rows, strict=True))


def apply_inbound_replies(session: Session, replies: Sequence[tuple[ReceivedEvent, int]]) -> ApplyReport:
    """Newly stored STOP/START replies, in the order they arrived: STOP adds the sender to the opt-out list,
    START takes them off (through shared.compliance.opt_outs); each reply is then marked applied."""
    report = ApplyReport()
    for event, _ in replies:
        parameters = event.parameters
        sender = normalise_phone_number(_first(parameters.get("From")))
        body = _first(parameters.get("Body"))
        kind = classify_reply(body, _first(parameters.get("OptOutType")) or None)
        if sender is None or kind not in ("stop", "start"):
            continue  # the webhook queues only these; an older or hand-made entry changes nothing
        if kind == "stop":
            reason = f"replied {(body or 'STOP').strip()[:40]}"
            report.opted_out += len(add_opt_outs(session, [sender], source=SOURCE_INBOUND, reason=reason).added)
        else:
            report.opted_in += lift_stop(session, sender)  # only a STOP's own suppression
        logger.info("inbound %s from %s applied", kind.upper(), mask_phone_number(sender))
    if replies:
        session.execute(
            text("UPDATE status_events SET applied_at = now() WHERE id = ANY(CAST(:ids AS bigint[]))"),
            {"ids": [event_id for _, event_id in replies]},
        )
    report.inbound_replies = len(replies)
    return report


def apply_unapplied_events(
    session: Session, settings: Settings, page_size: int = 1000, max_pages: int = 20
) -> ApplyReport:
    """Retry events that matched nothing when they arrived (their message may exist now), oldest first.

    Events older than UNAPPLIED_RETRY_WINDOW are marked abandoned first: they leave the index this pass walks,
    so a pile of them is never read again (they stay, for a human, until retention deletes them)."""
    report = ApplyReport()
    policy = DeliveryRetryPolicy.from_settings(settings)
    report.abandoned = abandon_stale_unapplied(session)
    after_id = 0
    for _ in range(max_pages):
        ids = list(
            session.execute(
                text(
                    "SELECT id FROM status_events WHERE applied_at IS NULL AND abandoned_at IS NULL AND id > :after "
                    "AND received_at > now() - make_interval(secs => :window) ORDER BY id LIMIT :limit"
                ),
                {"after": after_id, "window": UNAPPLIED_RETRY_WINDOW.total_seconds(), "limit": page_size},
            ).scalars()
        )
        if not ids:
            break
        report.add(apply_stored_events(session, ids, policy))
        after_id = ids[-1]
        if len(ids) < page_size:
            break
    return report


def abandon_stale_unapplied(session: Session, limit: int = 10_000) -> int:
    """Mark up to `limit` unmatched events older than UNAPPLIED_RETRY_WINDOW abandoned (oldest first)."""
    result = session.execute(
        text(
            "UPDATE status_events SET abandoned_at = now() WHERE id IN ("
            "    SELECT id FROM status_events WHERE applied_at IS NULL AND abandoned_at IS NULL "
            "    AND received_at <= now() - make_interval(secs => :window) ORDER BY id LIMIT :limit)"
        ),
        {"window": UNAPPLIED_RETRY_WINDOW.total_seconds(), "limit": limit},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


# What a redacted event keeps: enough to know what Twilio reported, nothing about the person (To, Body, ...).
REDACTED_EVENT_KEEPS = (
    "AccountSid",
    "ApiVersion",
    "ErrorCode",
    "MessageSid",
    "MessageStatus",
    "MessagingServiceSid",
    "SmsSid",
    "SmsStatus",
)


def redact_events(session: Session, message_sids: Sequence[str], message_ids: Sequence[int]) -> int:
    """Erasure: strip the raw parameters of the events of these messages (by SID, or by our message id for a
    SID never recorded) down to REDACTED_EVENT_KEEPS; returns how many events were redacted."""
    if not message_sids and not message_ids:
        return 0
    result = session.execute(
        text(
            "UPDATE status_events SET parameters = ("
            "    SELECT coalesce(jsonb_object_agg(key, value), '{}'::jsonb) FROM jsonb_each(parameters) "
            "    WHERE key = ANY(CAST(:kept AS text[]))) "
            "WHERE message_sid = ANY(CAST(:sids AS text[])) OR message_id = ANY(CAST(:ids AS bigint[]))"
        ),
        {"kept": list(REDACTED_EVENT_KEEPS), "sids": list(message_sids), "ids": list(message_ids)},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def delete_events_received_before(session: Session, cutoff: datetime, limit: int) -> int:
    """Retention: delete up to `limit` raw events received before `cutoff`, whatever their message (oldest
    first; the BRIN index on received_at finds them). Returns how many were deleted."""
    result = session.execute(
        text(
            "DELETE FROM status_events WHERE id IN ("
            "    SELECT id FROM status_events WHERE received_at < :cutoff ORDER BY received_at LIMIT :limit)"
        ),
        {"cutoff": cutoff, "limit": limit},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def apply_stored_events(
    session: Session, event_ids: Sequence[int], policy: DeliveryRetryPolicy, now: datetime | None = None
) -> ApplyReport:
    """Apply stored, unapplied events to their messages (current attempt) or archived attempts."""
    report = ApplyReport()
    if not event_ids:
        return report
    now = now or session.execute(text("SELECT now()")).scalar_one()
    events = [
        _StoredEvent(*row)
        for row in session.execute(
            text(
                "SELECT id, message_sid, message_status, error_code, message_id, attempt, parameters->>'To', "
                "received_at FROM status_events WHERE id = ANY(CAST(:ids AS bigint[])) AND applied_at IS NULL "
                "ORDER BY id FOR UPDATE SKIP LOCKED"
            ),
            {"ids": list(event_ids)},
        )
    ]
    if not events:
        return report
    sids = list({event.message_sid for event in events})
    message_by_sid: dict[str, int] = dict(
        session.execute(
            text("SELECT twilio_sid, id FROM messages WHERE twilio_sid = ANY(CAST(:sids AS text[]))"), {"sids": sids}
        ).all()
    )
    attempt_by_sid: dict[str, tuple[int, int]] = {
        row.twilio_sid: (row.message_id, row.attempt_number)
        for row in session.execute(
            text(
                "SELECT twilio_sid, message_id, attempt_number FROM message_attempts "
                "WHERE twilio_sid = ANY(CAST(:sids AS text[]))"
            ),
            {"sids": sids},
        )
    }
    by_url = [e for e in events if e.message_sid not in message_by_sid and e.message_sid not in attempt_by_sid]
    url_messages = _load_messages(session, [e.message_id for e in by_url if e.message_id is not None], lock=False)

    current: dict[int, list[_StoredEvent]] = defaultdict(list)  # message id -> events of its current attempt
    old: dict[tuple[int, int], list[_StoredEvent]] = defaultdict(list)  # (message id, attempt) -> events
    ignored: list[_StoredEvent] = []  # matched, but carries nothing to apply: stored, marked applied
    unmatched: list[_StoredEvent] = []
    for event in events:
        if event.message_sid in message_by_sid:
            current[message_by_sid[event.message_sid]].append(event)
        elif event.message_sid in attempt_by_sid:
            old[attempt_by_sid[event.message_sid]].append(event)
        elif event.message_id in url_messages and event.attempt is not None:
            message = url_messages[event.message_id]
            if event.attempt < message.attempts:
                old[(message.id, event.attempt)].append(event)
            elif event.attempt > message.attempts:
                unmatched.append(event)  # that attempt has not been claimed yet here: wait for it
            elif message.twilio_sid in (None, event.message_sid):
                current[message.id].append(event)
            else:
                logger.warning(
                    "callback for %s names message %s attempt %s, which has SID %s: kept, not applied to it",
                    event.message_sid,
                    message.id,
                    event.attempt,
                    message.twilio_sid,
                )
                ignored.append(event)
        else:
            unmatched.append(event)

    # Lock order shared with the senders and the sweeper: broadcast rows first (sorted), then message rows.
    involved = set(current) | {message_id for message_id, _ in old}
    broadcast_of = _broadcast_ids(session, involved)
    broadcast_store.lock(session, sorted(set(broadcast_of.values())))
    locked = _load_messages(session, list(current), lock=True)

    updates: list[ReceiptUpdate] = []
    applied: list[_StoredEvent] = list(ignored)
    left_unfinished: set[uuid.UUID] = set()
    for message_id, message_events in current.items():
        row = locked.get(message_id)
        sid = message_events[0].message_sid
        # Re-checked under the lock: the message may have been retried or given this SID meanwhile.
        if (
            row is None
            or row.twilio_sid not in (None, sid)
            or (row.twilio_sid is None and any(e.attempt != row.attempts for e in message_events))
        ):
            unmatched.extend(message_events)
            continue
        applied.extend(message_events)
        folded = fold_events([_as_received(e) for e in message_events])
        if folded is None:
            continue
        received_at = max(e.received_at for e in message_events)
        update = decide_message_update(row, folded, received_at, now, policy)
        if update is None and row.twilio_sid is None:
            # Nothing newer than what we know, but the SID is new to us: record it (and leave sending/unknown).
            update = ReceiptUpdate(
                row.id,
                MessageState.ACCEPTED if row.state in _UNFINISHED else row.state,
                sid,
                row.twilio_status or folded.status,
                row.error_code,
                None,
                None,
                None,
                received_at,
            )
        if update is not None:
            updates.append(update)
            report.retries_scheduled += update.state == MessageState.RETRY_SCHEDULED
            if row.state in _UNFINISHED:
                left_unfinished.add(row.broadcast_id)
    report.messages_updated = message_store.apply_receipts(session, updates)
    report.slow_down_answers = sum(1 for update in updates if update.error_code in SLOW_DOWN_CODES)
    for update in updates:
        label = receipt_label(update.state, update.error_code)
        broadcast_id = broadcast_of.get(update.id)
        if label is not None and broadcast_id is not None:
            report.outcomes.append((broadcast_id, label))
    caps = [update for update in updates if update.error_code in HOLD_ALL_CODES and update.retry_due_at is not None]
    if caps:
        # A daily cap is the brand's or the account's: every broadcast that may send waits for the reset.
        latest = max(caps, key=lambda update: update.retry_due_at or now)
        reason = f"Twilio error {latest.error_code}: daily message cap reached ({len(caps)} answers)"
        report.held = broadcast_store.hold(session, None, reason, latest.retry_due_at)

    for (message_id, attempt_number), attempt_events in old.items():
        applied.extend(attempt_events)
        report.old_attempts_updated += _apply_to_old_attempt(session, message_id, attempt_number, attempt_events)

    report.opted_out = _record_opt_outs(session, applied, {**url_messages, **locked})
    receipts: dict[uuid.UUID, datetime] = {}
    for event in applied:
        broadcast_id = broadcast_of.get(_target_message_id(event, message_by_sid, attempt_by_sid, url_messages))
        if broadcast_id is not None:
            receipts[broadcast_id] = max(receipts.get(broadcast_id, event.received_at), event.received_at)
    broadcast_store.record_receipt_times(session, receipts)
    for broadcast_id in sorted(left_unfinished):
        broadcast_store.submit_if_finished(session, broadcast_id)
    if applied:
        session.execute(
            text("UPDATE status_events SET applied_at = :now WHERE id = ANY(CAST(:ids AS bigint[]))"),
            {"now": now, "ids": [e.id for e in applied]},
        )
    report.applied = len(applied)
    report.unmatched = len(unmatched)
    return report


def _as_received(event: _StoredEvent) -> ReceivedEvent:
    return ReceivedEvent(
        event.message_sid, event.status, event.error_code, event.message_id, event.attempt, {}, event.received_at
    )


def _target_message_id(
    event: _StoredEvent,
    message_by_sid: dict[str, int],
    attempt_by_sid: dict[str, tuple[int, int]],
    url_messages: dict[int, MessageRow],
) -> int | None:
    if event.message_sid in message_by_sid:
        return message_by_sid[event.message_sid]
    if event.message_sid in attempt_by_sid:
        return attempt_by_sid[event.message_sid][0]
    return event.message_id


# Column order is MessageRow's. A completed broadcast sends nothing more: its late callbacks are final.
_LOAD_MESSAGES = (
    "SELECT m.id, m.broadcast_id, m.to_number, m.state, m.attempts, m.twilio_sid, m.twilio_status, m.error_code, "
    "b.completed_at IS NOT NULL AS broadcast_completed, m.uncounted_attempts "
    "FROM messages m JOIN broadcasts b ON b.id = m.broadcast_id WHERE m.id = ANY(CAST(:ids AS bigint[])) "
    "ORDER BY m.id"
)
_LOAD_MESSAGES_LOCKED = _LOAD_MESSAGES + " FOR UPDATE OF m"


def _load_messages(session: Session, message_ids: Sequence[int], *, lock: bool) -> dict[int, MessageRow]:
    if not message_ids:
        return {}
    rows = session.execute(
        text(_LOAD_MESSAGES_LOCKED if lock else _LOAD_MESSAGES),
        {"ids": list(set(message_ids))},
    )
    return {row.id: MessageRow(*row) for row in rows}


def _broadcast_ids(session: Session, message_ids: set[int]) -> dict[int | None, uuid.UUID]:
    if not message_ids:
        return {}
    rows = session.execute(
        text("SELECT id, broadcast_id FROM messages WHERE id = ANY(CAST(:ids AS bigint[]))"),
        {"ids": list(message_ids)},
    )
    return {row.id: row.broadcast_id for row in rows}


def _apply_to_old_attempt(
    session: Session, message_id: int, attempt_number: int, events: Sequence[_StoredEvent]
) -> int:
    """A late callback for an attempt that was retried: recorded on its `message_attempts` row, never on the
    message (a new attempt owns it now)."""
    folded = fold_events([_as_received(e) for e in events])
    if folded is None:
        return 0
    final = folded.status in STATUS_RANK and STATUS_RANK[folded.status] >= STATUS_RANK["delivered"]
    receipt = AttemptReceipt(folded.message_sid, folded.status, folded.error_code, final)
    return message_store.record_old_attempt_receipt(session, message_id, attempt_number, receipt)


def _record_opt_outs(session: Session, events: Sequence[_StoredEvent], messages: dict[int, MessageRow]) -> int:
    numbers: set[str] = set()
    for event in events:
        if event.error_code not in CALLBACK_OPT_OUT_CODES:
            continue
        number = event.to_number if event.to_number and _E164.fullmatch(event.to_number) else None
        if number is None and event.message_id in messages:
            number = messages[event.message_id].to_number
        if number:
            numbers.add(number)
    added = add_opt_outs(
        session, numbers, source=SOURCE_CALLBACK_21610, reason="Twilio error 21610 in a status callback"
    )
    return len(added.added)


# ------------------------------------------------------------------------------------------------ the consumer


@dataclass
class DrainReport:
    batches: int = 0
    callbacks: int = 0
    slot: int | None = None  # None: every consumer slot was taken, nothing done
    totals: ApplyReport = field(default_factory=ApplyReport)


def read_batch(consumer: StatusStreamConsumer, size: int, seconds: float) -> list[QueuedCallback]:
    """Up to `size` callbacks, waiting at most `seconds` to fill the batch once the first has arrived."""
    deadline = time.monotonic() + seconds
    batch = consumer.read_batch(size, seconds)
    while batch and len(batch) < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        more = consumer.read_batch(size - len(batch), remaining)
        if not more:
            break
        batch.extend(more)
    return batch


def _report_left_queue(redis_client: redis.Redis, settings: Settings, batch: Sequence[QueuedCallback]) -> None:
    """Tell pacing which messages left Twilio's queue (it bounds what Twilio holds); best effort: a message
    not reported here stops counting when its entry expires."""
    if not settings.twilio_account_sid:
        return
    statuses = []
    for callback in batch:
        sid, status = callback.parameters.get("MessageSid"), callback.parameters.get("MessageStatus")
        if callback.kind == STATUS_CALLBACK and isinstance(sid, str) and isinstance(status, str):
            statuses.append((sid, status))
    try:
        record_left_queue(redis_client, settings.twilio_account_sid, statuses)
    except redis.RedisError as error:
        logger.warning("could not report %d callbacks to pacing (%s)", len(statuses), type(error).__name__)


def _signal_pacing_and_holds(
    session_factory: sessionmaker[Session], redis_client: redis.Redis, settings: Settings, applied: ApplyReport
) -> None:
    """After the commit: workers stop at once for broadcasts a daily cap held; a rate answer slows pacing down;
    the circuit breakers see the receipts, and hold the broadcasts whose failures surge."""
    try:
        _observe_breakers(session_factory, redis_client, settings, applied.outcomes)
        for broadcast_id in applied.held:
            redis_client.set(halt_key(broadcast_id), BroadcastStatus.HELD.value, ex=HALT_FLAG_TTL_SECONDS)
        if applied.slow_down_answers and settings.twilio_account_sid:
            record_slow_down(redis_client, settings.twilio_account_sid)
    except redis.RedisError as error:
        # The claim refuses held broadcasts anyway; only the chunks in flight go on a little longer.
        logger.warning("could not signal holds or a slow-down to the senders (%s)", type(error).__name__)


def _observe_breakers(
    session_factory: sessionmaker[Session],
    redis_client: redis.Redis,
    settings: Settings,
    outcomes: Sequence[tuple[uuid.UUID, str]],
) -> None:
    policy = BreakerPolicy.from_settings(settings)
    if not policy.enabled or not outcomes:
        return
    by_broadcast: dict[uuid.UUID, list[str]] = defaultdict(list)
    for broadcast_id, label in outcomes:
        by_broadcast[broadcast_id].append(label)
    for broadcast_id, labels in by_broadcast.items():
        reason = observe_breaker(redis_client, policy, broadcast_id, labels)
        if reason is not None:
            with session_scope(session_factory) as session:
                hold_broadcasts(session, redis_client, [broadcast_id], reason, None)


def drain_status_stream(
    session_factory: sessionmaker[Session],
    redis_client: redis.Redis,
    settings: Settings,
    budget_seconds: float = STATUS_DRAIN_SECONDS,
) -> DrainReport:
    """Take a consumer slot and apply batches until the stream is idle or the budget is spent.

    A batch is acknowledged only after its transaction committed; if PostgreSQL fails, the batch stays pending
    under this slot's name and the next holder of the slot applies it again.
    """
    report = DrainReport()
    ensure_consumer_group(redis_client)
    if claim_periodic_pass(redis_client, UNAPPLIED_PASS_INTERVAL_SECONDS):
        with session_scope(session_factory) as session:
            report.totals.add(apply_unapplied_events(session, settings))
    slot = ConsumerSlot.acquire(redis_client, STATUS_CONSUMER_SLOTS, STATUS_CONSUMER_LOCK_SECONDS)
    if slot is None:
        return report
    report.slot = slot.slot
    consumer = StatusStreamConsumer(redis_client, slot.consumer_name)
    deadline = time.monotonic() + budget_seconds
    try:
        while time.monotonic() < deadline:
            batch = read_batch(consumer, settings.status_batch_size, settings.status_batch_seconds)
            if not batch:
                break
            with session_scope(session_factory) as session:
                applied = apply_status_events(session, batch, settings)
            consumer.acknowledge([callback.entry_id for callback in batch])
            _report_left_queue(redis_client, settings, batch)
            _signal_pacing_and_holds(session_factory, redis_client, settings, applied)
            record_applied_callbacks(redis_client, applied.stored_by_status.elements(), applied)
            report.batches += 1
            report.callbacks += len(batch)
            report.totals.add(applied)
            if not slot.refresh():
                logger.warning("status consumer slot %d was lost; stopping this drain", slot.slot)
                break
    finally:
        slot.release()
    return report
