"""Normalise recipient phone numbers to E.164 and collapse duplicates. Pure functions, no I/O."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# ASCII: `\d` alone also matches other scripts' digits (full-width, Arabic-Indic), which Twilio refuses.
E164_PATTERN = re.compile(r"\+[1-9]\d{1,14}", re.ASCII)
# Characters people put in numbers for readability; removed before the E.164 check.
_SEPARATORS = re.compile(r"[\s\-.()]")
MAX_REPORTED_INVALID = 100


@dataclass(frozen=True)
class InvalidRecipient:
    index: int
    value: Any
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "value": self.value, "reason": self.reason}


@dataclass
class NormalisedRecipients:
    numbers: list[str] = field(default_factory=list)  # valid, distinct, in first-seen order
    duplicates: int = 0
    invalid_count: int = 0
    invalid_sample: list[InvalidRecipient] = field(default_factory=list)  # the first MAX_REPORTED_INVALID


def normalise_phone_number(raw: str) -> str | None:
    """Return the E.164 form of `raw`, or None when it cannot be one.

    Spaces, dashes, dots and parentheses are removed and a leading international `00` becomes `+`.
    """
    if E164_PATTERN.fullmatch(raw):  # the common case: already clean
        return raw
    cleaned = _SEPARATORS.sub("", raw)
    if cleaned.startswith("00"):
        cleaned = "+" + cleaned[2:]
    return cleaned if E164_PATTERN.fullmatch(cleaned) else None


def _invalid_reason(raw: Any) -> str:
    if not isinstance(raw, str):
        return "not a string"
    cleaned = _SEPARATORS.sub("", raw)
    if cleaned == "":
        return "empty"
    if cleaned.startswith("00"):
        cleaned = "+" + cleaned[2:]
    if not cleaned.startswith("+"):
        return "missing country code: start with + or 00"
    digits = cleaned[1:]
    if not (digits.isascii() and digits.isdigit()):
        return "contains characters other than digits"
    if digits.startswith("0"):
        return "country code cannot start with 0"
    if len(digits) > 15:
        return "too long: E.164 numbers have at most 15 digits"
    return "too short: E.164 numbers have at least 2 digits"


def normalise_recipients(raw_recipients: Sequence[Any]) -> NormalisedRecipients:
    """Normalise every entry, keep the first occurrence of each number, and report the invalid ones."""
    result = NormalisedRecipients()
    seen: set[str] = set()
    numbers = result.numbers
    for index, raw in enumerate(raw_recipients):
        number = normalise_phone_number(raw) if isinstance(raw, str) else None
        if number is None:
            result.invalid_count += 1
            if len(result.invalid_sample) < MAX_REPORTED_INVALID:
                result.invalid_sample.append(InvalidRecipient(index, raw, _invalid_reason(raw)))
        elif number in seen:
            result.duplicates += 1
        else:
            seen.add(number)
            numbers.append(number)
    return result


def mask_phone_number(number: str) -> str:
    """For logs: keep only the last four digits."""
    return "*" * max(len(number) - 4, 0) + number[-4:]
