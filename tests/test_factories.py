"""The test factories store what intake stores: a broadcast built by `tests.factories.create_broadcast` has the
computed columns and messages that `shared.broadcasts.intake.create_broadcast` gives the same body and list, so
tests built on factories see the broadcasts users create."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session

from shared.broadcasts.content import TemplateRecipientsError
from shared.broadcasts.intake import BroadcastRequest
from shared.broadcasts.intake import create_broadcast as intake_create_broadcast
from shared.platform.models import Broadcast
from tests.factories import create_api_key, create_broadcast, messages_of, numbers

COMPUTED_COLUMNS = (
    "body",
    "is_template",
    "status",
    "encoding",
    "characters",
    "segments",
    "segments_min",
    "segments_max",
    "segments_total",
    "estimated_cost",
    "recipients_received",
    "recipients_accepted",
    "recipients_duplicates",
    "recipients_invalid",
    "invalid_sample",
    "chunk_size",
    "chunk_count",
)


def stored(session: Session, broadcast: Broadcast) -> dict[str, Any]:
    columns = {name: getattr(broadcast, name) for name in COMPUTED_COLUMNS}
    columns["messages"] = [
        (message.chunk_number, message.to_number, message.state, message.variables)
        for message in messages_of(session, broadcast.id)
    ]
    return columns


@pytest.mark.parametrize(
    ("body", "recipients", "chunk_size"),
    [
        ("Hello from the worker tests", numbers(250), 100),
        # 161 GSM-7 characters: two segments of 153.
        ("x" * 161, numbers(3), 100),
        # An emoji makes it UCS-2 and takes two code units: 71 units are two segments of 67.
        ("Polls close at 10pm 🗳" + "." * 49, numbers(5), 2),
        # Duplicates and spelled-out numbers are collapsed and normalised, as intake does.
        ("Hi", ["+1 555 000 0001", "+15550000001", "0015550000002", "+15550000003"], 100),
        ("Hi {first_name|there}, polls close at {time|10pm}", numbers(7), 3),
        ("Literal braces {{like this}}", numbers(2), 100),
    ],
    ids=["plain", "two GSM-7 segments", "UCS-2", "duplicates and spellings", "template", "escaped braces"],
)
def test_a_factory_broadcast_is_what_intake_stores_for_the_same_body_and_list(
    db_session: Session, body: str, recipients: list[str], chunk_size: int
) -> None:
    api_key = create_api_key(db_session)
    from_intake = intake_create_broadcast(
        db_session, api_key_id=api_key.id, request=BroadcastRequest(body, recipients), chunk_size=chunk_size
    ).broadcast

    from_factory = create_broadcast(db_session, recipients, body=body, chunk_size=chunk_size, api_key=api_key)

    assert stored(db_session, from_factory) == stored(db_session, from_intake)


@pytest.mark.parametrize(
    ("body", "recipients", "refusal"),
    [
        ("Hi", ["+15550000001", "not a number"], ValueError),
        ("Hi {first_name}", numbers(2), TemplateRecipientsError),
    ],
    ids=["invalid number", "template value missing"],
)
def test_a_factory_refuses_a_list_intake_would_refuse(
    db_session: Session, body: str, recipients: list[str], refusal: type[Exception]
) -> None:
    with pytest.raises(refusal):
        create_broadcast(db_session, recipients, body=body)
