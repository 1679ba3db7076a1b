"""Chunk windows: a broadcast has a bounded number of chunk tasks out, sized by its priority, topped up as chunks
finish, and never widened by a duplicate release (shared.sending.windows)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis
from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.platform.settings import Settings
from shared.platform.task_queue import SEND_QUEUE, create_celery_app
from shared.sending.windows import release_and_enqueue, release_chunks, top_up_windows, window_size
from tests.factories import create_broadcast, database_now, numbers


@pytest.mark.parametrize(
    ("priority", "normal_window", "expected"),
    [("high", 4, 8), ("normal", 4, 4), ("bulk", 4, 2), (None, 4, 4), ("bulk", 1, 1), ("high", 1, 2)],
)
def test_the_window_follows_the_priority_four_two_one_and_is_never_empty(
    priority: str | None, normal_window: int, expected: int
) -> None:
    assert window_size(priority, normal_window) == expected


def released(session: Session, broadcast_id: object) -> int:
    session.expire_all()
    return int(
        session.execute(
            text("SELECT chunks_released FROM broadcasts WHERE id = :id"), {"id": broadcast_id}
        ).scalar_one()
    )


def finish_chunks(session: Session, broadcast_id: object, chunk_numbers: list[int]) -> None:
    """As if their tasks had sent them: every row accepted."""
    session.execute(
        text(
            "UPDATE messages SET state = 'accepted' "
            "WHERE broadcast_id = :id AND chunk_number = ANY(CAST(:chunks AS int[]))"
        ),
        {"id": broadcast_id, "chunks": chunk_numbers},
    )
    session.commit()


@pytest.mark.parametrize(("priority", "first_window"), [("high", 8), ("normal", 4), ("bulk", 2)])
def test_a_broadcast_releases_its_window_then_one_chunk_per_finished_chunk(
    db_session: Session, priority: str, first_window: int
) -> None:
    broadcast = create_broadcast(db_session, numbers(2_000), enqueued=False, priority=priority)  # 20 chunks

    first = release_chunks(db_session, broadcast.id, 4)
    db_session.commit()
    assert first.chunks == list(range(first_window))
    # Asked again (a duplicate task, the sweeper at the same moment): nothing more while the window is full.
    assert release_chunks(db_session, broadcast.id, 4).chunks == []
    db_session.commit()

    finish_chunks(db_session, broadcast.id, [0])
    assert release_chunks(db_session, broadcast.id, 4).chunks == [first_window]
    db_session.commit()
    assert released(db_session, broadcast.id) == first_window + 1


def test_the_last_chunks_are_released_and_no_further(db_session: Session) -> None:
    broadcast = create_broadcast(db_session, numbers(550), enqueued=False)  # 6 chunks
    assert release_chunks(db_session, broadcast.id, 4).chunks == [0, 1, 2, 3]
    db_session.commit()
    finish_chunks(db_session, broadcast.id, [0, 1, 2, 3])
    assert release_chunks(db_session, broadcast.id, 4).chunks == [4, 5]
    db_session.commit()
    assert released(db_session, broadcast.id) == 6


def test_rows_deferred_by_quiet_hours_hold_no_place_in_the_window(db_session: Session) -> None:
    broadcast = create_broadcast(db_session, numbers(1_000), enqueued=False)
    release_chunks(db_session, broadcast.id, 4)
    db_session.commit()
    db_session.execute(
        text("UPDATE messages SET not_before = :later WHERE broadcast_id = :id AND chunk_number < 2"),
        {"later": database_now(db_session) + timedelta(hours=8), "id": broadcast.id},
    )
    db_session.commit()
    assert release_chunks(db_session, broadcast.id, 4).chunks == [4, 5]


@pytest.mark.parametrize("status", ["paused", "canceled", "scheduled", "completed"])
def test_a_broadcast_that_may_not_send_releases_nothing(db_session: Session, status: str) -> None:
    broadcast = create_broadcast(db_session, numbers(1_000), enqueued=False)
    db_session.execute(
        text("UPDATE broadcasts SET status = :status WHERE id = :id"), {"status": status, "id": broadcast.id}
    )
    db_session.commit()
    assert release_chunks(db_session, broadcast.id, 4).chunks == []
    assert released(db_session, broadcast.id) == 0


def test_a_broadcast_past_its_deadline_releases_nothing(db_session: Session) -> None:
    broadcast = create_broadcast(db_session, numbers(1_000), enqueued=False)
    db_session.execute(
        text("UPDATE broadcasts SET deadline = now() - interval '1 second' WHERE id = :id"), {"id": broadcast.id}
    )
    db_session.commit()
    assert release_chunks(db_session, broadcast.id, 4).chunks == []


def test_a_restart_publishes_released_chunks_that_still_wait_and_fills_the_window(db_session: Session) -> None:
    broadcast = create_broadcast(db_session, numbers(1_000), enqueued=False)
    release_chunks(db_session, broadcast.id, 4)
    db_session.commit()
    finish_chunks(db_session, broadcast.id, [0, 2])
    restart = release_chunks(db_session, broadcast.id, 4, restart=True)
    assert restart.waiting_chunks == [1, 3] and restart.new_chunks == [4, 5]
    assert restart.chunks == [1, 3, 4, 5]


def test_the_sweeper_tops_up_a_window_whose_top_up_was_lost(
    db_session: Session, settings: Settings, redis_client: redis.Redis
) -> None:
    broadcast = create_broadcast(db_session, numbers(1_000), enqueued=True, chunks_released=0)
    app = create_celery_app(settings)
    assert release_and_enqueue(db_session, app, broadcast.id, 4) == 4
    # Chunks 0..3 were sent, and the worker died before it released the next ones.
    finish_chunks(db_session, broadcast.id, [0, 1, 2, 3])
    redis_client.delete(SEND_QUEUE)

    assert top_up_windows(db_session, app, 4) == 4
    assert redis_client.llen(SEND_QUEUE) == 4
    assert released(db_session, broadcast.id) == 8
    assert top_up_windows(db_session, app, 4) == 0  # nothing finished since: the window is full
