"""A broadcast's deadline: its rules, the ValidityPeriod it leaves a message, and the warning of intake's answer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.broadcasts.deadlines import (
    DeadlineError,
    check_deadline,
    deadline_warnings,
    validity_period_left,
)

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("deadline", "send_at", "problem"),
    [
        (NOW + timedelta(minutes=5), None, None),
        (NOW + timedelta(hours=72), None, None),
        (NOW, None, "future"),
        (NOW - timedelta(seconds=1), None, "future"),
        (NOW + timedelta(hours=72, seconds=1), None, "72 hours"),
        (NOW + timedelta(hours=2), NOW + timedelta(hours=1), None),
        (NOW + timedelta(hours=1), NOW + timedelta(hours=1), "after send_at"),
        (datetime(2026, 12, 2, 13, 0), None, "offset"),
    ],
)
def test_a_deadline_must_be_ahead_within_72_hours_and_after_send_at(
    deadline: datetime, send_at: datetime | None, problem: str | None
) -> None:
    if problem is None:
        check_deadline(deadline, NOW, send_at)
    else:
        with pytest.raises(DeadlineError, match=problem):
            check_deadline(deadline, NOW, send_at)


@pytest.mark.parametrize(
    ("deadline", "validity_period", "expected"),
    [
        (None, None, None),  # neither: Twilio's default
        (None, 600, 600),  # the broadcast's own
        (NOW + timedelta(seconds=90.7), None, 90),  # whole seconds left, never more
        (NOW + timedelta(seconds=90), 60, 60),  # the smaller of the two
        (NOW + timedelta(seconds=90), 600, 90),
        (NOW + timedelta(hours=20), None, 36_000),  # Twilio's maximum
        (NOW + timedelta(seconds=1), None, 1),  # Twilio's minimum
        (NOW + timedelta(seconds=0.9), None, 0),  # less than a second: not sent at all
        (NOW - timedelta(seconds=5), 600, 0),
    ],
)
def test_the_validity_period_is_the_time_left_before_the_deadline(
    deadline: datetime | None, validity_period: int | None, expected: int | None
) -> None:
    assert validity_period_left(deadline, validity_period, NOW) == expected


def test_intake_warns_when_the_estimate_passes_the_deadline_and_only_then() -> None:
    estimate = 100.0  # 5,000 segments at 50 segments/s
    assert deadline_warnings(NOW + timedelta(seconds=101), 5_000, estimate, NOW) == []
    [warning] = deadline_warnings(NOW + timedelta(seconds=60), 5_000, estimate, NOW)
    assert "100 s" in warning and "40 s after the deadline" in warning
    # A scheduled broadcast starts at send_at.
    assert deadline_warnings(NOW + timedelta(seconds=150), 5_000, estimate, NOW, NOW + timedelta(seconds=60))
    assert deadline_warnings(None, 5_000, estimate, NOW) == []
    assert deadline_warnings(NOW + timedelta(seconds=1), 5_000, None, NOW) == []  # no estimate: no warning
