"""Per-key counters in Redis: atomic under concurrency, windows that reset, reservations given back."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
import redis
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from shared.broadcasts.intake import BroadcastRequest, create_broadcast
from shared.platform.api_keys import create_api_key
from shared.platform.key_limits import KeyLimits, LimitExceeded
from shared.platform.models import Broadcast
from tests.api import conftest as api_fixtures

api_settings = api_fixtures.api_settings
settings = api_fixtures.settings
engine = api_fixtures.engine
redis_client = api_fixtures.redis_client


def test_concurrent_reservations_never_pass_the_limit(redis_client: redis.Redis) -> None:
    """40 threads (own clients, as separate API processes would be) race for 100 recipients, 7 at a time."""
    granted: list[int] = []
    start = threading.Barrier(40)

    def reserve() -> None:
        limits = KeyLimits(redis.Redis(connection_pool=redis_client.connection_pool))
        start.wait()
        try:
            limits.reserve_recipients(1, 7, 100)
            granted.append(7)
        except LimitExceeded:
            pass

    threads = [threading.Thread(target=reserve) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 98  # 14 reservations of 7; the 15th would make 105
    assert KeyLimits(redis_client).recipients_today(1) == 98


def test_windows_reset_and_say_when(redis_client: redis.Redis) -> None:
    limits = KeyLimits(redis_client)
    minute_start = 1_800_000_000.0 - 1_800_000_000.0 % 60
    limits.take_request(7, 2, now=minute_start + 10)
    limits.take_request(7, 2, now=minute_start + 20)
    with pytest.raises(LimitExceeded) as refused:
        limits.take_request(7, 2, now=minute_start + 45)
    assert refused.value.retry_after_seconds == 15
    limits.take_request(7, 2, now=minute_start + 61)  # the next minute
    late_evening = datetime(2026, 12, 2, 23, 59, 30, tzinfo=UTC)
    limits.reserve_recipients(7, 10, 10, now=late_evening)
    with pytest.raises(LimitExceeded) as over:
        limits.reserve_recipients(7, 1, 10, now=late_evening)
    assert over.value.retry_after_seconds == 30
    limits.reserve_recipients(7, 10, 10, now=datetime(2026, 12, 3, 0, 0, 1, tzinfo=UTC))  # a new UTC day


def test_a_commit_that_fails_gives_the_reservation_back(
    engine: Engine, db_session: Session, redis_client: redis.Redis
) -> None:
    """PostgreSQL refuses the commit (a deferred constraint trigger standing in for a failover at that moment):
    nothing is stored and the recipients count no longer against the key's day."""
    api_key, _ = create_api_key(db_session, "limited")
    limits = KeyLimits(redis_client)
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'commit refused'; END $$"
            )
        )
        connection.execute(
            text(
                "CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON broadcasts "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_at_commit()"
            )
        )

    def reserve(count: int):  # type: ignore[no-untyped-def]
        reservation = limits.reserve_recipients(api_key.id, count, 100)
        return lambda: limits.give_back(reservation)

    try:
        with pytest.raises(Exception, match="commit refused"):
            create_broadcast(
                db_session,
                api_key_id=api_key.id,
                request=BroadcastRequest("hi", [f"+1555000{index:04d}" for index in range(30)]),
                chunk_size=10,
                reserve_recipients=reserve,
            )
    finally:
        with engine.begin() as connection:
            connection.execute(text("DROP TRIGGER refuse_at_commit ON broadcasts"))
            connection.execute(text("DROP FUNCTION refuse_at_commit()"))
    assert limits.recipients_today(api_key.id) == 0
    assert db_session.scalar(select(func.count()).select_from(Broadcast)) == 0
