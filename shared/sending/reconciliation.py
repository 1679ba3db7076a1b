"""Which message at Twilio a lost claim sent, if any: the identity rule of reconciliation. Pure, no I/O.

A claim is one attempt at one message: the row's `attempts` when it was claimed, with its lease. When the lease ran
out before the outcome was recorded (a worker died mid-send), or the request ended without an answer (`unknown`),
the sweeper reads Twilio's whole list of messages to that number (`TwilioGateway.messages_to`: every page, no
DateSent filter, so messages still queued at Twilio are in it) and keeps, for each claim, a listed message that

1. was created during the claim: `claimed_until - lease - slack <= date_created <= claimed_until + slack`.
   Every request of a claim starts after the claim and has ended before its lease runs out (the worker's send
   deadline), and Twilio stamps `date_created` when it accepts the request, queued or not. The slack covers the
   difference between Twilio's clock and PostgreSQL's and `date_created`'s whole seconds;
2. went out through our Messaging Service (`messaging_service_sid`), outbound;
3. has a SID that no message row and no archived attempt (`message_attempts`) owns, and that no other claim took
   in the same pass: an earlier attempt's message, or another broadcast's to the same number, is never taken for
   this one;
4. has the same letters and digits in its body as ours, once Smart Encoding is applied to both. Twilio stores the
   body it sent, and Smart Encoding (asked per message with `SmartEncoded`, or switched on for the whole Messaging
   Service in Twilio's console, where we cannot see it) rewrites punctuation, spaces and look-alike letters with a
   table larger than ours. Exact equality would miss a message Twilio holds under a rewritten body and send it
   again; letters and digits still tell one broadcast's text from another's.

Several candidates: the one created first. docs/sending.md states the rule and why a resend cannot double-send.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.broadcasts.smart_encoding import smart_encode
from shared.twilio.gateway import TwilioMessage

# Twilio's clock against PostgreSQL's, plus date_created's truncation to the second.
CLOCK_SLACK = timedelta(minutes=2)


@dataclass(frozen=True, slots=True)
class LostClaim:
    """One attempt whose outcome we never recorded: which message, to whom, with what text, and when."""

    message_id: int
    to_number: str
    body: str  # as sent: a template rendered for this recipient
    claimed_until: datetime
    lease: timedelta

    @property
    def claimed_at(self) -> datetime:
        return self.claimed_until - self.lease


def comparable_body(text: str | None) -> str:
    """The letters and digits of a body after Smart Encoding: what Twilio's rewriting leaves alone.

    NFKC folds the compatibility forms (fullwidth letters, fractions) on both sides: whether Twilio's map or ours
    rewrites them, the two bodies then compare equal, and a missed match would cost a second SMS."""
    encoded = unicodedata.normalize("NFKC", smart_encode(text or ""))
    return "".join(character for character in encoded if character.isalnum())


def could_be_the_claims(
    claim: LostClaim, message: TwilioMessage, messaging_service_sid: str, slack: timedelta = CLOCK_SLACK
) -> bool:
    """Rules 1, 2 and 4 for one listed message (rule 3 needs the other claims: `match_lost_claims`).

    A field Twilio left empty never rules a message out: a missed match costs a second SMS."""
    created = message.date_created
    if created is not None and not claim.claimed_at - slack <= created <= claim.claimed_until + slack:
        return False
    if message.messaging_service_sid is not None and message.messaging_service_sid != messaging_service_sid:
        return False
    if message.direction is not None and not message.direction.startswith("outbound"):
        return False
    return comparable_body(message.body) == comparable_body(claim.body)


def candidate_sids(listed: Mapping[int, Iterable[TwilioMessage]]) -> set[str]:
    """Every SID the lookups returned: the caller asks the database which of them are already owned."""
    return {message.sid for messages in listed.values() for message in messages}


def match_lost_claims(
    claims: Sequence[LostClaim],
    listed: Mapping[int, Sequence[TwilioMessage]],
    owned_sids: set[str],
    messaging_service_sid: str,
    slack: timedelta = CLOCK_SLACK,
) -> dict[int, TwilioMessage]:
    """message id -> the listed message that is its claim's, for the claims Twilio has; each SID at most once and
    never one in `owned_sids` (recorded on a message row or an archived attempt)."""
    taken = set(owned_sids)
    matched: dict[int, TwilioMessage] = {}
    for claim in sorted(claims, key=lambda claim: (claim.claimed_until, claim.message_id)):
        candidates = [
            message
            for message in listed.get(claim.message_id, ())
            if message.sid not in taken and could_be_the_claims(claim, message, messaging_service_sid, slack)
        ]
        if not candidates:
            continue
        chosen = min(candidates, key=lambda message: (message.date_created or claim.claimed_at, message.sid))
        taken.add(chosen.sid)
        matched[claim.message_id] = chosen
    return matched
