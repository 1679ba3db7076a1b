"""What Twilio's error codes mean for a bulk send, and what the sender should do about each one.

Shown by the dashboard next to a broadcast's failures. Pure data: no I/O. The wording is ours; Twilio's full list is
at https://www.twilio.com/docs/api/errors. Codes below 30000 come back when Twilio refuses the request itself
(the message is `failed` at once); 3xxxx codes arrive later in a status callback, from the carrier's verdict
(`undelivered` or `failed`).
"""

from __future__ import annotations

from dataclasses import dataclass

TWILIO_ERROR_REFERENCE_URL = "https://www.twilio.com/docs/api/errors/{code}"


@dataclass(frozen=True, slots=True)
class TwilioErrorCode:
    code: int
    title: str
    meaning: str
    action: str
    # bulksms itself sends again (DELIVERY_RETRY_ERROR_CODES defaults to 30003 and 30008; 20429 is retried at once).
    transient: bool = False

    @property
    def reference_url(self) -> str:
        return TWILIO_ERROR_REFERENCE_URL.format(code=self.code)


_CODES = (
    TwilioErrorCode(
        20003,
        "Authentication failed",
        "Twilio did not accept the account SID and auth token the workers sent with.",
        "Check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (a rotated token must be updated everywhere), then send "
        "the failed numbers again.",
    ),
    TwilioErrorCode(
        20429,
        "Too many requests",
        "More requests were in flight than the account allows at once.",
        "Nothing to do per message: bulksms waits and tries again. If it persists, lower TWILIO_MAX_CONCURRENCY "
        "to the account's limit.",
        transient=True,
    ),
    TwilioErrorCode(
        21211,
        "Invalid 'To' number",
        "The recipient number is not a valid phone number, even though it has the E.164 shape.",
        "Correct or remove the number in your list; sending it again will fail the same way.",
    ),
    TwilioErrorCode(
        21408,
        "Region not enabled",
        "The account is not allowed to send to the recipient's country or region.",
        "Enable the region in the Twilio console's geographic permissions if you mean to reach it, or drop "
        "those numbers.",
    ),
    TwilioErrorCode(
        21610,
        "Recipient unsubscribed",
        "The recipient replied STOP (or similar) to this sender and has opted out.",
        "Do not send to this number again: bulksms adds it to the opt-out list. They can opt back in by "
        "replying START.",
    ),
    TwilioErrorCode(
        21612,
        "Route not possible",
        "Twilio cannot send from the chosen sender to this number (for example a sender that cannot reach "
        "that country, or a number type it cannot message).",
        "Check the Messaging Service's sender pool covers the destination; otherwise drop the number.",
    ),
    TwilioErrorCode(
        21614,
        "Not a mobile number",
        "The 'To' number cannot receive SMS, typically a landline.",
        "Remove the number from the list, or reach that person another way.",
    ),
    TwilioErrorCode(
        21617,
        "Message too long",
        "The body exceeds the length Twilio accepts once concatenated (1,600 characters).",
        "Shorten the message (or the template values that made it grow) and send again.",
    ),
    TwilioErrorCode(
        30001,
        "Queue overflow",
        "Too many messages waited in the sender's queue at Twilio and this one was dropped.",
        "Send again later at a lower rate, or add senders to the Messaging Service to raise throughput.",
    ),
    TwilioErrorCode(
        30003,
        "Unreachable destination",
        "The handset or its carrier could not be reached (phone off, out of coverage, carrier trouble).",
        "Usually temporary: bulksms retries it after a delay. If many numbers of one carrier fail, check that "
        "carrier's status.",
        transient=True,
    ),
    TwilioErrorCode(
        30004,
        "Message blocked",
        "Delivery was blocked: the recipient blocked the sender, or the carrier blocked the message.",
        "Do not retry. Review the content and sender registration; consider removing the number.",
    ),
    TwilioErrorCode(
        30005,
        "Unknown destination",
        "The number does not exist or is no longer in service.",
        "Remove the number from the list; it will not succeed later.",
    ),
    TwilioErrorCode(
        30006,
        "Landline or unreachable carrier",
        "The number is a landline or belongs to a carrier that does not take SMS.",
        "Remove the number, or reach that person by voice or another channel.",
    ),
    TwilioErrorCode(
        30007,
        "Carrier violation (filtered)",
        "The carrier filtered the message as spam or as breaking its messaging rules.",
        "Do not resend as is. Review the wording, links and sender registration against carrier guidelines "
        "(CTIA in the US).",
    ),
    TwilioErrorCode(
        30008,
        "Unknown error",
        "The carrier gave no specific reason for the failure.",
        "bulksms retries it a few times; if it keeps happening for many numbers, contact Twilio support.",
        transient=True,
    ),
    TwilioErrorCode(
        30034,
        "Unregistered US A2P 10DLC number",
        "The message came from a US long code that is not registered for A2P 10DLC.",
        "Register the brand and campaign (or use a registered sender) before sending to US numbers.",
    ),
)

ERROR_CODES: dict[int, TwilioErrorCode] = {entry.code: entry for entry in _CODES}


def describe_error_code(code: int | None) -> TwilioErrorCode | None:
    """The table entry for `code`, or None for codes we have no advice on (and for no code at all)."""
    return ERROR_CODES.get(code) if code is not None else None
