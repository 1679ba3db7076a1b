"""Broadcast intake, enqueueing, progress and paging: the logic behind the API, taking a SQLAlchemy Session.

Intake stores the broadcast row and every recipient (PostgreSQL COPY) in one transaction, and only
then are the chunk tasks published: a task never names a broadcast that is not committed, and a crash
between the commit and the publish leaves `enqueued_at` NULL for the sweeper to finish.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from decimal import Decimal
from json.encoder import encode_basestring as encode_json_string
from typing import Any, Generic, TypeVar

import kombu.exceptions
import redis.exceptions
from celery import Celery
from sqlalchemy import func, select, text, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from shared.broadcasts import store as broadcast_store
from shared.broadcasts.content import (
    ContentReport,
    PreparedContent,
    Pricing,
    check_limits,
    check_template_recipients,
    report_content,
    start_reading,
)
from shared.broadcasts.control import apply_intake_rules
from shared.broadcasts.options import BROADCAST_OPTIONS, OPTIONS_BY_NAME
from shared.compliance.phone_numbers import NumberRules
from shared.messages import counts as message_counts
from shared.platform.models import ApiKey, Broadcast, Message, MessageState
from shared.platform.settings import Settings
from shared.platform.task_queue import enqueue_chunks
from shared.sending.windows import DEFAULT_WINDOW_CHUNKS, release_chunks

logger = logging.getLogger(__name__)

# COPY rows are handed to psycopg2 in blocks of this many recipients, so the whole list is never one string.
COPY_ROWS_PER_BLOCK = 10_000

ItemT = TypeVar("ItemT")


class IntakeError(Exception):
    """The broadcast cannot be accepted; nothing was stored."""


class InvalidRecipientsError(IntakeError):
    def __init__(self, invalid_count: int, invalid_sample: list[dict[str, Any]], valid_count: int) -> None:
        super().__init__(f"{invalid_count} invalid recipient(s)")
        self.invalid_count = invalid_count
        self.invalid_sample = invalid_sample
        self.valid_count = valid_count


class IdempotencyConflictError(IntakeError):
    def __init__(self, broadcast_id: uuid.UUID) -> None:
        super().__init__("this Idempotency-Key was used with a different request")
        self.broadcast_id = broadcast_id


class InvalidCursorError(ValueError):
    """A paging cursor that this service did not produce."""


@dataclass(frozen=True)
class BroadcastRequest:
    """What a client asked for, already checked for shape (types and sizes) but not yet normalised.

    Holds every option of `shared.broadcasts.options`: those intake reads as attributes, any other in `options`
    by name (stored and fingerprinted from its declaration alone).
    """

    message: str
    recipients: Sequence[Any]
    on_invalid: str = "reject"
    callback_url: str | None = None  # the view refuses it for an API key without a signing secret
    send_at: datetime | None = None  # aware; decides `scheduled` or `queued`
    media_urls: tuple[str, ...] | None = None  # an MMS: counted and priced differently
    max_segments: int | None = None
    max_cost: Decimal | None = None
    default_region: str | None = None  # upper case; None: the API key's or the DEFAULT_REGION setting
    strict_numbers: bool | None = None
    dry_run: bool = False  # report only: nothing stored
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        misplaced = set(self.options) - (set(OPTIONS_BY_NAME) - _ATTRIBUTE_OPTIONS)
        if misplaced:
            raise ValueError(f"unknown options, or options that have an attribute: {sorted(misplaced)}")

    @classmethod
    def from_options(cls, values: Mapping[str, Any]) -> BroadcastRequest:
        """The request of a schema's loaded values, keyed by option name (absent ones take their defaults)."""
        attributes: dict[str, Any] = {}
        others: dict[str, Any] = {}
        for option in BROADCAST_OPTIONS:
            if option.name in values:
                value = option.request_value(values[option.name])
                (attributes if option.name in _ATTRIBUTE_OPTIONS else others)[option.name] = value
        return cls(**attributes, options=others)

    def option_value(self, name: str) -> Any:
        """The value of any declared option (None when not given and without default)."""
        return getattr(self, name) if name in _ATTRIBUTE_OPTIONS else self.options.get(name)

    def stored_values(self) -> dict[str, Any]:
        """The broadcasts columns of every stored option, and their values."""
        stored: dict[str, Any] = {}
        for option in BROADCAST_OPTIONS:
            stored.update(option.column_values(self.option_value(option.name)))
        return stored

    def fingerprint(self) -> str:
        """SHA-256 of the canonical request: what an Idempotency-Key is compared against.

        An option not given (None) is left out, so adding an option leaves earlier broadcasts' fingerprints as
        they were stored.
        """
        canonical_fields: dict[str, Any] = {}
        for option in BROADCAST_OPTIONS:
            value = self.option_value(option.name)
            if option.fingerprinted and value is not None:
                canonical_fields[option.name] = _canonical(value)
        canonical = json.dumps(
            canonical_fields,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


_ATTRIBUTE_OPTIONS = frozenset(item.name for item in fields(BroadcastRequest)) - {"options"}


def _canonical(value: Any) -> Any:
    """An option's value in the fingerprint: text and lists as JSON has them, anything else as its text."""
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return list(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def number_rules_for(request: BroadcastRequest, api_key: ApiKey, settings: Settings) -> NumberRules:
    """How a request's numbers are read: its default region, else its API key's, else DEFAULT_REGION; strict as
    asked; only countries both ALLOWED_COUNTRIES and the key allow (either unset allows any)."""
    allowed = settings.allowed_country_codes
    if api_key.allowed_countries is not None:
        key_allowed = frozenset(api_key.allowed_countries)
        allowed = key_allowed if allowed is None else allowed & key_allowed
    return NumberRules(
        default_region=request.default_region or api_key.default_region or settings.default_region,
        strict=bool(request.strict_numbers),
        allowed_countries=allowed,
    )


@dataclass(frozen=True)
class IntakeResult:
    broadcast: Broadcast
    created: bool  # False when an Idempotency-Key replayed an earlier broadcast
    dry_run: bool = False  # the broadcast is a transient report, never stored


@dataclass(frozen=True)
class Page(Generic[ItemT]):
    items: list[ItemT]
    next_cursor: str | None


@dataclass
class _CopySource:
    """A file-like object for `copy_expert` that renders the COPY text block by block."""

    blocks: Iterator[str]
    _buffer: str = field(default="")

    def read(self, size: int = -1) -> str:
        while size < 0 or len(self._buffer) < size:
            block = next(self.blocks, None)
            if block is None:
                break
            self._buffer += block
        if size < 0:
            size = len(self._buffer)
        text, self._buffer = self._buffer[:size], self._buffer[size:]
        return text


def _plain_rows(broadcast_id: uuid.UUID, numbers: list[str], start: int, end: int, chunk_size: int) -> str:
    """COPY text rows `broadcast_id, chunk_number, to_number, state` for numbers[start:end]: chunk k holds numbers
    k*size onwards. Joined chunk by chunk, so a row costs one string join, not one format."""
    pending = MessageState.PENDING.value
    parts = []
    position = start
    while position < end:
        chunk = position // chunk_size
        chunk_end = min(end, (chunk + 1) * chunk_size)
        prefix = f"{broadcast_id}\t{chunk}\t"
        parts.append(prefix + f"\t{pending}\n{prefix}".join(numbers[position:chunk_end]) + f"\t{pending}\n")
        position = chunk_end
    return "".join(parts)


def _rows_with_variables(
    broadcast_id: uuid.UUID,
    numbers: list[str],
    variables: list[dict[str, str] | None],
    start: int,
    end: int,
    chunk_size: int,
) -> str:
    """Rows with a fifth column, the recipient's template variables (JSON, `\\N` when none)."""
    state = f"\t{MessageState.PENDING.value}\t"
    rows = []
    position = start
    while position < end:
        chunk = position // chunk_size
        chunk_end = min(end, (chunk + 1) * chunk_size)
        prefix = f"{broadcast_id}\t{chunk}\t"
        for index in range(position, chunk_end):
            values = variables[index]
            # COPY text format: JSON escapes tabs and newlines itself; only backslashes need doubling.
            encoded = "\\N" if values is None else _json_object_of_text(values).replace("\\", "\\\\")
            rows.append(prefix + numbers[index] + state + encoded + "\n")
        position = chunk_end
    return "".join(rows)


def _json_object_of_text(values: dict[str, str]) -> str:
    """`json.dumps(values, ensure_ascii=False)` for text values, at a third of its cost (a million rows: 1.4 s)."""
    return (
        "{"
        + ",".join([encode_json_string(name) + ":" + encode_json_string(value) for name, value in values.items()])
        + "}"
    )


def _message_rows(
    broadcast_id: uuid.UUID, content: PreparedContent, chunk_size: int, stop_at_invalid: bool
) -> Iterator[str]:
    """The COPY text of the messages, block by block, reading recipients only as far as each block needs."""
    numbers = content.recipients.numbers
    variables = content.variables if content.is_template else None
    start = 0
    while not content.done:
        content.read_more(COPY_ROWS_PER_BLOCK)
        if stop_at_invalid and content.recipients.invalid_count:
            return  # the broadcast will be refused: nothing more to store
        end = len(numbers)
        if end > start:
            if variables is None:
                yield _plain_rows(broadcast_id, numbers, start, end, chunk_size)
            else:
                yield _rows_with_variables(broadcast_id, numbers, variables, start, end, chunk_size)
        start = end


def _copy_messages(
    session: Session, broadcast_id: uuid.UUID, content: PreparedContent, chunk_size: int, *, stop_at_invalid: bool
) -> None:
    """Read the recipients and COPY one pending message per kept number, in the session's current transaction.

    Rows go to PostgreSQL as they are read, so its process stores one block while ours reads the next. With
    `stop_at_invalid` (on_invalid: reject), rows stop at the first invalid entry; the caller reads the rest for
    the report and rolls back.
    """
    columns = "broadcast_id, chunk_number, to_number, state" + (", variables" if content.is_template else "")
    dbapi_connection = session.connection().connection.dbapi_connection
    assert dbapi_connection is not None
    cursor: Any = dbapi_connection.cursor()  # psycopg2's cursor: copy_expert is not in the DB-API types
    try:
        cursor.copy_expert(
            f"COPY messages ({columns}) FROM STDIN",
            _CopySource(_message_rows(broadcast_id, content, chunk_size, stop_at_invalid)),
            size=1 << 20,
        )
    finally:
        cursor.close()


# Idempotency keys are honoured this long (as Stripe's): a retry within it gets the original broadcast, the same key
# after it starts a new one (next week's deliberate resend of the same list).
IDEMPOTENCY_KEY_LIFETIME = timedelta(hours=24)


def find_idempotent_broadcast(session: Session, api_key_id: int, idempotency_key: str) -> Broadcast | None:
    """The broadcast this key created with `idempotency_key` in the last 24 hours, if any (the database's clock,
    which also stamped `created_at`)."""
    return session.scalar(
        select(Broadcast)
        .where(
            Broadcast.api_key_id == api_key_id,
            Broadcast.idempotency_key == idempotency_key,
            Broadcast.created_at > func.now() - IDEMPOTENCY_KEY_LIFETIME,
        )
        .order_by(Broadcast.created_at.desc())
        .limit(1)
    )


def lock_idempotency_key(session: Session, api_key_id: int, idempotency_key: str) -> None:
    """Serialise requests with the same key: a transaction-scoped advisory lock on its hash, so a second request
    waits for the first to commit (or roll back) and then finds its broadcast instead of storing another."""
    digest = hashlib.sha256(f"{api_key_id}:{idempotency_key}".encode()).digest()
    session.execute(
        text("SELECT pg_advisory_xact_lock(:lock_id)"), {"lock_id": int.from_bytes(digest[:8], "big", signed=True)}
    )


def _replay(existing: Broadcast, fingerprint: str) -> IntakeResult:
    if existing.request_fingerprint != fingerprint:
        raise IdempotencyConflictError(existing.id)
    return IntakeResult(existing, created=False)


def create_broadcast(
    session: Session,
    *,
    api_key_id: int,
    request: BroadcastRequest,
    chunk_size: int,
    idempotency_key: str | None = None,
    pricing: Pricing | None = None,
    smart_encoding: bool = False,
    number_rules: NumberRules | None = None,
    now: datetime | None = None,
    test: bool = False,
    reserve_recipients: Callable[[int], Callable[[], None]] | None = None,
) -> IntakeResult:
    """Validate the recipients, store the broadcast and all its messages, and commit (not enqueued).

    Raises InvalidRecipientsError, TemplateRecipientsError, ContentLimitError (nothing stored) or
    IdempotencyConflictError. A `dry_run` request stores nothing and returns a transient broadcast. With an
    `idempotency_key` that this API key already used for the same request, returns the original broadcast,
    `created=False`. Recipients are read under `number_rules` (`number_rules_for`); without them, under the
    request's own default region and strict_numbers. `test`: the broadcast of a test key (sent through the test
    account). `reserve_recipients(count)` is called before the commit with the accepted recipients (it may raise
    to refuse them) and returns what undoes it if the commit fails.
    """
    if request.dry_run:
        idempotency_key = None
    fingerprint = request.fingerprint() if idempotency_key is not None else None
    if idempotency_key is not None and fingerprint is not None:
        # Held until this transaction ends (commit or rollback): the whole intake is one request per key at a time.
        lock_idempotency_key(session, api_key_id, idempotency_key)
        existing = find_idempotent_broadcast(session, api_key_id, idempotency_key)
        if existing is not None:
            session.rollback()  # releases the lock
            return _replay(existing, fingerprint)

    started = time.perf_counter()
    rules = number_rules or NumberRules(default_region=request.default_region, strict=bool(request.strict_numbers))
    content = start_reading(request.message, request.recipients, rules)
    pricing = pricing or Pricing(Decimal(str(Settings.price_per_segment)))
    if request.dry_run:
        report = _checked_report(content.read_all(), request, pricing, smart_encoding)
        preview = Broadcast(
            status="dry_run",
            test=test,
            **_broadcast_values(content, request, report, rules, chunk_size, smart_encoding),
        )
        return IntakeResult(preview, created=False, dry_run=True)

    # The messages are stored first, as the recipients are read; the broadcast row follows once every check
    # passed. One transaction: a refusal rolls the messages back, and nothing was stored.
    broadcast_id = uuid.uuid4()
    try:
        _copy_messages(session, broadcast_id, content, chunk_size, stop_at_invalid=request.on_invalid == "reject")
        stored = time.perf_counter()
        report = _checked_report(content.read_all(), request, pricing, smart_encoding)
    except BaseException:
        session.rollback()
        raise
    broadcast = session.scalars(
        insert(Broadcast)
        .values(
            id=broadcast_id,
            api_key_id=api_key_id,
            status=broadcast_store.initial_status(request.send_at).value,
            **_broadcast_values(content, request, report, rules, chunk_size, smart_encoding),
            idempotency_key=idempotency_key,
            request_fingerprint=fingerprint,
            test=test,
        )
        .returning(Broadcast)
    ).one()
    recipients = content.recipients
    try:
        # Opted-out numbers become `skipped`; quiet hours: how many would be deferred (shared.broadcasts.control).
        apply_intake_rules(session, broadcast, recipients.numbers, now)
        # The daily allowance is taken before the commit (LimitExceeded: nothing stored) and given back if the
        # commit fails, so it counts exactly the recipients of stored broadcasts.
        give_back = reserve_recipients(len(recipients.numbers)) if reserve_recipients is not None else None
    except BaseException:
        session.rollback()
        raise
    try:
        session.commit()
    except BaseException:
        session.rollback()
        if give_back is not None:
            give_back()
        raise
    logger.info(
        "broadcast %s stored: %d recipients in %d chunks (%d duplicates, %d invalid skipped);"
        " read and copied in %.2fs, checked and committed in %.2fs",
        broadcast.id,
        len(recipients.numbers),
        broadcast.chunk_count,
        recipients.duplicates,
        recipients.invalid_count,
        stored - started,
        time.perf_counter() - stored,
    )
    return IntakeResult(broadcast, created=True)


def _checked_report(
    content: PreparedContent, request: BroadcastRequest, pricing: Pricing, smart_encoding: bool
) -> ContentReport:
    """The content report of fully read recipients; InvalidRecipientsError, TemplateRecipientsError or
    ContentLimitError when intake must refuse them, in that order."""
    recipients = content.recipients
    if not recipients.numbers or (recipients.invalid_count and request.on_invalid == "reject"):
        invalid_sample = [invalid.as_dict() for invalid in recipients.invalid_sample]
        raise InvalidRecipientsError(recipients.invalid_count, invalid_sample, len(recipients.numbers))
    check_template_recipients(content)
    report = report_content(
        content, request.message, media_urls=request.media_urls, smart_encoded=smart_encoding, pricing=pricing
    )
    check_limits(report, max_segments=request.max_segments, max_cost=request.max_cost)
    return report


def _broadcast_values(
    content: PreparedContent,
    request: BroadcastRequest,
    report: ContentReport,
    rules: NumberRules,
    chunk_size: int,
    smart_encoding: bool,
) -> dict[str, Any]:
    """The broadcasts row of an accepted request (status, ids and idempotency aside)."""
    recipients = content.recipients
    return {
        # A template is stored as given and rendered per message at send time; a plain body with `{{` / `}}`
        # is stored unescaped, exactly as it is sent.
        "body": request.message if content.is_template else content.template.literal_text,
        "encoding": report.encoding,
        "characters": report.characters,
        "segments": report.segments,
        "smart_encoded": smart_encoding,
        "is_template": content.is_template,
        "estimated_cost": report.estimated_cost,
        "segments_total": report.segments_total,
        "segments_min": report.segments_min,
        "segments_max": report.segments_max,
        **request.stored_values(),  # every option that has a column (shared.broadcasts.options)
        # As applied, whether given in the request or taken from the API key or the settings.
        "default_region": rules.default_region,
        "strict_numbers": rules.strict,
        "recipients_received": len(request.recipients),
        "recipients_accepted": len(recipients.numbers),
        "recipients_duplicates": recipients.duplicates,
        "recipients_invalid": recipients.invalid_count,
        "invalid_sample": [invalid.as_dict() for invalid in recipients.invalid_sample],
        "recipients_by_country": recipients.per_country(),
        "recipients_not_valid": recipients.not_valid,
        "chunk_size": chunk_size,
        "chunk_count": -(-len(recipients.numbers) // chunk_size),
    }


def enqueue_broadcast(
    session: Session, celery_app: Celery, broadcast: Broadcast, normal_window: int = DEFAULT_WINDOW_CHUNKS
) -> bool:
    """Release the broadcast's first window of chunks (shared.sending.windows) and publish them, then set
    `enqueued_at`. False when the broker could not be reached.

    The broadcast is committed before this runs, so a failure here loses nothing: with `enqueued_at`
    still NULL the sweeper publishes the released chunks once the broker is back.
    """
    release = release_chunks(session, broadcast.id, normal_window)
    session.commit()
    try:
        enqueue_chunks(celery_app, broadcast.id, release.chunks)
    except (kombu.exceptions.OperationalError, redis.exceptions.RedisError, OSError):
        logger.warning("broadcast %s stored but not enqueued (broker unreachable); the sweeper will", broadcast.id)
        return False
    try:
        broadcast_store.mark_enqueued(session, broadcast.id, only_if_unset=True)
        session.commit()
    except DBAPIError:
        # Chunks are published; the sweeper will publish them again, which the workers' claims make harmless.
        session.rollback()
        logger.warning("broadcast %s enqueued but enqueued_at not recorded", broadcast.id)
    else:
        session.refresh(broadcast)
    return True


def message_state_counts(session: Session, broadcast_id: uuid.UUID) -> dict[str, int]:
    """How many of the broadcast's messages are in each state (every state present, zeros included), from the
    maintained counts (shared.messages.counts): no scan of the broadcast's rows."""
    return message_counts.state_counts(session, broadcast_id)


def get_broadcast(session: Session, api_key_id: int, broadcast_id: uuid.UUID) -> Broadcast | None:
    """The broadcast if it exists and was created with this API key (keys only see their own broadcasts)."""
    broadcast = session.get(Broadcast, broadcast_id)
    if broadcast is None or broadcast.api_key_id != api_key_id:
        return None
    return broadcast


def encode_cursor(values: dict[str, Any]) -> str:
    raw = json.dumps(values, separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (binascii.Error, ValueError) as error:
        raise InvalidCursorError("not a cursor from this API") from error
    if not isinstance(values, dict):
        raise InvalidCursorError("not a cursor from this API")
    return values


def list_broadcasts(
    session: Session,
    api_key_id: int,
    *,
    cursor: str | None,
    limit: int,
    filters: Mapping[str, Any] | None = None,
) -> Page[Broadcast]:
    """This key's broadcasts, newest first, `limit` at a time; `filters`: filterable options' exact values."""
    query = select(Broadcast).where(Broadcast.api_key_id == api_key_id)
    for name, value in (filters or {}).items():
        option = OPTIONS_BY_NAME[name]
        if not option.filterable:
            raise ValueError(f"broadcasts cannot be filtered by {name}")
        query = query.where(getattr(Broadcast, option.columns[0]) == value)
    if cursor is not None:
        values = decode_cursor(cursor)
        created_text, id_text = values.get("created_at"), values.get("id")
        if not isinstance(created_text, str) or not isinstance(id_text, str):
            raise InvalidCursorError("not a cursor from this API")
        try:
            created_at = datetime.fromisoformat(created_text)
            after_id = uuid.UUID(id_text)
        except ValueError as error:
            raise InvalidCursorError("not a cursor from this API") from error
        if created_at.tzinfo is None:
            raise InvalidCursorError("not a cursor from this API")
        query = query.where(tuple_(Broadcast.created_at, Broadcast.id) < tuple_(created_at, after_id))
    rows = list(session.scalars(query.order_by(Broadcast.created_at.desc(), Broadcast.id.desc()).limit(limit + 1)))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = encode_cursor({"created_at": last.created_at.isoformat(), "id": str(last.id)})
    return Page(rows, next_cursor)


def list_messages(
    session: Session, broadcast_id: uuid.UUID, *, state: str | None, cursor: str | None, limit: int
) -> Page[Message]:
    """The broadcast's messages in id order (the order they were given), optionally in one state."""
    query = select(Message).where(Message.broadcast_id == broadcast_id)
    if state is not None:
        query = query.where(Message.state == state)
    if cursor is not None:
        after_id = decode_cursor(cursor).get("after")
        # A message id: a bigint (true and false are ints to Python, never ids).
        if not isinstance(after_id, int) or isinstance(after_id, bool) or not 0 <= after_id < 2**63:
            raise InvalidCursorError("not a cursor from this API")
        query = query.where(Message.id > after_id)
    rows = list(session.scalars(query.order_by(Message.id).limit(limit + 1)))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor({"after": rows[-1].id})
    return Page(rows, next_cursor)
