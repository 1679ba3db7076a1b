"""Twilio's error codes: what each one means, what to do about it, and what bulksms does when it comes back.

The one place the policy for an error code lives. For each code the table says what happens when it is the answer
to the send request (`SendErrorBehaviour`: the gateway turns it into its outcome) and when it arrives in a status
callback (`CallbackErrorBehaviour`: the receipts path and the `DELIVERY_RETRY_ERROR_CODES` default read it). The
dashboard shows each code's meaning and action, and README.md's troubleshooting table is generated from it
(`bulksms error-codes`). Pure data: no I/O. The wording is ours; Twilio's full list is at
https://www.twilio.com/docs/api/errors. Codes below 30000 come back when Twilio refuses the request itself;
3xxxx codes arrive later in a status callback, from the carrier's verdict (`undelivered` or `failed`).

A new behaviour is a new enum member with its `summary`: mypy then points at every `match` that must handle it
(the gateway's outcomes), and the README table picks the summary up.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

TWILIO_ERROR_REFERENCE_URL = "https://www.twilio.com/docs/api/errors/{code}"


class SendErrorBehaviour(StrEnum):
    """What bulksms does when Twilio answers the send request with an error."""

    RETRY_WITH_BACKOFF = "retry_with_backoff"  # Twilio never processed the request: safe to send again
    AMBIGUOUS = "ambiguous"  # Twilio may or may not have the message: reconcile, never resend blindly
    PERMANENT = "permanent"  # Twilio refused this message and would again
    OPT_OUT = "opt_out"  # permanent, and the recipient opted out: remember the number

    @property
    def summary(self) -> str:
        """One line for the README's "What bulksms does" column."""
        return _SEND_BEHAVIOUR_SUMMARIES[self]


class CallbackErrorBehaviour(StrEnum):
    """What bulksms does when a status callback reports `undelivered` / `failed` with this code."""

    FINAL = "final"  # the message stays undelivered / failed
    DELIVERY_RETRY = "delivery_retry"  # a new attempt later, up to DELIVERY_RETRY_MAX_ATTEMPTS
    OPT_OUT = "opt_out"  # the recipient opted out: remember the number
    # Rate and cap answers: Twilio never transmitted the message, so it is sent again, and the attempt does not
    # count against DELIVERY_RETRY_MAX_ATTEMPTS.
    SLOW_DOWN = "slow_down"  # the pace drops for a while; a new attempt shortly
    RETRY_WHEN_DRAINED = "retry_when_drained"  # queue overflow: a new attempt once the queue at Twilio drained
    HOLD_ALL = "hold_all"  # a daily cap: every sending broadcast is held until it resets, then resumes

    @property
    def summary(self) -> str:
        """One line for the README's "What bulksms does" column."""
        return _CALLBACK_BEHAVIOUR_SUMMARIES[self]


_SEND_BEHAVIOUR_SUMMARIES = {
    SendErrorBehaviour.RETRY_WITH_BACKOFF: "sent again after a random backoff (`SEND_RETRY_*`), then back to "
    "`pending` if it persists; never counted as a failure",
    SendErrorBehaviour.AMBIGUOUS: "`unknown`, then checked against Twilio's message list (never resent blindly)",
    SendErrorBehaviour.PERMANENT: "`failed`, not retried",
    SendErrorBehaviour.OPT_OUT: "`failed`, number added to the opt-out list",
}
_CALLBACK_BEHAVIOUR_SUMMARIES = {
    CallbackErrorBehaviour.FINAL: "final (`undelivered` / `failed`)",
    CallbackErrorBehaviour.DELIVERY_RETRY: "a new attempt after about 1, 4 and 16 min, then final "
    "(`DELIVERY_RETRY_*`: these codes are the default of `DELIVERY_RETRY_ERROR_CODES`)",
    CallbackErrorBehaviour.OPT_OUT: "final, number added to the opt-out list",
    CallbackErrorBehaviour.SLOW_DOWN: "the pace drops to half for a minute; sent again shortly, not counted as "
    "a delivery attempt",
    CallbackErrorBehaviour.RETRY_WHEN_DRAINED: "sent again once Twilio's queue has drained "
    "(`TWILIO_QUEUE_MAX_SECONDS`), not counted as a delivery attempt",
    CallbackErrorBehaviour.HOLD_ALL: "every sending broadcast is `held` until the cap resets, then resumes by "
    "itself; the message is sent again then, not counted as a delivery attempt",
}


