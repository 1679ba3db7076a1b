"""The order of meaning of Twilio message statuses, and folding many callbacks into one outcome. Pure, no I/O.

Twilio does not promise callbacks in order and may send one twice, so a status only ever moves forward:
accepted/scheduled < queued < sending < sent < delivered | undelivered | failed < read.
A late `sent` never overwrites `delivered`; a duplicate is a no-op.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

STATUS_RANK: dict[str, int] = {
    "accepted": 0,
    "scheduled": 0,
    "queued": 1,
    "sending": 2,
    "sent": 3,
    "delivered": 4,
    "undelivered": 4,
    "failed": 4,
    "canceled": 4,
    "read": 5,
}
FINAL_STATUSES = frozenset({"delivered", "undelivered", "failed", "canceled", "read"})
# Statuses Twilio reports for inbound messages or partial MMS; they never move an outbound message.
IGNORED_STATUSES = frozenset({"receiving", "received", "partially_delivered"})


def status_rank(status: str) -> int:
    """Rank of a status; unknown statuses rank below everything so they never overwrite a known one."""
    return STATUS_RANK.get(status, -1)


def is_final(status: str | None) -> bool:
    return status in FINAL_STATUSES


def advances(current: str | None, incoming: str) -> bool:
    """Whether `incoming` moves a message whose status is `current` forward.

    Among final statuses of equal rank (delivered / undelivered / failed) the first one recorded wins:
    a carrier does not un-deliver a message, and a second final report is a duplicate of meaning.
    """
    if incoming in IGNORED_STATUSES or incoming not in STATUS_RANK:
        return False
    if current is None:
        return True
    return status_rank(incoming) > status_rank(current)


@dataclass(frozen=True)
class StatusReport:
    """One callback's meaning: which Twilio message, which status, which error code (if any)."""

    message_sid: str
    status: str
    error_code: int | None = None


def fold_status_reports(reports: Iterable[StatusReport]) -> dict[str, StatusReport]:
    """The most advanced report per SID among `reports`, so a batch writes each message once."""
    folded: dict[str, StatusReport] = {}
    for report in reports:
        if report.status not in STATUS_RANK:
            continue
        best = folded.get(report.message_sid)
        if (
            best is None
            or advances(best.status, report.status)
            or (best.error_code is None and report.error_code is not None and report.status == best.status)
        ):
            folded[report.message_sid] = report
    return folded
