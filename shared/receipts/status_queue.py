"""The Redis Stream between the Twilio webhooks and the consumers that apply callbacks to PostgreSQL.

The webhooks append one entry per accepted status callback or STOP/START reply (`XADD`); an entry leaves the stream
only after its consumer committed it to PostgreSQL (`XACK` + `XDEL` together), and beat's `trim_acknowledged`
(`XTRIM MINID`) drops whatever every consumer group has acknowledged, so the stream holds only work not yet done.
Consumers read through one consumer group; an entry read but not acknowledged stays pending under its consumer's
name, so a consumer that died mid-batch loses nothing: the next holder of its slot re-reads its pending entries
first, and `XAUTOCLAIM` hands entries idle for longer than `RECLAIM_IDLE_SECONDS` to whoever reads next. Delivery
is therefore at least once; `shared.receipts.events` makes a replayed entry a no-op.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.exceptions

STREAM_KEY = "bulksms:status-events"
CONSUMER_GROUP = "status-appliers"
CONSUMER_LOCK_KEY = "bulksms:status-consumer-lock:{slot}"
UNAPPLIED_PASS_KEY = "bulksms:status-unapplied-pass"  # noqa: S105 - a key name, not a secret
# An entry delivered to a consumer and not acknowledged for this long belongs to a dead consumer: reclaim it.
# Far above the time one batch takes to apply, so a slow but live consumer is not raced.
RECLAIM_IDLE_SECONDS = 60.0

# One field per stream entry: JSON [raw form parameters, message_id, attempt, received_at]. A single field keeps
# the webhook's XADD cheap to encode (this is most of its CPU time).
FIELD_EVENT = "e"
# An inbound reply (STOP/START) travels in the same stream, under its own field: JSON [raw form parameters,
# received_at]. Consumers older than this field decode it as malformed and drop it: upgrade them first.
FIELD_INBOUND = "i"
# A status callback signed with the test account's token (TEST_TWILIO_AUTH_TOKEN): same payload as FIELD_EVENT, and
# applied only to messages of test broadcasts (shared.receipts.events.admit_test_account_events).
FIELD_TEST_EVENT = "t"
STATUS_CALLBACK = "status"
TEST_STATUS_CALLBACK = "test status"
INBOUND_REPLY = "inbound"


@dataclass(frozen=True, slots=True)
class QueuedCallback:
    """One callback as the webhook accepted it, before any interpretation."""

    entry_id: str
    parameters: dict[str, Any]  # name -> value, or a list of values when Twilio repeated a name
    message_id: str | None  # from our callback URL's query string, unparsed
    attempt: str | None
    received_at: float  # Unix time at the webhook
    # Or TEST_STATUS_CALLBACK (signed by the test account), or INBOUND_REPLY: a reply to our number (then no
    # message_id / attempt).
    kind: str = STATUS_CALLBACK


def encode_callback(
    parameters: Mapping[str, Any], message_id: str | None, attempt: str | None, received_at: float
) -> str:
    """The stream entry's payload for one callback (`parameters` values: a string, or a list when repeated)."""
    return json.dumps([parameters, message_id, attempt, received_at], separators=(",", ":"))


def encode_inbound_reply(parameters: Mapping[str, Any], received_at: float) -> str:
    """The stream entry's payload for one inbound reply."""
    return json.dumps([parameters, received_at], separators=(",", ":"))


def decode_callback(entry_id: bytes | str, fields: Mapping[bytes, bytes]) -> QueuedCallback:
    """The callback in a stream entry; a malformed entry decodes to one without parameters (then stored as
    nothing: shared.receipts.events skips callbacks without a SID), so it never blocks the stream."""
    identifier = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    inbound = fields.get(FIELD_INBOUND.encode())
    if inbound is not None:
        try:
            parameters, received_at = json.loads(inbound)
            return QueuedCallback(
                identifier,
                parameters if isinstance(parameters, dict) else {},
                None,
                None,
                float(received_at),
                INBOUND_REPLY,
            )
        except (ValueError, TypeError):
            return QueuedCallback(identifier, {}, None, None, time.time(), INBOUND_REPLY)
    test_event = fields.get(FIELD_TEST_EVENT.encode())
    kind = STATUS_CALLBACK if test_event is None else TEST_STATUS_CALLBACK
    try:
        payload = fields[FIELD_EVENT.encode()] if test_event is None else test_event
        parameters, message_id, attempt, received_at = json.loads(payload)
        return QueuedCallback(
            entry_id=identifier,
            parameters=parameters if isinstance(parameters, dict) else {},
            message_id=None if message_id is None else str(message_id),
            attempt=None if attempt is None else str(attempt),
            received_at=float(received_at),
            kind=kind,
        )
    except (KeyError, ValueError, TypeError):
        return QueuedCallback(identifier, {}, None, None, time.time(), kind)


