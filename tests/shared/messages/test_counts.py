"""The maintained counts (shared.messages.counts) say exactly what counting the rows would say: after intake, after
every kind of transition, under concurrent writers and a concurrent compaction, and after a broadcast's rows go."""

from __future__ import annotations

import threading
import uuid
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from shared.messages import counts, store
from shared.messages.store import SendRecord
from shared.platform.db import create_session_factory
from shared.platform.models import MessageState
from tests.factories import create_broadcast, numbers, set_messages


def counted_rows(session: Session, broadcast_id: uuid.UUID) -> dict[str, int]:
    """What `count(*) GROUP BY state` says, every state present."""
    found = {state.value: 0 for state in MessageState}
    for state, messages in session.execute(
        text("SELECT state, count(*) FROM messages WHERE broadcast_id = :id GROUP BY state"), {"id": broadcast_id}
    ):
        found[state] = messages
    return found


def counted_error_codes(session: Session, broadcast_id: uuid.UUID) -> list[tuple[int | None, int]]:
    return [
        (row[0], row[1])
        for row in session.execute(
            text(
                "SELECT error_code, count(*) AS n FROM messages WHERE broadcast_id = :id "
                "AND state IN ('failed', 'undelivered') GROUP BY error_code ORDER BY n DESC, error_code NULLS LAST"
            ),
            {"id": broadcast_id},
        )
    ]


def assert_counts_exact(session: Session, broadcast_id: uuid.UUID) -> None:
    session.commit()
    assert counts.state_counts(session, broadcast_id) == counted_rows(session, broadcast_id)
    assert counts.error_code_counts(session, broadcast_id, ["failed", "undelivered"]) == counted_error_codes(
        session, broadcast_id
    )


def test_counts_follow_intake_and_every_kind_of_transition(db_session: Session) -> None:
    broadcast = create_broadcast(db_session, numbers(250), chunk_size=100)
    other = create_broadcast(db_session, numbers(30, prefix="+1666"))
    assert counts.state_counts(db_session, broadcast.id)["pending"] == 250
    assert_counts_exact(db_session, broadcast.id)

    claimed = store.claim(db_session, broadcast.id, 0, lease_seconds=60)
    records = [
        SendRecord(m.id, m.attempts, "accepted", twilio_sid=f"SM{m.id:032x}", twilio_status="queued")
        for m in claimed[:70]
    ]
    records += [SendRecord(m.id, m.attempts, "failed", error_code=21211, error_message="bad") for m in claimed[70:80]]
    records += [SendRecord(m.id, m.attempts, "failed", error_code=21610, error_message="stop") for m in claimed[80:85]]
    records += [SendRecord(m.id, m.attempts, "unknown") for m in claimed[85:95]]
    records += [SendRecord(m.id, m.attempts, "pending") for m in claimed[95:]]
    store.record_send_outcomes(db_session, records)
    assert_counts_exact(db_session, broadcast.id)

    store.claim(db_session, broadcast.id, 1, lease_seconds=60)
    assert_counts_exact(db_session, broadcast.id)
    store.cancel_unsent(db_session, broadcast.id)  # chunk 2 and chunk 0's released rows
    assert_counts_exact(db_session, broadcast.id)

    assert counts.compact(db_session) == 2
    db_session.commit()
    assert_counts_exact(db_session, broadcast.id)
    assert counts.state_counts(db_session, other.id)["pending"] == 30
    rows = db_session.execute(
        text("SELECT count(*) FROM message_counts WHERE broadcast_id = :id"), {"id": broadcast.id}
    ).scalar_one()
    assert rows == sum(1 for value in counted_rows(db_session, broadcast.id).values() if value) + 1  # 2 codes

    db_session.execute(text("DELETE FROM messages WHERE broadcast_id = :id"), {"id": other.id})
    assert counts.state_counts(db_session, other.id) == counted_rows(db_session, other.id)
    assert sum(counts.state_counts(db_session, other.id).values()) == 0


def test_counts_stay_exact_under_concurrent_writers_and_compaction(engine: Engine, db_session: Session) -> None:
    broadcast = create_broadcast(db_session, numbers(2000), chunk_size=50)
    sessions = create_session_factory(engine)
    errors: list[BaseException] = []
    stop = threading.Event()

    def send_chunks(chunks: range) -> None:
        try:
            for chunk in chunks:
                with sessions() as session:
                    claimed = store.claim(session, broadcast.id, chunk, lease_seconds=60)
                    session.commit()
                    outcomes: list[SendRecord] = []
                    for index, message in enumerate(claimed):
                        state, code = [("accepted", None), ("failed", 21211 + index % 3), ("pending", None)][index % 3]
                        sid = f"SM{message.id:032x}" if state == "accepted" else None
                        outcomes.append(
                            SendRecord(message.id, message.attempts, state, twilio_sid=sid, error_code=code)
                        )
                    store.record_send_outcomes(session, outcomes)
                    session.commit()
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    def compact_repeatedly() -> None:
        try:
            while not stop.is_set():
                with sessions() as session:
                    counts.compact(session)
                    session.commit()
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    writers = [threading.Thread(target=send_chunks, args=(range(start, 40, 4),)) for start in range(4)]
    compactor = threading.Thread(target=compact_repeatedly)
    compactor.start()
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join(timeout=120)
    stop.set()
    compactor.join(timeout=60)

    assert errors == []
    assert_counts_exact(db_session, broadcast.id)
    assert counts.state_counts(db_session, broadcast.id)["pending"] > 0  # the released third


def test_truncating_messages_empties_the_counts(db_session: Session, engine: Engine) -> None:
    broadcast = create_broadcast(db_session, numbers(10))
    set_messages(db_session, broadcast.id, state="delivered")
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE messages"))
    assert counts.state_counts(db_session, broadcast.id) == counted_rows(db_session, broadcast.id)


def test_unfinished_broadcasts_gauge_counts_only_broadcasts_not_completed(db_session: Session) -> None:
    running = create_broadcast(db_session, numbers(5))
    done = create_broadcast(db_session, numbers(7, prefix="+1666"))
    db_session.execute(text("UPDATE broadcasts SET completed_at = now() WHERE id = :id"), {"id": done.id})
    db_session.commit()
    gauge: Any = counts.unfinished_broadcast_state_counts(db_session)
    assert gauge == {"pending": 5}
    assert running.id != done.id
