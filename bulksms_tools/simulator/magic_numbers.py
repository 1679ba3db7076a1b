"""Recipient numbers that force an outcome: `+1 5XX 555 00YY`, where the last four digits pick it.

The area code is free among 500 to 599, so `+15005550013`, `+15015550013` … `+15995550013` all behave the same:
tests have a hundred distinct numbers for each outcome (`magic_variant`). Every one is a possible North American
number (ten digits after +1), so intake accepts them like any other. `+1 500 555 000Y` keep the meaning Twilio
gives its own test numbers; the others are ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

MAGIC_NUMBER_START = "+1500555"  # the canonical form: area code 500
MAGIC_VARIANTS = 100  # area codes 500 to 599


class MagicKind(Enum):
    REJECTED = "rejected"  # 400 at once, nothing stored
    DELIVERY_FAILS = "delivery fails"  # accepted (201), the callbacks end undelivered / failed
    SLOW = "slow"  # accepted and stored, the answer comes after `slow_ms`
    SERVER_ERROR = "server error"  # accepted and stored, the answer is 500 (code 20500)
    FIRST_DELIVERY_FAILS = "first delivery fails"  # like DELIVERY_FAILS for the first message to the number only


@dataclass(frozen=True)
class MagicNumber:
    number: str  # canonical, area code 500
    kind: MagicKind
    error_code: int | None
    final_status: str | None  # for DELIVERY_FAILS: "undelivered" or "failed"
    description: str


MAGIC_NUMBERS: dict[str, MagicNumber] = {
    magic.number: magic
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
    # +1 5XX 555 00YY: "+15" area-code tail (2 digits), exchange "555", line "00YY".
    if len(to) != len(MAGIC_NUMBER_START) + 4 or not to.startswith("+15") or to[5:10] != "55500":
        return None
    return MAGIC_NUMBERS.get(MAGIC_NUMBER_START + to[8:])


def magic_variant(number: str, variant: int) -> str:
    """Another recipient with the outcome of the magic `number`: variant 0 to 99 is area code 500 to 599."""
    if number not in MAGIC_NUMBERS or not 0 <= variant < MAGIC_VARIANTS:
        raise ValueError(f"no variant {variant} of magic number {number}")
    return f"+15{variant:02d}{number[5:]}"