@dataclass(frozen=True, slots=True)
class TwilioErrorCode:
    code: int
    title: str
    meaning: str
    action: str
    # None: the code does not come back from that step; the defaults of `send_error_behaviour` and of the
    # delivery-retry setting apply if it ever does.
    on_send: SendErrorBehaviour | None = None
    on_callback: CallbackErrorBehaviour | None = None
    # A surge of this code among a broadcast's recent outcomes trips its circuit breaker (shared.sending.breaker).
    trips_breaker: bool = False

    @property
    def reference_url(self) -> str:
        return TWILIO_ERROR_REFERENCE_URL.format(code=self.code)


_CODES = (
    TwilioErrorCode(
        20003,
        "Authentication failed",
        "Twilio did not accept the account SID and auth token the workers sent with.",
        "Check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN with `bulksms doctor` (a rotated token must be updated "
        "everywhere), then send the failed numbers again.",
        on_send=SendErrorBehaviour.PERMANENT,
    ),
    TwilioErrorCode(
        20429,
        "Too many requests",
        "More requests were in flight than the account allows at once.",
        "Nothing to do per message: bulksms waits and tries again. If it persists, lower TWILIO_MAX_CONCURRENCY "
        "to the account's limit.",
        on_send=SendErrorBehaviour.RETRY_WITH_BACKOFF,
    ),
    TwilioErrorCode(
        21211,
        "Invalid 'To' number",
        "The recipient number is not a valid phone number, even though it has a possible length for its country.",
        "Correct or remove the number in your list; sending it again will fail the same way. (Numbers of an "
        "impossible length are already refused at intake; with `strict_numbers: true`, so are numbers in no "
        "assigned range.)",
        on_send=SendErrorBehaviour.PERMANENT,
    ),
    TwilioErrorCode(
        21408,
        "Region not enabled",
        "The account is not allowed to send to the recipient's country or region.",
        "Enable the region in the Twilio console's geographic permissions if you mean to reach it, or drop "
        "those numbers. Set `ALLOWED_COUNTRIES` to the same countries and intake refuses the others up front.",
        on_send=SendErrorBehaviour.PERMANENT,
    ),
    TwilioErrorCode(
        21610,
        "Recipient unsubscribed",
        "The recipient replied STOP (or similar) to this sender and has opted out.",
        "Do not send to this number again: bulksms adds it to the opt-out list and skips it from now on. They "
        "can opt back in by replying START.",
        on_send=SendErrorBehaviour.OPT_OUT,
        on_callback=CallbackErrorBehaviour.OPT_OUT,
        trips_breaker=True,
    ),
    TwilioErrorCode(
        21612,
        "Route not possible",
        "Twilio cannot send from the chosen sender to this number (for example a sender that cannot reach "
        "that country, or a number type it cannot message).",
        "Check the Messaging Service's sender pool covers the destination; otherwise drop the number.",
        on_send=SendErrorBehaviour.PERMANENT,
    ),
    TwilioErrorCode(
        21614,
        "Not a mobile number",
        "The 'To' number cannot receive SMS, typically a landline.",
        "Remove the number from the list, or reach that person another way.",
        on_send=SendErrorBehaviour.PERMANENT,
    ),
    TwilioErrorCode(
        21617,
        "Message too long",
        "The body exceeds the length Twilio accepts once concatenated (1,600 characters).",
        "Shorten the message (or the template values that made it grow) and send again. The API already "
        "refuses messages over 1,600 characters at intake (422).",
        on_send=SendErrorBehaviour.PERMANENT,
    ),
    TwilioErrorCode(
        30001,
        "Queue overflow",
        "Too many messages waited in the sender's queue at Twilio and this one was dropped.",
        "Nothing to do per message: bulksms sends it again once the queue drained. Pacing keeps the queue short; "
        "if it still overflows, lower TWILIO_SEGMENTS_PER_SECOND or TWILIO_QUEUE_MAX_SECONDS.",
        on_callback=CallbackErrorBehaviour.RETRY_WHEN_DRAINED,
    ),
    TwilioErrorCode(
        30003,
        "Unreachable destination",
        "The handset or its carrier could not be reached (phone off, out of coverage, carrier trouble).",
        "Usually temporary: bulksms retries it after a delay. If many numbers of one carrier fail, check that "
        "carrier's status.",
        on_callback=CallbackErrorBehaviour.DELIVERY_RETRY,
    ),
    TwilioErrorCode(
        30004,
        "Message blocked",
        "Delivery was blocked: the recipient blocked the sender, or the carrier blocked the message.",
        "Do not retry. Review the content and sender registration; consider removing the number.",
        on_callback=CallbackErrorBehaviour.FINAL,
    ),
    TwilioErrorCode(
        30005,
        "Unknown destination",
        "The number does not exist or is no longer in service.",
        "Remove the number from the list; it will not succeed later.",
        on_callback=CallbackErrorBehaviour.FINAL,
    ),
    TwilioErrorCode(
        30006,
        "Landline or unreachable carrier",
        "The number is a landline or belongs to a carrier that does not take SMS.",
        "Remove the number, or reach that person by voice or another channel.",
        on_callback=CallbackErrorBehaviour.FINAL,
    ),
    TwilioErrorCode(
        30007,
        "Carrier violation (filtered)",
        "The carrier filtered the message as spam or as breaking its messaging rules.",
        "Do not resend as is. Review the wording, links (avoid URL shorteners) and sender registration "
        "(A2P 10DLC in the US) against carrier guidelines (CTIA in the US). A surge trips the circuit breaker.",
        on_callback=CallbackErrorBehaviour.FINAL,
        trips_breaker=True,
    ),
    TwilioErrorCode(
        30008,
        "Unknown error",
        "The carrier gave no specific reason for the failure.",
        "bulksms retries it a few times; if it keeps happening for many numbers, contact Twilio support with "
        "the message SIDs.",
        on_callback=CallbackErrorBehaviour.DELIVERY_RETRY,
    ),
    TwilioErrorCode(
        30036,
        "Validity period expired",
        "The message waited in the sender's queue at Twilio longer than its ValidityPeriod (set from the "
        "broadcast's `validity_period`, or the time left before its `deadline`) and was never sent.",
        "Nothing to retry: the deadline or validity period has passed. Add senders, or send earlier, so the "
        "queue drains in time.",
        on_callback=CallbackErrorBehaviour.FINAL,
    ),
    TwilioErrorCode(
        30034,
        "Unregistered US A2P 10DLC number",
        "The message came from a US long code that is not registered for A2P 10DLC.",
        "Register the brand and campaign (or use a registered sender) before sending to US numbers. A surge "
        "trips the circuit breaker.",
        on_callback=CallbackErrorBehaviour.FINAL,
        trips_breaker=True,
    ),
    TwilioErrorCode(
        30022,
        "US A2P 10DLC rate limit exceeded",
        "More was sent than the campaign's throughput allows.",
        "Nothing to do per message: bulksms halves its pace for a minute and sends it again. If it keeps "
        "happening, set TWILIO_SEGMENTS_PER_SECOND to the campaign's throughput.",
        on_callback=CallbackErrorBehaviour.SLOW_DOWN,
    ),
    TwilioErrorCode(
        30023,
        "US A2P 10DLC daily message cap reached",
        "The brand's daily cap (T-Mobile's count for low-volume brands) is used up; it resets at midnight "
        "Pacific time.",
        "Nothing to do: every sending broadcast is held until the reset and resumes by itself. For more, raise "
        "the brand's trust score or vetting.",
        on_callback=CallbackErrorBehaviour.HOLD_ALL,
    ),
    TwilioErrorCode(
        30027,
        "T-Mobile daily message limit reached",
        "T-Mobile's daily limit for the brand is used up; it resets at midnight Pacific time.",
        "Nothing to do: every sending broadcast is held until the reset and resumes by itself.",
        on_callback=CallbackErrorBehaviour.HOLD_ALL,
    ),
    TwilioErrorCode(
        63017,
        "Account above its messages-per-second limit",
        "The account and its subaccounts sent more than Twilio allows per second (2,000).",
        "Nothing to do per message: bulksms halves its pace for a minute and sends it again. Lower "
        "TWILIO_SEGMENTS_PER_SECOND if it keeps happening.",
        on_callback=CallbackErrorBehaviour.SLOW_DOWN,
    ),
    TwilioErrorCode(
        63038,
        "Account daily message limit reached",
        "The account's daily message limit (a rolling 24 hours) is used up.",
        "Nothing to do: every sending broadcast is held for 24 hours and resumes by itself; ask Twilio to raise "
        "the limit if that is too long.",
        on_callback=CallbackErrorBehaviour.HOLD_ALL,
    ),
)

