"""The suppression list (`opted_out_numbers`): STOP/START replies, the opt-out API and CSV, and skipping at send.

A number on the list never receives a message: intake stores its message as `skipped` (skip_reason `opted_out`,
one set-based UPDATE after the COPY), and each chunk claim first skips the chunk's pending rows whose number
opted out since (one UPDATE per chunk), so a STOP that arrives mid-broadcast takes effect for what is not sent yet.
The list is account-wide: it is not scoped to an API key (a person who replied STOP must not get anyone's SMS).
"""

from __future__ import annotations

import csv
import io
import string
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.compliance.phone_numbers import InvalidPhoneNumber, echo_value, parse_phone_number
from shared.messages import store as message_store
from shared.platform.csv_cells import safe_row

# Twilio's default opt-out, opt-in and help keywords (Advanced Opt-Out uses the same by default).
STOP_KEYWORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"})
START_KEYWORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_KEYWORDS = frozenset({"HELP", "INFO"})

# Where a suppression came from (`opted_out_numbers.source`). Only SOURCE_INBOUND is lifted by a START reply: a number
# an operator or client added (API, CSV) or Twilio refused (21610) stays until removed through the API.
SOURCE_INBOUND = "inbound_stop"  # the person replied STOP
SOURCE_SEND_21610 = "send_21610"  # Twilio refused a send with 21610 (the number had replied STOP to our sender)
SOURCE_CALLBACK_21610 = "callback_21610"  # a status callback reported 21610
SOURCE_API = "api"  # POST /v1/opt-outs (JSON)
SOURCE_CSV = "csv_import"  # POST /v1/opt-outs (text/csv)
SOURCES = (SOURCE_INBOUND, SOURCE_SEND_21610, SOURCE_CALLBACK_21610, SOURCE_API, SOURCE_CSV)
MAX_REASON_LENGTH = 500
MAX_REPORTED_INVALID = 100
_STRIPPED = string.whitespace + string.punctuation


def classify_reply(body: str | None, opt_out_type: str | None = None) -> str | None:
    """`stop`, `start`, `help` or None for an inbound SMS; Twilio's `OptOutType` wins when present."""
    if opt_out_type:
        kind = opt_out_type.strip().upper()
        return {"STOP": "stop", "START": "start", "HELP": "help"}.get(kind)
    word = (body or "").strip(_STRIPPED).upper()
    if word in STOP_KEYWORDS:
        return "stop"
    if word in START_KEYWORDS:
        return "start"
    if word in HELP_KEYWORDS:
        return "help"
    return None


@dataclass(frozen=True)
class OptOut:
    phone_number: str
    source: str
    reason: str | None
    created_at: datetime


@dataclass
class AddResult:
    added: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)


def add_opt_outs(session: Session, numbers: Iterable[str], *, source: str, reason: str | None) -> AddResult:
    """Insert E.164 numbers (already normalised); numbers already listed keep their first source and reason."""
    distinct = sorted(set(numbers))
    result = AddResult()
    if not distinct:
        return result
    inserted = set(
        session.execute(
            text(
                "INSERT INTO opted_out_numbers (phone_number, source, reason) "
                "SELECT unnest(CAST(:numbers AS text[])), :source, :reason "
                "ON CONFLICT DO NOTHING RETURNING phone_number"
            ),
            {"numbers": distinct, "source": source, "reason": reason},
        ).scalars()
    )
    result.added = [number for number in distinct if number in inserted]
    result.already_present = [number for number in distinct if number not in inserted]
    return result


def remove_opt_out(session: Session, number: str) -> bool:
    """Take a number off the list whatever put it there (DELETE /v1/opt-outs); False when it was not on it."""
    deleted = session.execute(
        text("DELETE FROM opted_out_numbers WHERE phone_number = :number"), {"number": number}
    ).rowcount  # type: ignore[attr-defined]
    return bool(deleted)


def lift_stop(session: Session, number: str) -> bool:
    """A START reply: remove the number only if its own STOP put it on the list; True when it was removed.

    A suppression added by an operator or client, or after Twilio's 21610, stays: the person's START does not
    override a decision someone else made (an operator removes it with DELETE /v1/opt-outs/{number})."""
    deleted = session.execute(
        text("DELETE FROM opted_out_numbers WHERE phone_number = :number AND source = :source"),
        {"number": number, "source": SOURCE_INBOUND},
    ).rowcount  # type: ignore[attr-defined]
    return bool(deleted)


