"""The service-wide lock order (docs/architecture.md): a broadcast's row before its message rows. Held in the
interleaving that once deadlocked: a cancel holding the broadcast row while the first claim of a quiet-hours
broadcast runs, on real PostgreSQL with two connections."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.broadcasts import store as broadcast_store
from shared.messages import store as message_store
from shared.platform.db import create_session_factory
from shared.sending.claims import claim_pending_messages
from tests.conftest import wait_until
from tests.factories import create_broadcast, numbers, states_of


def test_a_cancel_during_the_first_claim_of_a_quiet_hours_broadcast_never_deadlocks(
    db_session: Session, engine: Any
) -> None:
    broadcast = create_broadcast(db_session, numbers(20))
    db_session.execute(
        text("UPDATE broadcasts SET quiet_hours_start = '03:00', quiet_hours_end = '03:01' WHERE id = :id"),
        {"id": broadcast.id},
    )
    db_session.commit()
    factory = create_session_factory(engine)
    canceling, claiming = factory(), factory()
    outcome: dict[str, Any] = {}

    def claim() -> None:
        try:
            outcome["claimed"] = claim_pending_messages(claiming, broadcast.id, 0, lease_seconds=60)
            claiming.commit()
        except Exception as error:  # a deadlock surfaces here or in the cancel
            outcome["error"] = error
            claiming.rollback()

    try:
        broadcast_store.cancel(canceling, broadcast.id)  # holds the broadcast row, as cancel_broadcast does
        thread = threading.Thread(target=claim)
        thread.start()

        def claim_waits_for_a_lock() -> bool:
            with engine.connect() as connection:  # a new transaction: pg_stat_activity is a snapshot per one
                return bool(connection.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar())

        wait_until(
            claim_waits_for_a_lock,
            10,
            message="the claim to wait for the broadcast row",
        )
        # The cancel goes on to its messages; had the claim locked them before the broadcast row, PostgreSQL
        # would now find a deadlock and abort one of the two (the API answered such a cancel with 503).
        message_store.cancel_unsent(canceling, broadcast.id)
        canceling.commit()
        thread.join(30)
    finally:
        canceling.close()
        claiming.close()

    assert "error" not in outcome, outcome.get("error")
    assert outcome["claimed"] == []  # it then saw the broadcast canceled
    db_session.rollback()
    assert states_of(db_session, broadcast.id) == {"canceled": 20}