ERROR_CODES: dict[int, TwilioErrorCode] = {entry.code: entry for entry in _CODES}


def describe_error_code(code: int | None) -> TwilioErrorCode | None:
    """The table entry for `code`, or None for codes we have no advice on (and for no code at all)."""
    return ERROR_CODES.get(code) if code is not None else None


def send_error_behaviour(code: int | None, http_status: int) -> SendErrorBehaviour:
    """What bulksms does with an error answer to a send request: HTTP `http_status` carrying Twilio's `code`.

    The HTTP status says whether Twilio processed the request (429: never; 5xx: maybe), whatever code comes with
    it; only a code listed as "never processed" outranks it. A 4xx refusal follows the code's row, else permanent.
    """
    entry = describe_error_code(code)
    listed = entry.on_send if entry is not None else None
    if listed is SendErrorBehaviour.RETRY_WITH_BACKOFF or http_status == 429:
        return SendErrorBehaviour.RETRY_WITH_BACKOFF
    if http_status >= 500:
        return SendErrorBehaviour.AMBIGUOUS
    return listed or SendErrorBehaviour.PERMANENT


def codes_at_send(behaviour: SendErrorBehaviour) -> tuple[int, ...]:
    """The listed codes whose answer to a send request gets `behaviour`, in table order."""
    return tuple(entry.code for entry in _CODES if entry.on_send is behaviour)