def push_callback(
    client: redis.Redis, parameters: Mapping[str, Any], message_id: str | None, attempt: str | None
) -> str:
    """Append one callback to the stream (one round trip); raises a RedisError if Redis cannot take it."""
    payload = encode_callback(parameters, message_id, attempt, time.time())
    entry_id = client.execute_command("XADD", STREAM_KEY, "*", FIELD_EVENT, payload)
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


class CallbackWriter:
    """`push_callback` for the webhook's hot path: XADD on one connection per thread, bypassing redis-py's
    client layers (pool checkout, retry wrapper), which cost twice the command itself at thousands a second.

    Errors still come from redis-py's connection (ConnectionError, TimeoutError, ResponseError). A reused
    connection that fails (Redis restarted) is replaced once; a second failure propagates and the caller
    answers 503, so the callback is retried by Twilio. A lost reply may mean the entry was added anyway:
    the consumer then sees a duplicate, which applies as a no-op.
    """

    def __init__(self, pool: redis.ConnectionPool) -> None:
        self._pool = pool
        self._local = threading.local()

    def push(
        self, parameters: Mapping[str, Any], message_id: str | None, attempt: str | None, test_account: bool = False
    ) -> str:
        """Queue one status callback (`test_account`: signed by the test account, for test messages only)."""
        payload = encode_callback(parameters, message_id, attempt, time.time())
        return self._add(("XADD", STREAM_KEY, "*", FIELD_TEST_EVENT if test_account else FIELD_EVENT, payload))

    def push_inbound(self, parameters: Mapping[str, Any]) -> str:
        """Queue one inbound reply (STOP / START) for the same consumers."""
        return self._add(("XADD", STREAM_KEY, "*", FIELD_INBOUND, encode_inbound_reply(parameters, time.time())))

    def _add(self, command: tuple[str, ...]) -> str:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            try:
                return self._execute(connection, command)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                connection.disconnect()
        connection = self._local.connection = self._pool.make_connection()
        try:
            return self._execute(connection, command)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            connection.disconnect()
            self._local.connection = None
            raise

    @staticmethod
    def _execute(connection: Any, command: tuple[str, ...]) -> str:
        connection.send_packed_command(connection.pack_command(*command), check_health=False)
        entry_id = connection.read_response()
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def ensure_consumer_group(client: redis.Redis) -> None:
    """Create the stream and its consumer group if missing; the group starts at the stream's first entry."""
    try:
        client.xgroup_create(STREAM_KEY, CONSUMER_GROUP, id="0", mkstream=True)
    except redis.exceptions.ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise


def trim_acknowledged(client: redis.Redis) -> int:
    """Drop every entry that each consumer group has both delivered and acknowledged (`XTRIM MINID`); returns
    how many were dropped.

    Consumers already delete what they acknowledge (`XACK` + `XDEL`); this is the backstop for what that leaves:
    entries acknowledged by a consumer that died before its `XDEL`, and any consumer group added later (each
    group keeps what it has not read or not acknowledged). Nothing unread or pending in any group is dropped."""
    try:
        groups: Any = client.xinfo_groups(STREAM_KEY)
    except redis.exceptions.ResponseError:  # no stream yet
        return 0
    if not groups:
        return 0
    oldest_needed: tuple[int, int] | None = None
    for group in groups:
        needed = _first_needed_entry(client, group)
        if oldest_needed is None or needed < oldest_needed:
            oldest_needed = needed
    assert oldest_needed is not None
    return int(client.execute_command("XTRIM", STREAM_KEY, "MINID", f"{oldest_needed[0]}-{oldest_needed[1]}"))


def _entry_id(value: bytes | str) -> tuple[int, int]:
    text = value.decode() if isinstance(value, bytes) else value
    milliseconds, _, sequence = text.partition("-")
    return int(milliseconds), int(sequence or 0)


def _first_needed_entry(client: redis.Redis, group: dict[Any, Any]) -> tuple[int, int]:
    """The oldest entry `group` may still need: its oldest pending one, else the one after its last delivered."""
    name: Any = group.get("name", group.get(b"name"))
    pending: Any = client.xpending(STREAM_KEY, name)
    if pending and pending.get("pending"):
        return _entry_id(pending["min"])
    milliseconds, sequence = _entry_id(group.get("last-delivered-id", group.get(b"last-delivered-id", "0-0")))
    return milliseconds, sequence + 1


