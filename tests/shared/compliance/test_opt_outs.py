"""Opt-out keywords (pure) and the set-based skips at intake and at each chunk claim."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.broadcasts.control import cancel_broadcast, pause_broadcast
from shared.compliance.opt_outs import SOURCE_API, add_opt_outs, classify_reply
from shared.sending.claims import claim_pending_messages
from tests.factories import create_broadcast, messages_of, numbers


@pytest.mark.parametrize(
    ("body", "opt_out_type", "expected"),
    [
        ("STOP", None, "stop"),
        ("  stop!! ", None, "stop"),
        ("StopAll", None, "stop"),
        ("cancel", None, "stop"),
        ("END.", None, "stop"),
        ("Revoke", None, "stop"),
        ("start", None, "start"),
        ("Yes", None, "start"),
        ("UNSTOP", None, "start"),
        ("help", None, "help"),
        ("please stop", None, None),
        ("", None, None),
        (None, None, None),
        ("ARRET", "STOP", "stop"),
        ("STOP", "HELP", "help"),
        ("whatever", "start", "start"),
    ],
)
def test_classify_reply(body: str | None, opt_out_type: str | None, expected: str | None) -> None:
    assert classify_reply(body, opt_out_type) == expected


def test_a_number_that_opts_out_mid_broadcast_is_skipped_at_its_chunk_claim(db_session: Session) -> None:
    recipients = numbers(250)
    broadcast = create_broadcast(db_session, recipients)
    first = claim_pending_messages(db_session, broadcast.id, 0, lease_seconds=60)
    db_session.commit()
    assert len(first) == 100
    add_opt_outs(db_session, [recipients[5], recipients[150]], source=SOURCE_API, reason=None)
    db_session.commit()
    second = claim_pending_messages(db_session, broadcast.id, 1, lease_seconds=60)
    db_session.commit()
    assert len(second) == 99 and recipients[150] not in {message.to_number for message in second}
    by_number = {message.to_number: message for message in messages_of(db_session, broadcast.id)}
    assert (by_number[recipients[150]].state, by_number[recipients[150]].skip_reason) == ("skipped", "opted_out")
    assert by_number[recipients[5]].state == "sending"  # already claimed before the STOP: in flight


def test_nothing_is_claimed_while_paused_or_after_cancel(db_session: Session, redis_client: object) -> None:
    broadcast = create_broadcast(db_session, numbers(150))
    pause_broadcast(db_session, redis_client, broadcast.id)  # type: ignore[arg-type]
    assert claim_pending_messages(db_session, broadcast.id, 0, lease_seconds=60) == []
    cancel_broadcast(db_session, redis_client, broadcast.id)  # type: ignore[arg-type]
    assert claim_pending_messages(db_session, broadcast.id, 1, lease_seconds=60) == []
    counts = db_session.execute(
        text("SELECT state, count(*) FROM messages WHERE broadcast_id = :id GROUP BY state"), {"id": broadcast.id}
    ).all()
    assert dict(counts) == {"canceled": 150}  # type: ignore[arg-type]