def search_pattern(search: str | None) -> str:
    """A LIKE pattern: a search starting with + is a prefix (a range of the primary key), else a substring."""
    cleaned = "".join(character for character in (search or "") if character.isdigit() or character == "+")
    return cleaned + "%" if cleaned.startswith("+") else "%" + cleaned + "%"


def list_opt_outs(session: Session, *, search: str | None, after: str | None, limit: int) -> tuple[list[OptOut], bool]:
    """Numbers in E.164 order after `after`, optionally matching `search`; True when more follow."""
    rows = session.execute(
        text(
            "SELECT phone_number, source, reason, created_at FROM opted_out_numbers "
            "WHERE phone_number > :after AND phone_number LIKE :pattern ORDER BY phone_number LIMIT :limit"
        ),
        {"after": after or "", "limit": limit + 1, "pattern": search_pattern(search)},
    ).all()
    items = [OptOut(row.phone_number, row.source, row.reason, row.created_at) for row in rows[:limit]]
    return items, len(rows) > limit


def export_opt_outs_csv(session: Session, batch_size: int = 5_000) -> Iterator[str]:
    """The whole list as CSV text (header first), read in keyset batches so memory stays flat."""
    yield "phone,source,reason,created_at\r\n"
    after = ""
    while True:
        rows = session.execute(
            text(
                "SELECT phone_number, source, reason, created_at FROM opted_out_numbers "
                "WHERE phone_number > :after ORDER BY phone_number LIMIT :limit"
            ),
            {"after": after, "limit": batch_size},
        ).all()
        if not rows:
            return
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        for row in rows:
            writer.writerow(safe_row([row.phone_number, row.source, row.reason, row.created_at.isoformat()]))
        yield buffer.getvalue()
        after = rows[-1].phone_number


class CsvFormatError(ValueError):
    """The CSV has no `phone` column (or no header at all)."""


@dataclass
class CsvImportResult:
    imported: int = 0
    already_present: int = 0
    invalid_count: int = 0
    invalid: list[dict[str, Any]] = field(default_factory=list)  # the first MAX_REPORTED_INVALID, with line numbers


def import_opt_outs_csv(session: Session, content: str, *, default_reason: str | None = None) -> CsvImportResult:
    """Add every valid `phone` of a CSV (optional `reason` column); report invalid rows by line number."""
    reader = csv.DictReader(io.StringIO(content))
    header = [name.strip().lower() for name in (reader.fieldnames or [])]
    if "phone" not in header:
        raise CsvFormatError("The CSV needs a header row with a `phone` column (and optionally `reason`).")
    reader.fieldnames = header
    result = CsvImportResult()
    by_reason: dict[str | None, set[str]] = {}
    seen: set[str] = set()
    for row in reader:
        raw = (row.get("phone") or "").strip()
        try:
            number = parse_phone_number(raw).e164
        except InvalidPhoneNumber as error:
            result.invalid_count += 1
            if len(result.invalid) < MAX_REPORTED_INVALID:
                result.invalid.append({"line": reader.line_num, "value": echo_value(raw), "reason": error.reason})
            continue
        if number in seen:
            result.already_present += 1
            continue
        seen.add(number)
        reason = (row.get("reason") or "").strip()[:MAX_REASON_LENGTH] or default_reason
        by_reason.setdefault(reason, set()).add(number)
    for reason, numbers in by_reason.items():
        added = add_opt_outs(session, numbers, source=SOURCE_CSV, reason=reason)
        result.imported += len(added.added)
        result.already_present += len(added.already_present)
    return result


def skip_opted_out_at_intake(session: Session, broadcast_id: uuid.UUID) -> list[str]:
    """Mark the new broadcast's messages to listed numbers `skipped` (one statement, none when the list is
    empty); returns their numbers."""
    if not session.execute(text("SELECT EXISTS (SELECT 1 FROM opted_out_numbers)")).scalar():
        return []
    return message_store.skip_opted_out(session, broadcast_id)


def skip_opted_out_in_chunk(session: Session, broadcast_id: uuid.UUID, chunk_number: int) -> int:
    """Before a claim: the chunk's pending rows whose number is listed become `skipped` (one statement)."""
    return len(message_store.skip_opted_out(session, broadcast_id, chunk_number))


def normalise_numbers(raw_numbers: Sequence[Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """(valid E.164 numbers, invalid entries with index, value and reason)."""
    valid: list[str] = []
    invalid: list[dict[str, Any]] = []
    for index, raw in enumerate(raw_numbers):
        try:
            valid.append(parse_phone_number(raw).e164)
        except InvalidPhoneNumber as error:
            invalid.append({"index": index, "value": echo_value(raw), "reason": error.reason})
    return valid, invalid