def queue_length(client: redis.Redis) -> int:
    """Entries not yet applied (read or not): the stream's length, since applied entries are deleted."""
    return int(client.xlen(STREAM_KEY))


class StatusStreamConsumer:
    """One named consumer of the group: reads batches, acknowledges them after the database commit."""

    def __init__(self, client: redis.Redis, consumer_name: str) -> None:
        self.client = client
        self.consumer_name = consumer_name
        self._own_pending_drained = False

    def read_batch(self, count: int, block_seconds: float) -> list[QueuedCallback]:
        """Up to `count` entries: first this name's unacknowledged ones (a predecessor died), then entries
        abandoned by other consumers, then new ones (waiting up to `block_seconds` for the first)."""
        if not self._own_pending_drained:
            pending = self._read(count, "0", block_ms=None)
            if pending:
                return pending
            self._own_pending_drained = True
        reclaimed = self._reclaim(count)
        if reclaimed:
            return reclaimed
        return self._read(count, ">", block_ms=max(1, int(block_seconds * 1000)))

    def acknowledge(self, entry_ids: Sequence[str]) -> None:
        """Applied and committed: drop the entries from the group's pending list and from the stream."""
        if not entry_ids:
            return
        with self.client.pipeline(transaction=True) as pipeline:
            pipeline.xack(STREAM_KEY, CONSUMER_GROUP, *entry_ids)
            pipeline.xdel(STREAM_KEY, *entry_ids)
            pipeline.execute()

    def _read(self, count: int, start: str, block_ms: int | None) -> list[QueuedCallback]:
        response: Any = self.client.xreadgroup(
            CONSUMER_GROUP, self.consumer_name, {STREAM_KEY: start}, count=count, block=block_ms
        )
        callbacks: list[QueuedCallback] = []
        for _stream, entries in response or []:
            for entry_id, fields in entries:
                if fields:  # an entry deleted while pending shows up with no fields: nothing to apply
                    callbacks.append(decode_callback(entry_id, fields))
                else:
                    self.client.xack(STREAM_KEY, CONSUMER_GROUP, entry_id)
        return callbacks

    def _reclaim(self, count: int) -> list[QueuedCallback]:
        response: Any = self.client.xautoclaim(
            STREAM_KEY, CONSUMER_GROUP, self.consumer_name, int(RECLAIM_IDLE_SECONDS * 1000), "0-0", count=count
        )
        callbacks: list[QueuedCallback] = []
        for entry_id, fields in response[1] if response else []:
            if fields:
                callbacks.append(decode_callback(entry_id, fields))
            else:  # deleted while pending (Redis < 7 still returns it): nothing to apply
                self.client.xack(STREAM_KEY, CONSUMER_GROUP, entry_id)
        return callbacks


@dataclass
class ConsumerSlot:
    """One of K exclusive consumer slots, held through a Redis lock with a time-to-live refreshed per batch.

    The slot number names the consumer in the group, so whoever takes a slot after its holder died finds the
    dead holder's unacknowledged entries under the same name.
    """

    client: redis.Redis
    slot: int
    token: str
    ttl_seconds: float

    @property
    def consumer_name(self) -> str:
        return f"slot-{self.slot}"

    @classmethod
    def acquire(cls, client: redis.Redis, slots: int, ttl_seconds: float) -> ConsumerSlot | None:
        token = uuid.uuid4().hex
        for slot in range(slots):
            if client.set(CONSUMER_LOCK_KEY.format(slot=slot), token, nx=True, px=int(ttl_seconds * 1000)):
                return cls(client, slot, token, ttl_seconds)
        return None

    def refresh(self) -> bool:
        """Extend the lock; False when it was lost (expired and taken): stop consuming under this name."""
        result = self.client.eval(_REFRESH_SCRIPT, 1, self._key, self.token, int(self.ttl_seconds * 1000))
        return bool(result)

    def release(self) -> None:
        self.client.eval(_RELEASE_SCRIPT, 1, self._key, self.token)

    @property
    def _key(self) -> str:
        return CONSUMER_LOCK_KEY.format(slot=self.slot)


_REFRESH_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def claim_periodic_pass(client: redis.Redis, interval_seconds: float) -> bool:
    """True for at most one caller per `interval_seconds` (the periodic retry of unapplied events)."""
    return bool(client.set(UNAPPLIED_PASS_KEY, "1", nx=True, px=max(1, int(interval_seconds * 1000))))
