"""The Redis Stream between webhook and consumers: entries leave it only when acknowledged after a commit."""

from __future__ import annotations

import redis

from shared.receipts.status_queue import (
    CONSUMER_GROUP,
    STREAM_KEY,
    CallbackWriter,
    ConsumerSlot,
    StatusStreamConsumer,
    ensure_consumer_group,
    push_callback,
    queue_length,
    trim_acknowledged,
)


def test_unacknowledged_batch_is_read_again_by_the_next_holder_of_the_name(redis_client: redis.Redis) -> None:
    ensure_consumer_group(redis_client)
    for index in range(5):
        push_callback(redis_client, {"MessageSid": f"SM{index}", "MessageStatus": "sent"}, str(index), "1")
    first = StatusStreamConsumer(redis_client, "slot-0").read_batch(3, 0.1)
    assert [c.parameters["MessageSid"] for c in first] == ["SM0", "SM1", "SM2"]
    # That consumer died before acknowledging. Its successor under the same name starts with those entries.
    successor = StatusStreamConsumer(redis_client, "slot-0")
    again = successor.read_batch(10, 0.1)
    assert [c.entry_id for c in again] == [c.entry_id for c in first]
    successor.acknowledge([c.entry_id for c in again])
    rest = successor.read_batch(10, 0.1)
    assert [c.parameters["MessageSid"] for c in rest] == ["SM3", "SM4"]
    assert queue_length(redis_client) == 2  # read but not acknowledged: still there
    successor.acknowledge([c.entry_id for c in rest])
    assert queue_length(redis_client) == 0
    assert redis_client.xpending(STREAM_KEY, CONSUMER_GROUP)["pending"] == 0
    assert successor.read_batch(10, 0.05) == []


def test_writer_entries_carry_parameters_ids_and_receipt_time(redis_client: redis.Redis) -> None:
    ensure_consumer_group(redis_client)
    writer = CallbackWriter(redis_client.connection_pool)
    writer.push({"MessageSid": "SM1", "MessageStatus": "delivered", "MediaUrl": ["a", "b"]}, "7", None)
    (callback,) = StatusStreamConsumer(redis_client, "c").read_batch(10, 0.1)
    assert callback.parameters == {"MessageSid": "SM1", "MessageStatus": "delivered", "MediaUrl": ["a", "b"]}
    assert (callback.message_id, callback.attempt) == ("7", None)
    assert callback.received_at > 0


def test_consumer_slots_are_exclusive_until_released(redis_client: redis.Redis) -> None:
    first = ConsumerSlot.acquire(redis_client, 2, 10)
    second = ConsumerSlot.acquire(redis_client, 2, 10)
    assert first is not None and second is not None and {first.slot, second.slot} == {0, 1}
    assert ConsumerSlot.acquire(redis_client, 2, 10) is None
    assert first.refresh()
    first.release()
    third = ConsumerSlot.acquire(redis_client, 2, 10)
    assert third is not None and third.slot == first.slot
    assert not first.refresh()  # the old holder lost it and must stop


def test_trim_drops_only_what_every_group_has_acknowledged(redis_client: redis.Redis) -> None:
    ensure_consumer_group(redis_client)
    redis_client.xgroup_create(STREAM_KEY, "late-group", id="0")  # a second group that reads more slowly
    for index in range(6):
        push_callback(redis_client, {"MessageSid": f"SM{index}", "MessageStatus": "sent"}, str(index), "1")
    appliers = StatusStreamConsumer(redis_client, "slot-0")
    batch = appliers.read_batch(6, 0.1)
    # Acknowledged but left in the stream, as by a consumer that died between XACK and XDEL.
    redis_client.xack(STREAM_KEY, CONSUMER_GROUP, *[c.entry_id for c in batch])
    late = redis_client.xreadgroup("late-group", "reader", {STREAM_KEY: ">"}, count=4)
    late_ids = [entry_id for _, entries in late for entry_id, _ in entries]
    redis_client.xack(STREAM_KEY, "late-group", *late_ids[:2])  # two acknowledged, two still pending

    assert trim_acknowledged(redis_client) == 2
    remaining = [entry_id.decode() for entry_id, _ in redis_client.xrange(STREAM_KEY)]
    assert remaining == [c.entry_id for c in batch][2:]

    redis_client.xgroup_destroy(STREAM_KEY, "late-group")
    assert trim_acknowledged(redis_client) == 4
    assert queue_length(redis_client) == 0
    assert trim_acknowledged(redis_client) == 0


def test_trim_without_a_stream_does_nothing(redis_client: redis.Redis) -> None:
    assert trim_acknowledged(redis_client) == 0
