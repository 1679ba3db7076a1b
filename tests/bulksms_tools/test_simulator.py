"""The Twilio simulator over real HTTP: Twilio's shapes and errors, the cap, magic numbers, callbacks."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import pytest
import requests
from openapi_schema_validator import OAS30Validator
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from bulksms_tools.local_services import ManagedProcess, find_free_port, wait_for_port
from bulksms_tools.simulator import server as simulator_server
from bulksms_tools.simulator.magic_numbers import MAGIC_NUMBERS, MagicKind, magic_variant
from tests.conftest import (
    REPOSITORY_ROOT,
    TEST_ACCOUNT_SID,
    TEST_AUTH_TOKEN,
    TEST_MESSAGING_SERVICE_SID,
    SimulatorControl,
    wait_until,
)

SPEC_PATH = REPOSITORY_ROOT / "tests" / "fixtures" / "twilio_messages_openapi.json"
MESSAGES_PATH = "/2010-04-01/Accounts/{AccountSid}/Messages.json"
MESSAGE_PATH = "/2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json"
RFC_2822 = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} \+0000$")


# --- helpers


class SimulatorHttpClient(TwilioHttpClient):
    """twilio-python's own HTTP client, aimed at the simulator instead of api.twilio.com."""

    def __init__(self, base_url: str) -> None:
        super().__init__(timeout=10)
        self.base_url = base_url

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> TwilioResponse:
        return super().request(method, url.replace("https://api.twilio.com", self.base_url, 1), *args, **kwargs)


def twilio_client(simulator_url: str, auth_token: str = TEST_AUTH_TOKEN) -> Client:
    return Client(TEST_ACCOUNT_SID, auth_token, http_client=SimulatorHttpClient(simulator_url))


def messages_url(simulator_url: str) -> str:
    return f"{simulator_url}/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Messages.json"


def send(simulator_url: str, timeout: float = 10, **form: Any) -> requests.Response:
    form.setdefault("MessagingServiceSid", TEST_MESSAGING_SERVICE_SID)
    form.setdefault("Body", "Hello from the simulator tests")
    form = {name: value for name, value in form.items() if value is not None}
    return requests.post(
        messages_url(simulator_url), data=form, auth=(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN), timeout=timeout
    )


def fetch(simulator_url: str, sid: str) -> requests.Response:
    url = f"{simulator_url}/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Messages/{sid}.json"
    return requests.get(url, auth=(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN), timeout=10)


def list_messages(simulator_url: str, **query: Any) -> requests.Response:
    return requests.get(messages_url(simulator_url), params=query, auth=(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN), timeout=10)


def listed_sids(simulator_url: str, to: str) -> list[str]:
    response = list_messages(simulator_url, To=to)
    assert response.status_code == 200
    return [message["sid"] for message in response.json()["messages"]]


