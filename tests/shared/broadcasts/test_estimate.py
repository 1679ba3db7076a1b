"""The estimate of how long a broadcast takes: its unsent segments over the throughput, per status (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.broadcasts.estimate import estimate_broadcast, remaining_segments

NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)
LATER = NOW + timedelta(hours=3)


@pytest.mark.parametrize(
    ("total", "recipients", "unsent", "expected"),
    [(5_000, 4_000, 4_000, 5_000), (5_000, 4_000, 2_000, 2_500), (5_000, 4_000, 0, 0), (0, 0, 0, 0)],
)
def test_remaining_segments_are_the_unsent_share_of_the_total(
    total: int, recipients: int, unsent: int, expected: int
) -> None:
    assert remaining_segments(total, recipients, unsent) == expected


@pytest.mark.parametrize(
    ("status", "left", "rate", "seconds", "finish_at"),
    [
        ("queued", 5_000, 50.0, 100.0, NOW + timedelta(seconds=100)),
        ("sending", 2_500, 50.0, 50.0, NOW + timedelta(seconds=50)),
        ("scheduled", 5_000, 50.0, 100.0, LATER + timedelta(seconds=100)),  # from its send_at
        ("held", 5_000, 50.0, 100.0, LATER + timedelta(seconds=100)),  # from when the cap resets
        ("paused", 5_000, 50.0, 100.0, None),  # nobody knows when it resumes
        ("sending", 5_000, None, None, None),  # unpaced: no throughput to divide by
        ("submitted", 0, 50.0, None, None),
        ("canceled", 1_000, 50.0, None, None),
    ],
)
def test_the_estimate_follows_the_status(
    status: str, left: int, rate: float | None, seconds: float | None, finish_at: datetime | None
) -> None:
    estimate = estimate_broadcast(status, left, rate, NOW, send_at=LATER, held_until=LATER)
    assert (estimate.seconds, estimate.finish_at) == (seconds, finish_at)


def test_a_broadcast_held_until_an_operator_resumes_it_has_no_finish_time() -> None:
    estimate = estimate_broadcast("held", 5_000, 50.0, NOW, held_until=None)
    assert estimate.seconds == 100.0 and estimate.finish_at is None
