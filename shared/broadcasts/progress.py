"""A broadcast's progress: counts per message state, what share is submitted and final, the delivery rate and the
error codes seen. Shown by `GET /v1/broadcasts/{id}` and sent in the completion callback.

Everything comes from the maintained counts (shared.messages.counts: per state, and per error code for `failed` /
`undelivered`), a few dozen rows whatever the broadcast's size, so a 1,000,000-recipient broadcast answers in a
few milliseconds (docs/benchmarks.md has the figure).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from shared.broadcasts.intake import message_state_counts
from shared.messages import counts as message_counts
from shared.platform.models import MessageState

# Twilio has not answered the current attempt yet (or we do not know its answer).
NOT_SUBMITTED_STATES = (MessageState.PENDING, MessageState.SENDING, MessageState.UNKNOWN)
# The story of the message is over: nothing will be sent and no receipt will change it.
FINAL_STATES = (MessageState.DELIVERED, MessageState.UNDELIVERED, MessageState.FAILED)
# Twilio took it, the carrier's verdict has not come (at completion by idle timeout: "sent, no receipt").
AWAITING_RECEIPT_STATES = (MessageState.ACCEPTED, MessageState.SENT)
ERROR_STATES = (MessageState.FAILED, MessageState.UNDELIVERED)


def _percent(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 2) if whole else None


@dataclass(frozen=True)
class BroadcastProgress:
    counts: dict[str, int]  # every MessageState, zeros included
    error_codes: list[tuple[int | None, int]] = field(default_factory=list)  # (code, messages), most frequent first

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def _sum(self, states: tuple[MessageState, ...]) -> int:
        return sum(self.counts[state.value] for state in states)

    @property
    def submitted(self) -> int:
        return self.total - self._sum(NOT_SUBMITTED_STATES)

    @property
    def final(self) -> int:
        return self._sum(FINAL_STATES)

    @property
    def delivered(self) -> int:
        return self.counts[MessageState.DELIVERED.value]

    @property
    def unsent(self) -> int:
        """Recipients bulksms has still to hand to Twilio (pending, in flight, or waiting for a new attempt)."""
        return self._sum((MessageState.PENDING, MessageState.SENDING, MessageState.RETRY_SCHEDULED))

    @property
    def awaiting_receipt(self) -> int:
        return self._sum(AWAITING_RECEIPT_STATES)

    def summary(self) -> dict[str, Any]:
        """The `progress` object of the API and of the completion callback."""
        return {
            "submitted": self.submitted,
            "submitted_percent": _percent(self.submitted, self.total),
            "final": self.final,
            "final_percent": _percent(self.final, self.total),
            "delivered": self.delivered,
            "delivery_rate_percent": _percent(self.delivered, self.final),
            "retry_scheduled": self.counts[MessageState.RETRY_SCHEDULED.value],
            "awaiting_receipt": self.awaiting_receipt,
        }

    def error_code_list(self) -> list[dict[str, Any]]:
        return [{"error_code": code, "count": count} for code, count in self.error_codes]


def error_code_counts(session: Session, broadcast_id: uuid.UUID) -> list[tuple[int | None, int]]:
    """(error code, messages) over the broadcast's failed and undelivered messages, most frequent first."""
    return message_counts.error_code_counts(session, broadcast_id, [state.value for state in ERROR_STATES])


def broadcast_progress(session: Session, broadcast_id: uuid.UUID) -> BroadcastProgress:
    counts = message_state_counts(session, broadcast_id)
    has_errors = any(counts[state.value] for state in ERROR_STATES)
    return BroadcastProgress(counts, error_code_counts(session, broadcast_id) if has_errors else [])