def codes_in_callbacks(behaviour: CallbackErrorBehaviour) -> tuple[int, ...]:
    """The listed codes a status callback handles with `behaviour`, in table order."""
    return tuple(entry.code for entry in _CODES if entry.on_callback is behaviour)


# Twilio refuses a number whose owner replied STOP with 21610, at send or later in a callback: bulksms remembers it.
SEND_OPT_OUT_CODES = frozenset(codes_at_send(SendErrorBehaviour.OPT_OUT))
CALLBACK_OPT_OUT_CODES = frozenset(codes_in_callbacks(CallbackErrorBehaviour.OPT_OUT))
# Rate and cap answers in a callback: the message gets a new attempt that does not count as a delivery attempt.
UNCOUNTED_RETRY_BEHAVIOURS = frozenset(
    {CallbackErrorBehaviour.SLOW_DOWN, CallbackErrorBehaviour.RETRY_WHEN_DRAINED, CallbackErrorBehaviour.HOLD_ALL}
)
UNCOUNTED_RETRY_CODES = frozenset(entry.code for entry in _CODES if entry.on_callback in UNCOUNTED_RETRY_BEHAVIOURS)
SLOW_DOWN_CODES = frozenset(codes_in_callbacks(CallbackErrorBehaviour.SLOW_DOWN))
HOLD_ALL_CODES = frozenset(codes_in_callbacks(CallbackErrorBehaviour.HOLD_ALL))
# Of those, the caps that reset at midnight Pacific time (the others are a rolling 24 hours: 63038).
CALENDAR_DAY_CAP_CODES = frozenset({30023, 30027})
BREAKER_CODES = frozenset(entry.code for entry in _CODES if entry.trips_breaker)
# The default of the DELIVERY_RETRY_ERROR_CODES setting, which replaces it when set.
DEFAULT_DELIVERY_RETRY_CODES = codes_in_callbacks(CallbackErrorBehaviour.DELIVERY_RETRY)
