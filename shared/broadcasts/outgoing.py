"""What every message of a broadcast is sent with, read once per chunk: body or template, media, Twilio options."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.broadcasts.deadlines import validity_period_left
from shared.broadcasts.segments import count_segments
from shared.broadcasts.templates import MessageTemplate, parse_template

# Segment counts of recent plain bodies: every message of a broadcast has the same one.
_BODY_SEGMENTS: dict[str, int] = {}


class DeadlinePassed(Exception):
    """The broadcast's deadline leaves less than Twilio's smallest ValidityPeriod: the message must not be sent."""


@dataclass(frozen=True, slots=True)
class OutgoingContent:
    body: str
    template: MessageTemplate | None = None  # parsed once; each message is rendered from its own variables
    media_urls: tuple[str, ...] | None = None
    validity_period: int | None = None
    smart_encoded: bool = False
    deadline: datetime | None = None  # nothing leaves Twilio after it: ValidityPeriod is cut to the time left
    test: bool = False  # a test key's broadcast: sent through the test account (shared.twilio.accounts)

    def body_for(self, variables: Mapping[str, str] | None) -> str:
        return self.body if self.template is None else self.template.render(variables)

    def segments_for(self, text_body: str) -> int:
        """What one message costs of the sender's throughput: its segments (an MMS counts as one)."""
        if self.media_urls:
            return 1
        if self.template is None and text_body is self.body:
            return self._body_segments()
        return count_segments(text_body).segments

    def _body_segments(self) -> int:
        cached = _BODY_SEGMENTS.get(self.body)
        if cached is None:
            cached = _BODY_SEGMENTS[self.body] = count_segments(self.body).segments
            if len(_BODY_SEGMENTS) > 64:
                _BODY_SEGMENTS.pop(next(iter(_BODY_SEGMENTS)))
        return cached

    def send_options(self, now: datetime | None = None) -> dict[str, Any]:
        """Keyword arguments for `TwilioGateway.send` of a request starting `now`: only the options this broadcast
        uses. Raises DeadlinePassed when its deadline leaves no time to send."""
        options: dict[str, Any] = {}
        if self.media_urls:
            options["media_urls"] = self.media_urls
        validity_period = validity_period_left(self.deadline, self.validity_period, now or datetime.now(UTC))
        if validity_period == 0:
            raise DeadlinePassed()
        if validity_period is not None:
            options["validity_period"] = validity_period
        if self.smart_encoded:
            options["smart_encoded"] = True
        return options


def load_outgoing_content(session: Session, broadcast_id: uuid.UUID) -> OutgoingContent | None:
    """The broadcast's content and send options, or None when there is no such broadcast."""
    row = session.execute(
        text(
            "SELECT body, is_template, media_urls, validity_period, smart_encoded, deadline, test FROM broadcasts "
            "WHERE id = :id"
        ),
        {"id": broadcast_id},
    ).one_or_none()
    if row is None:
        return None
    return OutgoingContent(
        body=row.body,
        template=parse_template(row.body) if row.is_template else None,
        media_urls=tuple(row.media_urls) if row.media_urls else None,
        validity_period=row.validity_period,
        smart_encoded=bool(row.smart_encoded),
        deadline=row.deadline,
        test=bool(row.test),
    )
