"""The identity rule of reconciliation, table-driven: which listed Twilio message is a lost claim's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.sending.reconciliation import LostClaim, comparable_body, could_be_the_claims, match_lost_claims
from shared.twilio.gateway import TwilioMessage

SERVICE = "MG" + "b2" * 16
OTHER_SERVICE = "MG" + "c3" * 16
CLAIMED_UNTIL = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
LEASE = timedelta(seconds=120)
CLAIM = LostClaim(1, "+15557770001", "Polls close at 8pm \u2014 don\u2019t miss it!", CLAIMED_UNTIL, LEASE)


def listed(
    sid: str = "SM1",
    body: str | None = "Polls close at 8pm \u2014 don\u2019t miss it!",
    created: datetime | None = CLAIMED_UNTIL - timedelta(seconds=60),
    service: str | None = SERVICE,
    direction: str | None = "outbound-api",
    date_sent: datetime | None = None,
) -> TwilioMessage:
    return TwilioMessage(sid, "+15557770001", body, "queued", created, date_sent, service, direction)


@pytest.mark.parametrize(
    ("text", "comparable"),
    [
        ("Don\u2019t \u2014 vote\u2026", "Dontvote"),
        ("Don't - vote...", "Dontvote"),
        ("\uff36\uff4f\uff54\uff45 \u00bd price", "Vote12price"),  # fullwidth letters, a fraction
        ("", ""),
        (None, ""),
        ("H\u00e9llo \u4f60\u597d", "H\u00e9llo\u4f60\u597d"),  # letters stay letters, whatever the script
    ],
)
def test_comparable_body_keeps_the_letters_and_digits_smart_encoding_leaves_alone(
    text: str | None, comparable: str
) -> None:
    assert comparable_body(text) == comparable


@pytest.mark.parametrize(
    ("message", "is_the_claims"),
    [
        (listed(), True),  # queued: no date_sent, still the claim's
        (listed(date_sent=CLAIMED_UNTIL), True),
        (listed(body="Polls close at 8pm - don't miss it!"), True),  # Twilio's Smart Encoding rewrote it
        (listed(body="Polls close at 8pm \u2013 don\u02bct miss it !"), True),  # a table other than ours
        (listed(body="Polls close at 9pm - don't miss it!"), False),  # other words: another broadcast's
        (listed(created=CLAIMED_UNTIL - LEASE - timedelta(minutes=1)), True),  # clocks a minute apart
        (listed(created=CLAIMED_UNTIL - LEASE - timedelta(minutes=3)), False),  # before the claim
        (listed(created=CLAIMED_UNTIL + timedelta(minutes=3)), False),  # after every request of the claim ended
        (listed(created=None), True),  # Twilio left it out: not a reason to send twice
        (listed(service=OTHER_SERVICE), False),
        (listed(service=None), True),
        (listed(direction="inbound"), False),
    ],
)
def test_a_listed_message_is_the_claims_only_inside_its_window_through_our_service_with_our_words(
    message: TwilioMessage, is_the_claims: bool
) -> None:
    assert could_be_the_claims(CLAIM, message, SERVICE) is is_the_claims


def test_a_sid_already_owned_by_a_row_or_an_archived_attempt_is_never_taken() -> None:
    earlier_attempt = listed("SM_first", created=CLAIMED_UNTIL - timedelta(seconds=90))
    this_attempt = listed("SM_second", created=CLAIMED_UNTIL - timedelta(seconds=30))

    assert match_lost_claims([CLAIM], {1: [earlier_attempt, this_attempt]}, {"SM_first"}, SERVICE) == {1: this_attempt}
    assert match_lost_claims([CLAIM], {1: [earlier_attempt]}, {"SM_first"}, SERVICE) == {}


def test_two_claims_never_share_one_message_and_each_takes_the_first_created() -> None:
    other = LostClaim(2, CLAIM.to_number, CLAIM.body, CLAIMED_UNTIL + timedelta(seconds=5), LEASE)
    older = listed("SM_older", created=CLAIMED_UNTIL - timedelta(seconds=50))
    newer = listed("SM_newer", created=CLAIMED_UNTIL - timedelta(seconds=10))

    both = match_lost_claims([other, CLAIM], {1: [newer, older], 2: [newer, older]}, set(), SERVICE)
    only_one = match_lost_claims([other, CLAIM], {1: [older], 2: [older]}, set(), SERVICE)

    assert both == {1: older, 2: newer}
    assert only_one == {1: older}  # the other claim is not at Twilio: it will be sent
