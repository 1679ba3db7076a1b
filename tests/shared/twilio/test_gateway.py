"""What each Twilio answer means for us: error answers through the error-code table (pure), then over real HTTP
to the simulator (magic numbers and fault settings)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from twilio.base.exceptions import TwilioRestException

from bulksms_tools.local_services import ManagedProcess, find_free_port, wait_for_port
from shared.platform.settings import Settings
from shared.twilio.error_codes import ERROR_CODES, SendErrorBehaviour, TwilioErrorCode
from shared.twilio.gateway import (
    RATE_LIMITED_REASON,
    Accepted,
    Ambiguous,
    Permanent,
    Retryable,
    SendOutcome,
    TwilioGateway,
    TwilioLookupError,
    outcome_of_error_response,
)
from tests.conftest import REPOSITORY_ROOT, TEST_ACCOUNT_SID, TEST_AUTH_TOKEN

T = TypeVar("T")


# --- pure: Twilio's error answers mapped through the error-code table ---------------------------------------

MESSAGES_URL = "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json"
OUTCOME_OF_BEHAVIOUR: dict[SendErrorBehaviour, type[SendOutcome]] = {
    SendErrorBehaviour.RETRY_WITH_BACKOFF: Retryable,
    SendErrorBehaviour.AMBIGUOUS: Ambiguous,
    SendErrorBehaviour.PERMANENT: Permanent,
    SendErrorBehaviour.OPT_OUT: Permanent,  # the chunk's recorder opts the number out by its code
}


def error_response(http_status: int, code: int | None, message: str = "") -> TwilioRestException:
    return TwilioRestException(http_status, MESSAGES_URL, message, code)


def test_every_send_behaviour_has_an_outcome() -> None:
    assert set(OUTCOME_OF_BEHAVIOUR) == set(SendErrorBehaviour)


@pytest.mark.parametrize(
    "entry", [entry for entry in ERROR_CODES.values() if entry.on_send is not None], ids=lambda entry: str(entry.code)
)
def test_a_listed_code_in_a_4xx_answer_gets_the_outcome_of_its_row(entry: TwilioErrorCode) -> None:
    # 400 for every row, 20429 included: the row decides, not the HTTP status.
    outcome = outcome_of_error_response(error_response(400, entry.code, "refused"))

    assert type(outcome) is OUTCOME_OF_BEHAVIOUR[entry.on_send]
    if isinstance(outcome, Permanent):
        assert (outcome.code, outcome.message) == (entry.code, "refused")
    if isinstance(outcome, Retryable):
        assert outcome.reason.startswith(RATE_LIMITED_REASON)  # counted as rate limiting by the metrics


@pytest.mark.parametrize(
    ("http_status", "code", "expected"),
    [
        (429, None, Retryable("too many requests (429)")),
        (429, 20429, Retryable("too many requests (20429)")),
        (500, None, Ambiguous("Twilio answered HTTP 500")),
        (503, 21211, Ambiguous("Twilio answered HTTP 503")),  # a 5xx may have been processed, whatever its code
        (400, 21602, Permanent(21602, "refused")),  # not in the table: any other 4xx is permanent
        (404, None, Permanent(404, "refused")),
    ],
)
def test_the_http_status_decides_for_unlisted_codes_and_for_429_and_5xx(
    http_status: int, code: int | None, expected: SendOutcome
) -> None:
    assert outcome_of_error_response(error_response(http_status, code, "refused")) == expected


def test_a_permanent_answer_without_a_message_names_its_http_status() -> None:
    assert outcome_of_error_response(error_response(401, 20003)) == Permanent(20003, "HTTP 401")


# --- over HTTP to the simulator ---------------------------------------------------------------------------------


def with_gateway(settings: Settings, use: Callable[[TwilioGateway], Awaitable[T]]) -> T:
    async def main() -> T:
        gateway = await TwilioGateway.open(settings)
        try:
            return await use(gateway)
        finally:
            await gateway.close()

    return asyncio.run(main())


def send(settings: Settings, to: str, body: str = "hello") -> Any:
    return with_gateway(settings, lambda gateway: gateway.send(to, body, "http://127.0.0.1:9/cb?message_id=1"))


def test_an_accepted_message_has_twilios_sid_and_status(settings: Settings, simulator: Any) -> None:
    outcome = send(settings, "+15551230001")

    assert isinstance(outcome, Accepted)
    assert outcome.sid.startswith("SM") and len(outcome.sid) == 34
    assert outcome.status == "accepted"  # sent through a Messaging Service
    assert simulator.summary()["accepted"] == 1


@pytest.mark.parametrize(
    ("to", "code"),
    [("+15015550001", 21211), ("+15015550004", 21610), ("+15015550009", 21614)],
)
def test_refused_numbers_are_permanent_failures_with_twilios_code(
    settings: Settings, simulator: Any, to: str, code: int
) -> None:
    outcome = send(settings, to)

    assert isinstance(outcome, Permanent)
    assert outcome.code == code
    assert outcome.message


def test_wrong_credentials_are_a_permanent_failure(settings: Settings, simulator: Any) -> None:
    outcome = send(settings.replace(twilio_auth_token="not-the-token"), "+15551230002")

    assert isinstance(outcome, Permanent) and outcome.code == 20003


def test_too_many_requests_is_retryable(settings: Settings, simulator: Any) -> None:
    simulator.configure(error_rate_429=1.0)

    outcome = send(settings, "+15551230003")

    assert isinstance(outcome, Retryable)
    assert simulator.summary()["accepted"] == 0


def test_a_500_is_ambiguous_never_retryable(settings: Settings, simulator: Any) -> None:
    simulator.configure(error_rate_500=1.0)

    outcome = send(settings, "+15551230004")

    assert isinstance(outcome, Ambiguous)
    assert "500" in outcome.reason


def test_no_answer_within_the_timeout_is_ambiguous_and_the_timeout_holds(settings: Settings, simulator: Any) -> None:
    simulator.configure(slow_ms=1500)
    started = time.monotonic()
    outcome = send(settings.replace(twilio_request_timeout_seconds=0.5), "+15015550020")  # answers after slow_ms
    elapsed = time.monotonic() - started
    time.sleep(max(0.0, 2.0 - elapsed))  # let the simulator finish it, so it does not count in the next test

    assert isinstance(outcome, Ambiguous)
    assert "timeout" in outcome.reason
    assert elapsed < 1.2


def test_connection_refused_is_retryable(settings: Settings) -> None:
    closed = f"http://127.0.0.1:{find_free_port()}"

    outcome = send(settings.replace(twilio_api_base_url=closed), "+15551230005")

    assert isinstance(outcome, Retryable)
    assert "connection" in outcome.reason


def test_messages_to_lists_every_message_to_a_number_queued_ones_included_page_by_page(
    settings: Settings, simulator: Any
) -> None:
    simulator.configure_pool(senders=[{"type": "long_code", "count": 1, "segments_per_second": 0.1}])

    async def use(gateway: TwilioGateway) -> tuple[list[SendOutcome], Any, Any]:
        sent = [await gateway.send("+15551230006", f"reconcile me {n}") for n in range(5)]
        listed = await gateway.messages_to("+15551230006", page_size=2)  # three pages
        other_number = await gateway.messages_to("+15551230007")
        return sent, listed, other_number

    sent, listed, other_number = with_gateway(settings, use)

    assert all(isinstance(outcome, Accepted) for outcome in sent)
    assert [message.sid for message in listed] == [outcome.sid for outcome in reversed(sent)]  # type: ignore[union-attr]
    assert [message.body for message in listed] == [f"reconcile me {n}" for n in reversed(range(5))]
    # The first left its sender at once; the others wait in its queue at Twilio, without a date_sent.
    assert listed[-1].date_sent is not None and all(message.date_sent is None for message in listed[:-1])
    assert {message.messaging_service_sid for message in listed} == {settings.twilio_messaging_service_sid}
    assert {message.direction for message in listed} == {"outbound-api"}
    assert other_number == []


def test_messages_to_refuses_to_answer_with_an_incomplete_list(settings: Settings, simulator: Any) -> None:
    async def use(gateway: TwilioGateway) -> Any:
        for n in range(3):
            await gateway.send("+15551230009", f"message {n}")
        return await gateway.messages_to("+15551230009", page_size=1, max_pages=2)

    with pytest.raises(TwilioLookupError, match="more than 2 pages"):
        with_gateway(settings, use)


def test_messages_to_raises_when_twilio_cannot_answer(settings: Settings) -> None:
    closed = f"http://127.0.0.1:{find_free_port()}"

    with pytest.raises(TwilioLookupError):
        with_gateway(
            settings.replace(twilio_api_base_url=closed),
            lambda gateway: gateway.messages_to("+15551230008"),
        )


# --- sending with an API Key instead of the Auth Token ------------------------------------------------------------

API_KEY_SID = "SK" + "c3" * 16
API_KEY_SECRET = "api-key-secret-0123456789"


@pytest.fixture(scope="module")
def simulator_with_an_api_key(artifacts_directory: Path) -> Iterator[str]:
    """A simulator that, like Twilio, also takes one of the account's API Keys in basic auth."""
    port = find_free_port()
    process = ManagedProcess(
        "simulator-api-key",
        [
            sys.executable, "-m", "bulksms_tools.simulator", "--port", str(port),
            "--account-sid", TEST_ACCOUNT_SID, "--auth-token", TEST_AUTH_TOKEN,
            "--api-key-sid", API_KEY_SID, "--api-key-secret", API_KEY_SECRET,
            "--latency-ms", "0", "--no-callbacks",
        ],
        environment=dict(os.environ),
        log_path=artifacts_directory / "simulator-api-key.log",
        working_directory=REPOSITORY_ROOT,
    ).start()  # fmt: skip
    wait_for_port(port)
    yield f"http://127.0.0.1:{port}"
    process.stop()


def test_with_an_api_key_the_auth_token_is_not_needed_to_send(
    settings: Settings, simulator_with_an_api_key: str
) -> None:
    with_key = settings.replace(
        twilio_api_base_url=simulator_with_an_api_key,
        twilio_auth_token=None,
        twilio_api_key_sid=API_KEY_SID,
        twilio_api_key_secret=API_KEY_SECRET,
    )
    outcome = send(with_key, "+15551230004")
    assert isinstance(outcome, Accepted) and outcome.sid.startswith("SM")
    # The key wins over the Auth Token when both are set, and a wrong secret is refused like a wrong token.
    assert isinstance(send(with_key.replace(twilio_auth_token=TEST_AUTH_TOKEN), "+15551230005"), Accepted)
    refused = send(with_key.replace(twilio_api_key_secret="not-the-secret"), "+15551230006")
    assert isinstance(refused, Permanent) and refused.code == 20003
    # Without a key the Account SID and Auth Token still work against the same account.
    assert isinstance(send(settings.replace(twilio_api_base_url=simulator_with_an_api_key), "+15551230007"), Accepted)
