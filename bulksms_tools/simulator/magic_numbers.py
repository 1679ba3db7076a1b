"""Recipient numbers that force an outcome, matched by their first 12 characters.

Every magic prefix is `+1500555` followed by four digits, so `+15005550013` and `+150055500131234` (E.164
allows 15 digits) behave the same: tests can use many distinct numbers with one outcome. The `+1500555000x`
prefixes keep the meaning Twilio gives its own test numbers; the others are ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

MAGIC_PREFIX_LENGTH = 12
MAGIC_NUMBER_START = "+1500555"


class MagicKind(Enum):
    REJECTED = "rejected"  # 400 at once, nothing stored
    DELIVERY_FAILS = "delivery fails"  # accepted (201), the callbacks end undelivered / failed
    SLOW = "slow"  # accepted and stored, the answer comes after `slow_ms`
    SERVER_ERROR = "server error"  # accepted and stored, the answer is 500 (code 20500)
    FIRST_DELIVERY_FAILS = "first delivery fails"  # like DELIVERY_FAILS for the first message to the number only


@dataclass(frozen=True)
class MagicNumber:
    prefix: str
    kind: MagicKind
    error_code: int | None
    final_status: str | None  # for DELIVERY_FAILS: "undelivered" or "failed"
    description: str


MAGIC_NUMBERS: dict[str, MagicNumber] = {
    magic.prefix: magic
    for magic in (
        MagicNumber("+15005550001", MagicKind.REJECTED, 21211, None, "invalid 'To' number (Twilio's test number)"),
        MagicNumber("+15005550002", MagicKind.REJECTED, 21612, None, "cannot route to this number (Twilio's)"),
        MagicNumber("+15005550003", MagicKind.REJECTED, 21408, None, "no permission for the region (Twilio's)"),
        MagicNumber("+15005550004", MagicKind.REJECTED, 21610, None, "recipient replied STOP (Twilio's)"),
        MagicNumber("+15005550009", MagicKind.REJECTED, 21614, None, "not a mobile number (Twilio's)"),
        MagicNumber("+15005550013", MagicKind.DELIVERY_FAILS, 30003, "undelivered", "unreachable handset"),
        MagicNumber("+15005550015", MagicKind.DELIVERY_FAILS, 30005, "failed", "unknown destination handset"),
        MagicNumber("+15005550017", MagicKind.DELIVERY_FAILS, 30007, "undelivered", "carrier filtering"),
        MagicNumber("+15005550018", MagicKind.DELIVERY_FAILS, 30008, "undelivered", "unknown carrier error"),
        MagicNumber(
            "+15005550023",
            MagicKind.FIRST_DELIVERY_FAILS,
            30003,
            "undelivered",
            "first message to the number unreachable (30003), later ones delivered",
        ),
        MagicNumber("+15005550020", MagicKind.SLOW, None, None, "answers 201 after slow_ms (client time-out)"),
        MagicNumber("+15005550050", MagicKind.SERVER_ERROR, 20500, None, "stored and counted, answers 500"),
    )
}

# Twilio's wording for the request-time rejections; `{to}` is the recipient.
REJECTION_MESSAGES: dict[int, str] = {
    21211: "The 'To' number {to} is not a valid phone number.",
    21612: "The 'To' phone number: {to}, is not currently reachable using the 'From' phone number via SMS.",
    21408: "Permission to send an SMS has not been enabled for the region indicated by the 'To' number: {to}.",
    21610: "Attempt to send to unsubscribed recipient",
    21614: "'To' number {to} is not a valid mobile number",
}

# error_message of a message resource that failed after acceptance.
DELIVERY_ERROR_MESSAGES: dict[int, str] = {
    30003: "Unreachable destination handset",
    30005: "Unknown destination handset",
    30007: "Carrier violation",
    30008: "Unknown error",
}


def magic_number_for(to: str) -> MagicNumber | None:
    """The forced outcome for this recipient, or None for an ordinary number."""
    if not to.startswith(MAGIC_NUMBER_START):
        return None
    return MAGIC_NUMBERS.get(to[:MAGIC_PREFIX_LENGTH])