def assert_twilio_error(response: requests.Response, status: int, code: int) -> None:
    assert response.status_code == status
    assert response.json() == {
        "code": code,
        "message": response.json()["message"],
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    assert response.json()["message"]


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    return dict(json.loads(SPEC_PATH.read_text()))


def validate_against(openapi: dict[str, Any], schema: dict[str, Any], document: Any) -> None:
    # The spec's components travel with the schema, so its "#/components/schemas/..." references resolve.
    OAS30Validator({**schema, "components": openapi["components"]}).validate(document)


def response_schema(openapi: dict[str, Any], path: str, method: str, status: str) -> dict[str, Any]:
    return dict(openapi["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"])


class CallbackReceiver:
    """A tiny webhook: records every POST; `/fail...` always answers 500, `/flaky...` fails each first try."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                parameters = dict(parse_qsl(self.rfile.read(length).decode(), keep_blank_values=True))
                with receiver._lock:
                    key = (parameters.get("MessageSid", ""), parameters.get("MessageStatus", ""))
                    if self.path.startswith("/fail"):
                        status = 500
                    elif self.path.startswith("/flaky") and key not in receiver._seen:
                        status = 503
                    else:
                        status = 204
                    receiver._seen.add(key)
                    receiver.received.append(
                        {
                            "path": self.path,
                            "parameters": parameters,
                            "signature": self.headers.get("X-Twilio-Signature"),
                            "answered": status,
                        }
                    )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def for_message(self, sid: str) -> list[dict[str, Any]]:
        with self._lock:
            return [entry for entry in self.received if entry["parameters"].get("MessageSid") == sid]

    def accepted_statuses(self, sid: str) -> list[str]:
        return [e["parameters"]["MessageStatus"] for e in self.for_message(sid) if e["answered"] == 204]


@pytest.fixture
def callback_receiver() -> Iterator[CallbackReceiver]:
    receiver = CallbackReceiver()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


# --- twilio-python against the simulator


def test_twilio_library_creates_a_message_through_a_messaging_service(
    simulator_url: str, simulator: SimulatorControl
) -> None:
    message = twilio_client(simulator_url).messages.create(
        to="+14155550100", messaging_service_sid=TEST_MESSAGING_SERVICE_SID, body="Hello"
    )

    assert re.fullmatch(r"SM[0-9a-f]{32}", message.sid)
    assert message.status == "accepted"
    assert message.to == "+14155550100"
    assert message.messaging_service_sid == TEST_MESSAGING_SERVICE_SID
    assert message.num_segments == "1"
    assert message.error_code is None
    assert message.date_created is not None  # twilio-python parsed the RFC 2822 date
    assert simulator.summary()["accepted"] == 1


def test_twilio_library_fetches_and_lists_what_was_sent(simulator_url: str, simulator: SimulatorControl) -> None:
    client = twilio_client(simulator_url)
    sent = client.messages.create(to="+14155550101", messaging_service_sid=TEST_MESSAGING_SERVICE_SID, body="x")

    fetched = client.messages(sent.sid).fetch()
    assert fetched.to == "+14155550101"
    # DateSent works by whole days: the day the message was sent, whatever the time of day; not the next day.
    sent_day = fetched.date_sent.replace(hour=23, minute=59, second=0)
    assert [m.sid for m in client.messages.list(to="+14155550101", date_sent_after=sent_day)] == [sent.sid]
    assert client.messages.list(to="+14155550101", date_sent_after=sent_day + timedelta(minutes=1)) == []


@pytest.mark.parametrize(
    ("to", "auth_token", "body", "status", "code"),
    [
        ("4155550100", TEST_AUTH_TOKEN, "Hi", 400, 21211),  # not E.164
        ("+14155550100", "wrong-token", "Hi", 401, 20003),
        ("+14155550100", TEST_AUTH_TOKEN, None, 400, 21602),  # no Body, no MediaUrl
    ],
)
def test_twilio_library_raises_twilio_rest_exception(
    simulator_url: str,
    simulator: SimulatorControl,
    to: str,
    auth_token: str,
    body: str | None,
    status: int,
    code: int,
) -> None:
    client = twilio_client(simulator_url, auth_token)
    options = {"body": body} if body is not None else {}

    with pytest.raises(TwilioRestException) as raised:
        client.messages.create(to=to, messaging_service_sid=TEST_MESSAGING_SERVICE_SID, **options)

    assert type(raised.value) is TwilioRestException
    assert (raised.value.status, raised.value.code) == (status, code)
    assert simulator.summary()["accepted"] == 0


# --- request validation and Twilio's shapes


@pytest.mark.parametrize(
    ("form", "status", "code"),
    [
        ({"To": None}, 400, 21604),
        ({"MessagingServiceSid": None}, 400, 21603),  # neither From nor MessagingServiceSid
        ({"MessagingServiceSid": "MG123"}, 400, 21705),
        ({"Body": "x" * 1601}, 400, 21617),
        ({"Body": None, "MediaUrl": [f"https://example.com/{n}.png" for n in range(11)]}, 400, 21623),
        ({"StatusCallback": "http://bad_host.example.com/status"}, 400, 21609),
        ({"ValidityPeriod": "36001"}, 400, 21624),
    ],
)
def test_invalid_requests_get_twilio_errors_and_store_nothing(
    simulator_url: str, simulator: SimulatorControl, form: dict[str, Any], status: int, code: int
) -> None:
    form.setdefault("To", "+14155550102")

    assert_twilio_error(send(simulator_url, **form), status, code)
    assert simulator.summary()["accepted"] == 0
    assert simulator.summary()["errors_by_code"] == {str(code): 1}


def test_wrong_account_in_path_is_refused(simulator_url: str, simulator: SimulatorControl) -> None:
    other_account = "AC" + "c3" * 16
    response = requests.post(
        f"{simulator_url}/2010-04-01/Accounts/{other_account}/Messages.json",
        data={"To": "+14155550103", "MessagingServiceSid": TEST_MESSAGING_SERVICE_SID, "Body": "Hi"},
        auth=(other_account, TEST_AUTH_TOKEN),
        timeout=10,
    )

    assert_twilio_error(response, 401, 20003)


def test_create_fetch_and_list_answers_match_twilios_openapi(
    simulator_url: str, simulator: SimulatorControl, openapi: dict[str, Any]
) -> None:
    message_schema = openapi["components"]["schemas"]["api.v2010.account.message"]
    created = send(simulator_url, To="+14155550104", Body="Hello \N{THUMBS UP SIGN}")
    with_media = send(simulator_url, To="+14155550105", Body=None, MediaUrl=["https://example.com/a.png"])
    with_from = send(simulator_url, To="+14155550106", From="+15005550006", MessagingServiceSid=None)

    for response in (created, with_media, with_from):
        assert response.status_code == 201
        validate_against(openapi, response_schema(openapi, MESSAGES_PATH, "post", "201"), response.json())
        assert set(response.json()) == set(message_schema["properties"])
        assert RFC_2822.match(response.json()["date_created"])
        assert response.headers["Twilio-Concurrent-Requests"].isdigit()
    assert created.json()["status"] == "accepted"
    assert created.json()["from"] is None
    assert created.json()["num_segments"] == "1"
    assert created.json()["num_media"] == "0"
    assert created.json()["sid"].startswith("SM")
    assert with_media.json()["sid"].startswith("MM")
    assert with_media.json()["num_media"] == "1"
    assert with_from.json()["status"] == "queued"
    assert with_from.json()["from"] == "+15005550006"
    assert created.json()["uri"] == (f"/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Messages/{created.json()['sid']}.json")

    fetched = fetch(simulator_url, created.json()["sid"])
    assert fetched.status_code == 200
    validate_against(openapi, response_schema(openapi, MESSAGE_PATH, "get", "200"), fetched.json())
    assert fetched.json()["sid"] == created.json()["sid"]

    listed = list_messages(simulator_url, To="+14155550104")
    assert listed.status_code == 200
    validate_against(openapi, response_schema(openapi, MESSAGES_PATH, "get", "200"), listed.json())
    assert [m["sid"] for m in listed.json()["messages"]] == [created.json()["sid"]]


def test_every_form_parameter_the_simulator_reads_is_in_twilios_create_message(
    openapi: dict[str, Any],
) -> None:
    operation = openapi["paths"][MESSAGES_PATH]["post"]
    assert operation["operationId"] == "CreateMessage"
    body = operation["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    source = Path(simulator_server.__file__).read_text()
    read_in_source = set(re.findall(r'parameters\.get\("(\w+)"', source)) | {"MediaUrl"}

    assert read_in_source <= simulator_server.CREATE_MESSAGE_PARAMETERS
    assert set(body["properties"]) >= simulator_server.CREATE_MESSAGE_PARAMETERS


def test_scheduled_send_is_stored_as_scheduled(
    simulator_url: str, simulator: SimulatorControl, openapi: dict[str, Any]
) -> None:
    send_at = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    too_soon = (datetime.now(UTC) + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

    created = send(simulator_url, To="+14155550117", ScheduleType="fixed", SendAt=send_at)
    refused = send(simulator_url, To="+14155550118", ScheduleType="fixed", SendAt=too_soon)

    assert created.status_code == 201
    validate_against(openapi, response_schema(openapi, MESSAGES_PATH, "post", "201"), created.json())
    assert (created.json()["status"], created.json()["date_sent"]) == ("scheduled", None)
    assert fetch(simulator_url, created.json()["sid"]).json()["status"] == "scheduled"
    assert_twilio_error(refused, 400, 35115)


def test_unknown_message_sid_is_a_twilio_404(simulator_url: str, simulator: SimulatorControl) -> None:
    assert_twilio_error(fetch(simulator_url, "SM" + "0" * 32), 404, 20404)


def test_list_filters_by_recipient_and_date_and_pages_newest_first(
    simulator_url: str, simulator: SimulatorControl
) -> None:
    sids = [send(simulator_url, To="+14155550107").json()["sid"] for _ in range(3)]
    send(simulator_url, To="+14155550108")

    first = list_messages(simulator_url, To="+14155550107", PageSize=2).json()
    assert [m["sid"] for m in first["messages"]] == [sids[2], sids[1]]
    assert (first["page"], first["page_size"], first["start"], first["end"]) == (0, 2, 0, 1)
    assert first["previous_page_uri"] is None
    second = requests.get(
        simulator_url + first["next_page_uri"], auth=(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN), timeout=10
    ).json()
    assert [m["sid"] for m in second["messages"]] == [sids[0]]
    assert second["next_page_uri"] is None

    today = parsedate_to_datetime(first["messages"][0]["date_sent"]).date()
    late_today = f"{today}T23:59:59Z"  # a date-time counts for its whole day, as with Twilio
    tomorrow, yesterday = str(today + timedelta(days=1)), str(today - timedelta(days=1))
    assert len(list_messages(simulator_url, To="+14155550107", **{"DateSent>": str(today)}).json()["messages"]) == 3
    assert len(list_messages(simulator_url, To="+14155550107", **{"DateSent>": late_today}).json()["messages"]) == 3
    assert list_messages(simulator_url, To="+14155550107", **{"DateSent>": tomorrow}).json()["messages"] == []
    assert len(list_messages(simulator_url, To="+14155550107", DateSent=str(today)).json()["messages"]) == 3
    assert list_messages(simulator_url, To="+14155550107", **{"DateSent<": yesterday}).json()["messages"] == []
    assert list_messages(simulator_url, To="+14155559999").json()["messages"] == []

    summary = simulator.summary()
    assert (summary["accepted"], summary["distinct_recipients"], summary["duplicate_count"]) == (4, 2, 2)
    assert summary["duplicate_recipients"] == ["+14155550107"]


# --- the concurrency cap and random errors


async def _send_concurrently(simulator_url: str, recipients: list[str]) -> list[tuple[str, int, dict[str, Any]]]:
    credentials = base64.b64encode(f"{TEST_ACCOUNT_SID}:{TEST_AUTH_TOKEN}".encode()).decode()
    headers = {"Authorization": f"Basic {credentials}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=len(recipients))) as session:

        async def one(to: str) -> tuple[str, int, dict[str, Any]]:
            form = {"To": to, "MessagingServiceSid": TEST_MESSAGING_SERVICE_SID, "Body": "Hi"}
            async with session.post(messages_url(simulator_url), data=form, headers=headers) as response:
                assert "Twilio-Concurrent-Requests" in response.headers
                return to, response.status, await response.json()

        return await asyncio.gather(*(one(to) for to in recipients))


def test_requests_beyond_max_concurrency_get_20429_and_are_never_processed(
    simulator_url: str, simulator: SimulatorControl
) -> None:
    simulator.configure(max_concurrency=5, latency_ms=300)
    recipients = [f"+1415555{n:04d}" for n in range(30)]

    results = asyncio.run(_send_concurrently(simulator_url, recipients))

    refused = [to for to, status, _ in results if status == 429]
    accepted = [to for to, status, _ in results if status == 201]
    assert refused and accepted
    assert len(refused) + len(accepted) == 30
    for _, status, document in results:
        if status == 429:
            assert document == {
                "code": 20429,
                "message": "Too Many Requests",
                "more_info": "https://www.twilio.com/docs/errors/20429",
                "status": 429,
            }
    assert all(listed_sids(simulator_url, to) == [] for to in refused)
    assert all(len(listed_sids(simulator_url, to)) == 1 for to in accepted)
    summary = simulator.summary()
    assert summary["requests"] == 30
    assert summary["accepted"] == len(accepted) == summary["distinct_recipients"]
    assert summary["rejected_429"] == len(refused) == summary["errors_by_code"]["20429"]
    assert summary["per_status_code"] == {"201": len(accepted), "429": len(refused)}
    assert summary["max_in_flight"] <= 5
    assert summary["duplicate_count"] == 0


def test_random_error_rates_429_refuses_and_500_stores(simulator_url: str, simulator: SimulatorControl) -> None:
    simulator.configure(error_rate_429=1.0)
    assert_twilio_error(send(simulator_url, To="+14155550109"), 429, 20429)
    assert listed_sids(simulator_url, "+14155550109") == []

    simulator.configure(error_rate_429=0.0, error_rate_500=1.0)
    assert_twilio_error(send(simulator_url, To="+14155550110"), 500, 20500)
    assert len(listed_sids(simulator_url, "+14155550110")) == 1  # the ambiguous case: it was sent

    summary = simulator.summary()
    assert (summary["requests"], summary["accepted"], summary["rejected_429"]) == (2, 1, 1)


def test_config_rejects_unknown_options_and_reset_restores_startup_config(
    simulator_url: str, simulator: SimulatorControl
) -> None:
    bad = requests.post(f"{simulator_url}/_simulator/config", json={"latency": 3}, timeout=10)
    assert bad.status_code == 400
    bad = requests.post(f"{simulator_url}/_simulator/config", json={"error_rate_429": 2}, timeout=10)
    assert bad.status_code == 400

    simulator.configure(latency_ms=0, callbacks_enabled=False)
    send(simulator_url, To="+14155550111")
    assert simulator.summary()["config"]["latency_ms"] == 0
    simulator.reset()

    summary = simulator.summary()
    assert summary["config"]["latency_ms"] == 5  # the startup flag
    assert summary["config"]["callbacks_enabled"] is True
    assert (summary["requests"], summary["accepted"]) == (0, 0)
    assert listed_sids(simulator_url, "+14155550111") == []


# --- magic numbers

REJECTING_NUMBERS = sorted(n for n, m in MAGIC_NUMBERS.items() if m.kind is MagicKind.REJECTED)
FAILING_NUMBERS = sorted(n for n, m in MAGIC_NUMBERS.items() if m.kind is MagicKind.DELIVERY_FAILS)


@pytest.mark.parametrize(
    ("number", "code"),
    [
        ("+15005550001", 21211),
        ("+15005550002", 21612),
        ("+15005550003", 21408),
        ("+15005550004", 21610),
        ("+15005550009", 21614),
    ],
)
def test_magic_numbers_refuse_with_twilios_test_number_codes(
    simulator_url: str, simulator: SimulatorControl, number: str, code: int
) -> None:
    assert number in REJECTING_NUMBERS
    for to in (number, magic_variant(number, 7), magic_variant(number, 99)):
        assert_twilio_error(send(simulator_url, To=to), 400, code)
    assert simulator.summary()["accepted"] == 0


@pytest.mark.parametrize(
    ("number", "final_status", "code"),
    [
        ("+15005550013", "undelivered", 30003),
        ("+15005550015", "failed", 30005),
        ("+15005550017", "undelivered", 30007),
        ("+15005550018", "undelivered", 30008),
    ],
)
def test_magic_numbers_are_accepted_then_fail_delivery(
    simulator_url: str, simulator: SimulatorControl, number: str, final_status: str, code: int
) -> None:
    assert number in FAILING_NUMBERS
    simulator.configure(callback_delay_ms=20)
    created = send(simulator_url, To=magic_variant(number, 42))
    assert created.status_code == 201
    assert created.json()["status"] == "accepted"

    final = wait_until(
        lambda: (doc := fetch(simulator_url, created.json()["sid"]).json())["status"] == final_status and doc,
        timeout_seconds=5,
        message=f"{number} to reach {final_status}",
    )
    assert final["error_code"] == code
    assert final["error_message"]


def test_first_delivery_fails_magic_number_fails_once_then_delivers(
    simulator_url: str, simulator: SimulatorControl
) -> None:
    simulator.configure(callback_delay_ms=20)
    first = send(simulator_url, To="+15015550023").json()["sid"]
    second = send(simulator_url, To="+15015550023").json()["sid"]

    assert first != second
    first_final = wait_until(
        lambda: (doc := fetch(simulator_url, first).json())["status"] == "undelivered" and doc, 5, message="30003"
    )
    assert first_final["error_code"] == 30003
    second_final = wait_until(
        lambda: (doc := fetch(simulator_url, second).json())["status"] == "delivered" and doc, 5, message="delivery"
    )
    assert second_final["error_code"] is None


def test_server_error_magic_number_stores_the_message_and_answers_500(
    simulator_url: str, simulator: SimulatorControl
) -> None:
    assert_twilio_error(send(simulator_url, To="+15015550050"), 500, 20500)

    assert len(listed_sids(simulator_url, "+15015550050")) == 1
    assert simulator.summary()["accepted"] == 1
    assert simulator.summary()["errors_by_code"] == {"20500": 1}


def test_slow_magic_number_lets_the_client_time_out_after_the_message_was_stored(
    simulator_url: str, simulator: SimulatorControl
) -> None:
    simulator.configure(slow_ms=1500)

    with pytest.raises(requests.Timeout):
        send(simulator_url, To="+15015550020", timeout=0.3)

    assert len(listed_sids(simulator_url, "+15015550020")) == 1
    assert simulator.summary()["accepted"] == 1


# --- status callbacks


def _assert_signed(entry: dict[str, Any], url: str) -> None:
    assert RequestValidator(TEST_AUTH_TOKEN).validate(url, entry["parameters"], entry["signature"])


def test_signed_status_callbacks_arrive_in_order(
    simulator_url: str, simulator: SimulatorControl, callback_receiver: CallbackReceiver
) -> None:
    simulator.configure(callback_delay_ms=30)
    callback = f"{callback_receiver.url}/webhooks/twilio/status?message_id=7&attempt=1"
    sid = send(simulator_url, To="+14155550112", StatusCallback=callback + "#rc=3&rp=all").json()["sid"]

    wait_until(lambda: len(callback_receiver.for_message(sid)) == 3, 5, message="three callbacks")

    entries = callback_receiver.for_message(sid)
    assert [e["parameters"]["MessageStatus"] for e in entries] == ["queued", "sent", "delivered"]
    for entry in entries:
        assert entry["path"] == "/webhooks/twilio/status?message_id=7&attempt=1"  # no fragment on the wire
        _assert_signed(entry, callback)
        parameters = entry["parameters"]
        assert parameters["SmsSid"] == parameters["MessageSid"] == sid
        assert parameters["SmsStatus"] == parameters["MessageStatus"]
        assert parameters["AccountSid"] == TEST_ACCOUNT_SID
        assert parameters["MessagingServiceSid"] == TEST_MESSAGING_SERVICE_SID
        assert parameters["To"] == "+14155550112"
        assert parameters["From"].startswith("+")
        assert parameters["ApiVersion"] == "2010-04-01"
        assert "ErrorCode" not in parameters
    assert re.fullmatch(r"\d{10}", entries[-1]["parameters"]["RawDlrDoneDate"])
    assert fetch(simulator_url, sid).json()["status"] == "delivered"
    callbacks = simulator.summary()["callbacks"]
    assert (callbacks["attempted"], callbacks["delivered"], callbacks["failed"]) == (3, 3, 0)


def test_undelivered_magic_number_ends_with_error_code_in_the_callback(
    simulator_url: str, simulator: SimulatorControl, callback_receiver: CallbackReceiver
) -> None:
    simulator.configure(callback_delay_ms=30)
    callback = f"{callback_receiver.url}/status?message_id=8"
    sid = send(simulator_url, To="+15095550013", StatusCallback=callback).json()["sid"]

    wait_until(lambda: len(callback_receiver.for_message(sid)) == 3, 5, message="three callbacks")

    entries = callback_receiver.for_message(sid)
    assert [e["parameters"]["MessageStatus"] for e in entries] == ["queued", "sent", "undelivered"]
    assert entries[-1]["parameters"]["ErrorCode"] == "30003"
    for entry in entries:
        _assert_signed(entry, callback)


def test_failed_callbacks_are_retried_as_many_times_as_rc_says(
    simulator_url: str, simulator: SimulatorControl, callback_receiver: CallbackReceiver
) -> None:
    simulator.configure(callback_delay_ms=20)
    flaky = send(simulator_url, To="+14155550113", StatusCallback=f"{callback_receiver.url}/flaky#rc=1")
    failing = send(simulator_url, To="+14155550114", StatusCallback=f"{callback_receiver.url}/fail#rc=0")

    wait_until(lambda: simulator.summary()["callbacks"]["pending"] == 0, 10, message="callbacks to finish")

    assert callback_receiver.accepted_statuses(flaky.json()["sid"]) == ["queued", "sent", "delivered"]
    assert len(callback_receiver.for_message(flaky.json()["sid"])) == 6  # each status: one failure, one retry
    assert len(callback_receiver.for_message(failing.json()["sid"])) == 3  # rc=0: no retry
    callbacks = simulator.summary()["callbacks"]
    assert callbacks == {**callbacks, "attempted": 9, "delivered": 3, "failed": 3, "retried": 3}


def test_no_callbacks_when_disabled(
    simulator_url: str, simulator: SimulatorControl, callback_receiver: CallbackReceiver
) -> None:
    simulator.configure(callbacks_enabled=False, callback_delay_ms=10)
    sid = send(simulator_url, To="+14155550115", StatusCallback=f"{callback_receiver.url}/status").json()["sid"]

    wait_until(lambda: fetch(simulator_url, sid).json()["status"] == "delivered", 5, message="delivered")
    assert callback_receiver.for_message(sid) == []
    assert simulator.summary()["callbacks"]["attempted"] == 0


# --- the command line


def test_command_line_flags_configure_the_simulator(tmp_path: Path) -> None:
    port = find_free_port()
    process = ManagedProcess(
        "simulator-flags",
        [
            sys.executable, "-m", "bulksms_tools.simulator",
            "--port", str(port),
            "--account-sid", TEST_ACCOUNT_SID,
            "--auth-token", TEST_AUTH_TOKEN,
            "--latency-ms", "0",
            "--max-concurrency", "7",
            "--error-rate-500", "1",
            "--no-callbacks",
            "--callback-delay-ms", "15",
            "--slow-ms", "250",
        ],
        environment=dict(os.environ),
        log_path=tmp_path / "simulator.log",
        working_directory=REPOSITORY_ROOT,
    ).start()  # fmt: skip
    try:
        wait_for_port(port)
        url = f"http://127.0.0.1:{port}"
        config = SimulatorControl(url).summary()["config"]
        assert config == {
            "latency_ms": 0,
            "max_concurrency": 7,
            "error_rate_429": 0,
            "error_rate_500": 1,
            "timeout_rate": 0,
            "callbacks_enabled": False,
            "callback_delay_ms": 15,
            "slow_ms": 250,
        }
        assert send(url, To="+14155550116").status_code == 500
        assert SimulatorControl(url).summary()["accepted"] == 1
    finally:
        process.stop()


def test_concurrent_clients_never_lose_or_duplicate_records(simulator_url: str, simulator: SimulatorControl) -> None:
    """Threads sending at once (as the sync Celery path does) never lose or duplicate a record."""
    recipients = [f"+1646555{n:04d}" for n in range(40)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda to: send(simulator_url, To=to).status_code, recipients))

    assert statuses == [201] * 40
    summary = simulator.summary()
    assert (summary["accepted"], summary["distinct_recipients"], summary["duplicate_count"]) == (40, 40, 0)
    assert parsedate_to_datetime(list_messages(simulator_url, To=recipients[0]).json()["messages"][0]["date_sent"])
