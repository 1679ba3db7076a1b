"""Status precedence: what a late, duplicated or out-of-order callback may and may not change."""

import pytest

from shared.receipts.delivery_status import StatusReport, advances, fold_status_reports, is_final


@pytest.mark.parametrize(
    ("current", "incoming", "moves_forward"),
    [
        (None, "queued", True),
        ("accepted", "queued", True),
        ("queued", "sent", True),
        ("sent", "delivered", True),
        ("sending", "failed", True),  # failed can come before sent
        ("delivered", "sent", False),  # a late sent never overwrites delivered
        ("delivered", "delivered", False),  # a duplicate is a no-op
        ("delivered", "undelivered", False),  # the first final report wins
        ("undelivered", "delivered", False),
        ("delivered", "read", True),
        ("read", "delivered", False),
        ("sent", "received", False),  # inbound statuses never touch an outbound message
        ("sent", "no-such-status", False),
        ("queued", "queued", False),
    ],
)
def test_status_only_moves_forward(current: str | None, incoming: str, moves_forward: bool) -> None:
    assert advances(current, incoming) is moves_forward


def test_final_statuses() -> None:
    assert [s for s in ("queued", "sent", "delivered", "undelivered", "failed", "read") if is_final(s)] == [
        "delivered",
        "undelivered",
        "failed",
        "read",
    ]
    assert not is_final(None)


def test_a_batch_folds_to_the_most_advanced_report_per_message() -> None:
    reports = [
        StatusReport("SM1", "sent"),
        StatusReport("SM1", "delivered"),
        StatusReport("SM1", "queued"),  # arrived last, means least
        StatusReport("SM2", "queued"),
        StatusReport("SM2", "undelivered", 30003),
        StatusReport("SM2", "sent"),
        StatusReport("SM3", "received"),  # ignored entirely
    ]
    assert fold_status_reports(reports) == {
        "SM1": StatusReport("SM1", "delivered"),
        "SM2": StatusReport("SM2", "undelivered", 30003),
    }
