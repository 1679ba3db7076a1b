"""Quiet hours: pure window arithmetic (table-driven), then the claim deferring rows with a frozen clock."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from shared.compliance.quiet_hours import QuietHours, count_deferred, not_before_for, parse_hh_mm, zones_for_number
from shared.platform.models import Broadcast
from shared.sending.claims import claim_pending_messages
from tests.factories import create_broadcast, messages_of

NIGHT = QuietHours.parse("21:00", "08:00")
NEW_YORK, LONDON, SYDNEY, TOLL_FREE, UNKNOWN = (
    "+12125550100",
    "+442071234567",
    "+61291234567",
    "+18005550100",
    "+15555550100",
)
# Frozen: 03:00 UTC on a winter day far enough ahead that the database's now() is before every not_before.
FROZEN = datetime(2030, 1, 15, 3, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("window", "local", "inside"),
    [
        (("21:00", "08:00"), "20:59", False),
        (("21:00", "08:00"), "21:00", True),
        (("21:00", "08:00"), "00:00", True),
        (("21:00", "08:00"), "07:59", True),
        (("21:00", "08:00"), "08:00", False),
        (("12:00", "14:00"), "13:00", True),
        (("12:00", "14:00"), "14:00", False),
        (("12:00", "14:00"), "11:59", False),
    ],
)
def test_window_contains(window: tuple[str, str], local: str, inside: bool) -> None:
    assert QuietHours.parse(*window).contains(parse_hh_mm(local)) is inside


@pytest.mark.parametrize("value", ["24:00", "7:00", "07:60", "0700", ""])
def test_bad_times_are_refused(value: str) -> None:
    with pytest.raises(ValueError):
        parse_hh_mm(value)


def test_single_zone_numbers_wait_for_their_own_morning() -> None:
    # New York 22:00 EST -> 08:00 EST = 13:00 UTC; London 03:00 GMT -> 08:00 = 08:00 UTC; Sydney 14:00: now.
    assert not_before_for(zones_for_number(NEW_YORK), NIGHT, FROZEN) == datetime(2030, 1, 15, 13, 0, tzinfo=UTC)
    assert not_before_for(zones_for_number(LONDON), NIGHT, FROZEN) == datetime(2030, 1, 15, 8, 0, tzinfo=UTC)
    assert not_before_for(zones_for_number(SYDNEY), NIGHT, FROZEN) is None
    # Unknown zone: judged in UTC (03:00 is inside, so 08:00 UTC).
    assert not_before_for(zones_for_number(UNKNOWN), NIGHT, FROZEN) == datetime(2030, 1, 15, 8, 0, tzinfo=UTC)


def test_a_number_spanning_several_zones_waits_until_it_is_day_in_all() -> None:
    zones = zones_for_number(TOLL_FREE)
    assert len(zones) > 3
    until = not_before_for(zones, NIGHT, FROZEN)
    assert until is not None and until > FROZEN
    assert all(not NIGHT.contains(until.astimezone(zone).time()) for zone in zones)
    just_before = until - timedelta(minutes=1)
    assert any(NIGHT.contains(just_before.astimezone(zone).time()) for zone in zones)


def test_window_end_follows_a_dst_change() -> None:
    # Night of 9-10 March 2030 in New York: clocks go forward at 02:00; the window still ends at 08:00 local.
    at = datetime(2030, 3, 10, 4, 0, tzinfo=UTC)  # 23:00 EST on the 9th
    assert not_before_for(zones_for_number(NEW_YORK), NIGHT, at) == datetime(2030, 3, 10, 12, 0, tzinfo=UTC)


def test_count_deferred_at_intake() -> None:
    assert count_deferred([NEW_YORK, LONDON, SYDNEY, TOLL_FREE], NIGHT, FROZEN) == 3
    assert count_deferred([NEW_YORK, LONDON, SYDNEY], NIGHT, FROZEN + timedelta(hours=14)) == 1  # Sydney 04:00


def test_the_claim_defers_rows_inside_the_window_and_claims_the_others(db_session: Session) -> None:
    broadcast = create_broadcast(db_session, [NEW_YORK, LONDON, SYDNEY, TOLL_FREE, "+61291234568"])
    db_session.execute(
        update(Broadcast).where(Broadcast.id == broadcast.id).values(quiet_hours_start="21:00", quiet_hours_end="08:00")
    )
    db_session.commit()
    claimed = claim_pending_messages(db_session, broadcast.id, 0, lease_seconds=60, now=FROZEN)
    db_session.commit()
    assert sorted(message.to_number for message in claimed) == [SYDNEY, "+61291234568"]

    by_number = {message.to_number: message for message in messages_of(db_session, broadcast.id)}
    assert by_number[NEW_YORK].state == "pending"
    assert by_number[NEW_YORK].not_before == datetime(2030, 1, 15, 13, 0, tzinfo=UTC)
    assert by_number[LONDON].not_before == datetime(2030, 1, 15, 8, 0, tzinfo=UTC)
    assert by_number[TOLL_FREE].not_before == not_before_for(zones_for_number(TOLL_FREE), NIGHT, FROZEN)
    assert by_number[SYDNEY].not_before is None and by_number[SYDNEY].state == "sending"

    # A second task for the chunk (a redelivery) claims nothing: the deferred rows are not due.
    assert claim_pending_messages(db_session, broadcast.id, 0, lease_seconds=60, now=FROZEN) == []


def test_parse_round_trip() -> None:
    assert QuietHours.parse("21:30", "07:15") == QuietHours(time(21, 30), time(7, 15))
