"""A broadcast's messages as CSV, read in keyset pages by id so a million rows never sit in memory at once.

After each message's own columns come the broadcast's options shown in the export (shared.broadcasts.options),
the same on every row, so a file read on its own still says which broadcast it belongs to.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.broadcasts.options import View, shown_columns, shown_option_names, shown_values
from shared.platform.csv_cells import safe_row
from shared.platform.models import Broadcast, Message

MESSAGE_COLUMNS = (
    "number",
    "state",
    "twilio_sid",
    "twilio_status",
    "error_code",
    "error_message",
    "attempts",
    "created_at",
    "sent_at",
    "last_receipt_at",
    "final_at",
)
# `test`: true for a test key's broadcast (sent to the test account, never to a phone).
EXPORT_COLUMNS = (*MESSAGE_COLUMNS, *shown_option_names(View.MESSAGES_EXPORT), "test")
EXPORT_PAGE_SIZE = 5_000


def _timestamp(value: datetime | None) -> str:
    return value.isoformat() if value is not None else ""


def _broadcast_cells(session: Session, broadcast_id: uuid.UUID) -> tuple[Any, ...]:
    """The broadcast's options shown in the export and its test flag, as CSV cells (read once, not per message)."""
    columns = shown_columns(View.MESSAGES_EXPORT)
    row = session.execute(
        select(Broadcast.test, *(getattr(Broadcast, column) for column in columns)).where(Broadcast.id == broadcast_id)
    ).one_or_none()
    if row is None:
        return ("",) * (len(columns) + 1)
    options = shown_values(row, View.MESSAGES_EXPORT).values() if columns else ()
    return (*("" if value is None else value for value in options), "true" if row.test else "false")


def export_messages_csv(
    session: Session, broadcast_id: uuid.UUID, *, state: str | None = None, page_size: int = EXPORT_PAGE_SIZE
) -> Iterator[str]:
    """CSV text (header first, CRLF lines) of the broadcast's messages in the order given, optionally one state.

    Each page is its own short transaction: nothing is held open while the client reads, and paging by id
    yields every message exactly once.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(safe_row(EXPORT_COLUMNS))
    yield buffer.getvalue()
    broadcast_cells = _broadcast_cells(session, broadcast_id)
    after_id = 0
    while True:
        query = select(
            Message.id,
            Message.to_number,
            Message.state,
            Message.twilio_sid,
            Message.twilio_status,
            Message.error_code,
            Message.error_message,
            Message.attempts,
            Message.created_at,
            Message.sent_at,
            Message.last_receipt_at,
            Message.final_at,
        ).where(Message.broadcast_id == broadcast_id, Message.id > after_id)
        if state is not None:
            query = query.where(Message.state == state)
        rows = session.execute(query.order_by(Message.id).limit(page_size)).all()
        session.commit()
        if not rows:
            return
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        for row in rows:
            writer.writerow(
                safe_row(
                    (
                        row.to_number,
                        row.state,
                        row.twilio_sid or "",
                        row.twilio_status or "",
                        "" if row.error_code is None else row.error_code,
                        row.error_message or "",
                        row.attempts,
                        _timestamp(row.created_at),
                        _timestamp(row.sent_at),
                        _timestamp(row.last_receipt_at),
                        _timestamp(row.final_at),
                        *broadcast_cells,
                    )
                )
            )
        yield buffer.getvalue()
        after_id = rows[-1].id
