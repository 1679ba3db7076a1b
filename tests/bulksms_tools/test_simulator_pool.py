"""The simulator as a Messaging Service pool, over real HTTP: senders transmit their queues at their own rate,
queued messages have no date_sent, the queue overflows (30001), validity periods expire (30036), rate and cap
answers come on demand, the list filters DateSent by whole days and pages like Twilio, and the sender-pool lists
answer in Twilio's Messaging API v1 shape."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
import requests
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.rest import Client

from bulksms_tools.local_services import ManagedProcess, find_free_port, wait_for_port
from tests.bulksms_tools.test_simulator import (
    CallbackReceiver,
    assert_twilio_error,
    fetch,
    list_messages,
    messages_url,
    response_schema,
    send,
    twilio_client,
    validate_against,
)
from tests.conftest import (
    REPOSITORY_ROOT,
    TEST_ACCOUNT_SID,
    TEST_AUTH_TOKEN,
    TEST_MESSAGING_SERVICE_SID,
    SimulatorControl,
    wait_until,
)

V1_SPEC_PATH = REPOSITORY_ROOT / "tests" / "fixtures" / "twilio_messaging_v1_senders_openapi.json"
V2010_SPEC_PATH = REPOSITORY_ROOT / "tests" / "fixtures" / "twilio_messages_openapi.json"
MESSAGES_PATH = "/2010-04-01/Accounts/{AccountSid}/Messages.json"
# List path -> (its path in the spec, the key of its items, their schema).
SENDER_LISTS = {
    "PhoneNumbers": ("/v1/Services/{ServiceSid}/PhoneNumbers", "phone_numbers", "messaging.v1.service.phone_number"),
    "ShortCodes": ("/v1/Services/{ServiceSid}/ShortCodes", "short_codes", "messaging.v1.service.short_code"),
    "AlphaSenders": ("/v1/Services/{ServiceSid}/AlphaSenders", "alpha_senders", "messaging.v1.service.alpha_sender"),
}


@pytest.fixture
def callback_receiver() -> Iterator[CallbackReceiver]:
    receiver = CallbackReceiver()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.fixture(scope="module")
def v1_openapi() -> dict[str, Any]:
    return dict(json.loads(V1_SPEC_PATH.read_text()))


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    return dict(json.loads(V2010_SPEC_PATH.read_text()))


def long_codes(count: int, rate: float) -> list[dict[str, Any]]:
    return [{"type": "long_code", "count": count, "segments_per_second": rate}]


async def send_all(simulator_url: str, forms: list[dict[str, str]]) -> list[dict[str, Any]]:
    """POST every form at once (as a fast client would), answers in order."""
    credentials = base64.b64encode(f"{TEST_ACCOUNT_SID}:{TEST_AUTH_TOKEN}".encode()).decode()
    headers = {"Authorization": f"Basic {credentials}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=50)) as session:

        async def one(form: dict[str, str]) -> dict[str, Any]:
            form = {"MessagingServiceSid": TEST_MESSAGING_SERVICE_SID, "Body": "Hi", **form}
            async with session.post(messages_url(simulator_url), data=form, headers=headers) as response:
                assert response.status == 201, await response.text()
                return dict(await response.json())

        return list(await asyncio.gather(*(one(form) for form in forms)))


def epoch(rfc_2822: str) -> float:
    return parsedate_to_datetime(rfc_2822).timestamp()


# --- throughput: each sender transmits its queue at its rate, counted in segments


def test_a_pool_of_ten_senders_at_five_segments_per_second_transmits_fifty_segments_per_second(
    simulator_url: str, simulator: SimulatorControl
) -> None:
    simulator.configure(latency_ms=0, callbacks_enabled=False)
    simulator.configure_pool(senders=long_codes(10, 5))
    two_segments = "x" * 200  # GSM-7, 161 to 306 characters: 2 segments
    forms = [{"To": f"+1555700{n:04d}"} for n in range(200)]
    forms += [{"To": f"+1555701{n:04d}", "Body": two_segments} for n in range(50)]  # 300 segments in all

    created = asyncio.run(send_all(simulator_url, forms))
    submitted = simulator.pool()

    assert {message["status"] for message in created} == {"accepted"}
    assert submitted["segments_per_second"] == 50
    assert submitted["queue_peak"] >= 200  # submitted far faster than 50/s: Twilio holds the rest queued
    # The pool needs 300 / 50 = 6 s; each sender's backlog said so at its peak.
    assert 5.0 <= max(sender["backlog_peak_seconds"] for sender in submitted["senders"]) <= 7.0
    assert all(sender["queue_peak"] >= 15 for sender in submitted["senders"])  # spread over the whole pool

    done = wait_until(
        lambda: (pool := simulator.pool())["transmitted"] == 250 and pool, 20, message="the pool to drain"
    )
    first = done["first_transmitted_at"]
    # Departures are what Twilio's date_sent shows: 4 s of the pool carry 200 segments (+ at most one message
    # starting at the boundary on each sender).
    four_seconds = simulator.transmissions(since=first, until=first + 4)
    assert 185 <= four_seconds["segments"] <= 225
    whole = simulator.transmissions(since=first)
    assert whole["segments"] == 300 and whole["messages"] == 250
    assert 5.5 <= whole["last_at"] - first <= 6.5
    assert done["queue_length"] == 0 and done["transmitted_segments"] == 300


def test_a_message_costs_its_sender_one_slot_per_segment(simulator_url: str, simulator: SimulatorControl) -> None:
    simulator.configure(latency_ms=0, callbacks_enabled=False)
    simulator.configure_pool(senders=long_codes(1, 2))  # 0.5 s per segment
    for to, body in [("+15557020001", "one"), ("+15557020002", "y" * 200), ("+15557020003", "three")]:
        assert send(simulator_url, To=to, Body=body).status_code == 201

    simulator.advance_clock(60)  # long enough for the queue to drain

    sent = [simulator.received(to)[0]["sent_at"] for to in ("+15557020001", "+15557020002", "+15557020003")]
    assert sent[1] - sent[0] == pytest.approx(0.5, abs=0.01)  # after one segment
    assert sent[2] - sent[1] == pytest.approx(1.0, abs=0.01)  # after two


def test_a_queued_message_has_no_date_sent_until_its_sender_transmits_it(
    simulator_url: str, simulator: SimulatorControl, callback_receiver: CallbackReceiver, openapi: dict[str, Any]
) -> None:
    simulator.configure(latency_ms=0, callback_delay_ms=50)
    simulator.configure_pool(senders=long_codes(1, 1))
    callback = f"{callback_receiver.url}/status"
    sids = [send(simulator_url, To=f"+1555703000{n}", StatusCallback=callback).json()["sid"] for n in range(3)]

    waiting = fetch(simulator_url, sids[2]).json()
    assert waiting["status"] in ("accepted", "queued") and waiting["date_sent"] is None
    today = str(datetime.now(UTC).date())
    assert list_messages(simulator_url, To="+15557030002", DateSent=today).json()["messages"] == []
    listed = list_messages(simulator_url, To="+15557030002").json()
    validate_against(openapi, response_schema(openapi, MESSAGES_PATH, "get", "200"), listed)
    assert [message["sid"] for message in listed["messages"]] == [sids[2]]  # the list without DateSent has it
    assert simulator.pool()["queue_length"] >= 1

    wait_until(lambda: len(callback_receiver.for_message(sids[2])) == 3, 10, message="its three callbacks")
    delivered = fetch(simulator_url, sids[2]).json()
    assert delivered["status"] == "delivered"
    assert epoch(delivered["date_sent"]) - epoch(delivered["date_created"]) >= 1  # waited ~2 s for its sender
    statuses = [entry["parameters"]["MessageStatus"] for entry in callback_receiver.for_message(sids[2])]
    assert statuses == ["queued", "sent", "delivered"]
    assert {entry["parameters"]["From"] for entry in callback_receiver.for_message(sids[2])} == {"+14155550100"}


# --- what cannot be queued: 30001, 30036, 30022, daily caps


def test_past_the_queue_limit_messages_fail_with_30001(
    simulator_url: str, simulator: SimulatorControl, callback_receiver: CallbackReceiver
) -> None:
    simulator.configure(latency_ms=0, callback_delay_ms=20)
    simulator.configure_pool(senders=long_codes(1, 10), queue_limit_seconds=1)  # holds about 10 messages
    callback = f"{callback_receiver.url}/status"
    sids = [send(simulator_url, To=f"+155570400{n:02d}", StatusCallback=callback).json()["sid"] for n in range(20)]

    pool = simulator.pool()
    overflowed = pool["failed_by_code"]["30001"]
    assert 5 <= overflowed <= 12 and pool["senders"][0]["backlog_peak_seconds"] <= 1.1
    last = wait_until(
        lambda: (doc := fetch(simulator_url, sids[-1]).json())["status"] == "failed" and doc, 5, message="30001"
    )
    assert (last["error_code"], last["error_message"], last["date_sent"]) == (30001, "Queue overflow", None)
    wait_until(lambda: callback_receiver.for_message(sids[-1]), 5, message="the failed callback")
    [failed] = callback_receiver.for_message(sids[-1])
    assert (failed["parameters"]["MessageStatus"], failed["parameters"]["ErrorCode"]) == ("failed", "30001")
    assert fetch(simulator_url, sids[0]).json()["error_code"] is None  # the first ones were queued
    assert simulator.summary()["accepted"] == 20  # every request got its 201: the failure comes later


def test_a_message_still_queued_after_its_validity_period_fails_with_30036(
    simulator_url: str, simulator: SimulatorControl, callback_receiver: CallbackReceiver
) -> None:
    simulator.configure(latency_ms=0, callback_delay_ms=20)
    simulator.configure_pool(senders=long_codes(1, 1))
    callback = f"{callback_receiver.url}/status"
    sids = [
        send(simulator_url, To=f"+1555705000{n}", StatusCallback=callback, ValidityPeriod="1").json()["sid"]
        for n in range(3)
    ]

    expired = fetch(simulator_url, sids[2]).json()
    assert expired["status"] in ("accepted", "queued")  # waits in the queue until its validity ends
    wait_until(lambda: len(callback_receiver.for_message(sids[2])) == 2, 5, message="queued, then failed")
    expired = fetch(simulator_url, sids[2]).json()
    assert (expired["status"], expired["error_code"], expired["date_sent"]) == ("failed", 30036, None)
    statuses = [e["parameters"]["MessageStatus"] for e in callback_receiver.for_message(sids[2])]
    assert statuses == ["queued", "failed"]
    assert simulator.pool()["failed_by_code"] == {"30036": 1}
    assert fetch(simulator_url, sids[0]).json()["date_sent"] is not None  # the first left at once


def test_30022_on_demand_by_share_and_above_a_rate(simulator_url: str, simulator: SimulatorControl) -> None:
    simulator.configure(latency_ms=0, callback_delay_ms=10)
    simulator.configure_pool(senders=long_codes(1, 100), error_rate_30022=1)
    refused = send(simulator_url, To="+15557060001").json()["sid"]
    wait_until(lambda: fetch(simulator_url, refused).json()["error_code"] == 30022, 5, message="30022")

    simulator.configure_pool(error_rate_30022=0, rate_limit_30022_segments_per_second=5)
    asyncio.run(send_all(simulator_url, [{"To": f"+155570610{n:02d}"} for n in range(20)]))

    assert 13 <= simulator.pool()["failed_by_code"]["30022"] <= 16  # 1 + the 20 above a burst of 5


def test_a_daily_cap_fails_what_passes_it_until_midnight_pacific(
    simulator_url: str, simulator: SimulatorControl
) -> None:
    simulator.configure(latency_ms=0, callback_delay_ms=10)
    simulator.configure_pool(daily_cap={"code": 30023, "limit": 2})  # the cap needs no pool
    sids = [send(simulator_url, To=f"+1555707000{n}").json()["sid"] for n in range(3)]

    wait_until(lambda: fetch(simulator_url, sids[2]).json()["error_code"] == 30023, 5, message="the cap")
    assert fetch(simulator_url, sids[1]).json()["error_code"] is None
    state = simulator.pool()["daily_cap_state"]
    assert (state["used"], state["exhausted"]) == (2, True)
    midnight_pacific = datetime.fromtimestamp(state["resets_at"], ZoneInfo("America/Los_Angeles"))
    assert (midnight_pacific.hour, midnight_pacific.minute) == (0, 0)
    assert 0 < state["resets_at"] - simulator.now() <= 86_400

    simulator.advance_clock(state["resets_at"] - simulator.now() + 1)
    after = send(simulator_url, To="+15557070009").json()["sid"]
    wait_until(lambda: fetch(simulator_url, after).json()["status"] == "delivered", 5, message="sent again")
    assert simulator.pool()["daily_cap_state"]["used"] == 1


def test_a_cap_answered_at_the_request_refuses_it_and_a_rolling_cap_frees_after_24_hours(
    simulator_url: str, simulator: SimulatorControl
) -> None:
    simulator.configure(latency_ms=0)
    simulator.configure_pool(daily_cap={"code": 63038, "limit": 1, "answered_at": "request"})
    assert send(simulator_url, To="+15557080001").status_code == 201

    assert_twilio_error(send(simulator_url, To="+15557080002"), 400, 63038)
    assert simulator.summary()["accepted"] == 1  # refused before anything was stored

    simulator.advance_clock(86_400)
    assert send(simulator_url, To="+15557080002").status_code == 201


# --- the list: DateSent by whole days on date_sent, newest first, Twilio's paging


def test_date_sent_filters_whole_days_on_when_the_message_left_its_queue(
    simulator_url: str, simulator: SimulatorControl
) -> None:
    simulator.configure(latency_ms=0, callbacks_enabled=False)
    now = simulator.now()
    midnight = datetime.combine(datetime.fromtimestamp(now, UTC).date() + timedelta(days=1), datetime.min.time(), UTC)
    simulator.advance_clock(midnight.timestamp() - 2 - now)  # two seconds before midnight UTC
    simulator.configure_pool(senders=long_codes(1, 0.25))  # 4 s per message
    first = send(simulator_url, To="+15557090001").json()
    second = send(simulator_url, To="+15557090001").json()  # waits 4 s behind the first: sent after midnight
    day_one = parsedate_to_datetime(first["date_created"]).date()

    simulator.advance_clock(10)

    second_now = fetch(simulator_url, second["sid"]).json()
    day_two = parsedate_to_datetime(second_now["date_sent"]).date()
    assert day_two == day_one + timedelta(days=1)
    assert parsedate_to_datetime(second_now["date_created"]).date() == day_one

    def sids(**query: str) -> list[str]:
        return [m["sid"] for m in list_messages(simulator_url, To="+15557090001", **query).json()["messages"]]

    assert sids(DateSent=str(day_one)) == [first["sid"]]  # created the same day, sent the next: not on day one
    assert sids(DateSent=str(day_two)) == [second["sid"]]
    assert sids(**{"DateSent>": f"{day_two}T23:00:00Z"}) == [second["sid"]]  # the time of day is ignored
    assert sids(**{"DateSent<": str(day_one)}) == [first["sid"]]
    assert sids() == [second["sid"], first["sid"]]  # newest first


def test_the_list_pages_with_next_page_uri_and_never_shifts_when_messages_arrive(
    simulator_url: str, simulator: SimulatorControl
) -> None:
    simulator.configure(latency_ms=0, callbacks_enabled=False)
    to = "+15557100001"
    sids = [send(simulator_url, To=to, Body=f"message {n}").json()["sid"] for n in range(7)]

    first = list_messages(simulator_url, To=to, PageSize=3).json()
    newer = send(simulator_url, To=to, Body="arrives while paging").json()["sid"]
    pages = [first]
    while pages[-1]["next_page_uri"]:
        url = simulator_url + pages[-1]["next_page_uri"]
        pages.append(requests.get(url, auth=(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN), timeout=10).json())

    assert [len(page["messages"]) for page in pages] == [3, 3, 1]
    assert [m["sid"] for page in pages for m in page["messages"]] == list(reversed(sids))
    assert "PageToken=PA" in first["next_page_uri"] and pages[1]["page"] == 1
    assert list_messages(simulator_url, To=to).json()["page_size"] == 50  # Twilio's default
    assert list_messages(simulator_url, To=to, PageSize=5000).json()["page_size"] == 1000  # and maximum
    # twilio-python follows next_page_uri by itself.
    listed = twilio_client(simulator_url).messages.list(to=to, page_size=2)
    assert [message.sid for message in listed] == [newer, *reversed(sids)]


# --- the Messaging Service's sender pool (Messaging API v1)


class RedirectingHttpClient(TwilioHttpClient):
    """twilio-python's client with both of Twilio's hosts aimed at the simulator."""

    def __init__(self, base_url: str) -> None:
        super().__init__(timeout=10)
        self.base_url = base_url

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> TwilioResponse:
        url = re.sub(r"^https://(api|messaging)\.twilio\.com", self.base_url, url)
        return super().request(method, url, *args, **kwargs)


MIXED_POOL = [
    {"type": "long_code", "count": 2, "segments_per_second": 1},
    {"type": "toll_free", "count": 1, "segments_per_second": 3},
    {"type": "short_code", "count": 1, "segments_per_second": 100},
    {"type": "alpha", "count": 1, "segments_per_second": 10, "address": "Elections"},
]


def test_the_sender_pool_lists_answer_in_twilios_shape(
    simulator_url: str, simulator: SimulatorControl, v1_openapi: dict[str, Any]
) -> None:
    simulator.configure_pool(senders=MIXED_POOL)
    auth = (TEST_ACCOUNT_SID, TEST_AUTH_TOKEN)
    answers = {}
    for name, (path, key, schema_name) in SENDER_LISTS.items():
        url = simulator_url + path.replace("{ServiceSid}", TEST_MESSAGING_SERVICE_SID)
        response = requests.get(url, auth=auth, timeout=10)
        assert response.status_code == 200
        operation = v1_openapi["paths"][path]["get"]
        validate_against(
            v1_openapi, operation["responses"]["200"]["content"]["application/json"]["schema"], response.json()
        )
        assert response.json()["meta"]["key"] == key
        resource_keys = set(v1_openapi["components"]["schemas"][schema_name]["properties"])
        assert all(set(item) == resource_keys for item in response.json()[key])
        answers[name] = response.json()

    numbers = [item["phone_number"] for item in answers["PhoneNumbers"]["phone_numbers"]]
    assert numbers == ["+14155550100", "+14155550101", "+18335550100"]  # two long codes and a toll-free number
    assert [item["short_code"] for item in answers["ShortCodes"]["short_codes"]] == ["89100"]
    assert [item["alpha_sender"] for item in answers["AlphaSenders"]["alpha_senders"]] == ["Elections"]
    assert {item["service_sid"] for item in answers["PhoneNumbers"]["phone_numbers"]} == {TEST_MESSAGING_SERVICE_SID}
    assert all(re.fullmatch(r"PN[0-9a-f]{32}", item["sid"]) for item in answers["PhoneNumbers"]["phone_numbers"])

    unknown = requests.get(f"{simulator_url}/v1/Services/MG123/PhoneNumbers", auth=auth, timeout=10)
    assert_twilio_error(unknown, 404, 20404)
    wrong_token = requests.get(
        simulator_url + SENDER_LISTS["ShortCodes"][0].replace("{ServiceSid}", TEST_MESSAGING_SERVICE_SID),
        auth=(TEST_ACCOUNT_SID, "wrong"),
        timeout=10,
    )
    assert_twilio_error(wrong_token, 401, 20003)


def test_twilio_python_reads_the_sender_pool_page_by_page(simulator_url: str, simulator: SimulatorControl) -> None:
    simulator.configure_pool(senders=[{"type": "long_code", "count": 5, "segments_per_second": 1}])
    client = Client(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, http_client=RedirectingHttpClient(simulator_url))
    service = client.messaging.v1.services(TEST_MESSAGING_SERVICE_SID)

    numbers = service.phone_numbers.list(page_size=2)  # three pages, followed through meta.next_page_url

    assert [number.phone_number for number in numbers] == [f"+141555501{n:02d}" for n in range(5)]
    assert service.short_codes.list() == [] and service.alpha_senders.list() == []

    simulator.reset()  # no pool: the lists are empty, nothing limits the pace
    assert service.phone_numbers.list() == []


# --- control: configuration, assignment, clock, summary


def test_pool_configuration_is_validated_and_reset_restores_no_pool(
    simulator_url: str, simulator: SimulatorControl
) -> None:
    for bad in (
        {"senders": [{"type": "fax", "segments_per_second": 1}]},
        {"senders": [{"type": "long_code", "segments_per_second": 0}]},
        {"senders": [{"type": "toll_free", "segments_per_second": 3, "address": "+14155550100"}]},
        {"queue_limit_seconds": -1},
        {"daily_cap": {"code": 30001, "limit": 1}},
        {"error_rate_30022": 2},
        {"colour": "blue"},
    ):
        response = requests.post(f"{simulator_url}/_simulator/pool", json=bad, timeout=10)
        assert response.status_code == 400, bad
        assert response.json()["error"]

    simulator.configure_pool(senders=long_codes(3, 2), queue_limit_seconds=60)
    summary = simulator.summary()["pool"]
    assert (summary["configured"], len(summary["senders"]), summary["queue_limit_seconds"]) == (True, 3, 60)
    simulator.reset()
    summary = simulator.summary()["pool"]
    assert (summary["configured"], summary["senders"], summary["segments_per_second"]) == (False, [], None)


def test_sticky_assignment_keeps_a_recipient_on_one_sender(simulator_url: str, simulator: SimulatorControl) -> None:
    simulator.configure(latency_ms=0, callbacks_enabled=False)
    simulator.configure_pool(senders=long_codes(4, 1), assignment="sticky")
    for _ in range(6):
        send(simulator_url, To="+15557110001")
    simulator.configure_pool(senders=long_codes(4, 1), assignment="least_loaded")  # new, empty queues
    asyncio.run(send_all(simulator_url, [{"To": "+15557110002"} for _ in range(8)]))

    assert len({message["from"] for message in simulator.received("+15557110001")}) == 1
    assert len({message["from"] for message in simulator.received("+15557110002")}) == 4  # two on each


def test_moving_the_clock_drains_queues_and_posts_the_callbacks_that_fell_due(
    simulator_url: str, simulator: SimulatorControl, callback_receiver: CallbackReceiver
) -> None:
    simulator.configure(latency_ms=0, callback_delay_ms=10)
    simulator.configure_pool(senders=long_codes(1, 0.01))  # 100 s per message
    callback = f"{callback_receiver.url}/status"
    sids = [send(simulator_url, To=f"+1555712000{n}", StatusCallback=callback).json()["sid"] for n in range(3)]
    wait_until(lambda: len(callback_receiver.for_message(sids[0])) == 3, 5, message="the first to be delivered")
    time.sleep(0.3)
    assert [len(callback_receiver.for_message(sid)) for sid in sids[1:]] == [1, 1]  # queued: no "sent" yet

    moved = simulator.advance_clock(250)

    wait_until(lambda: all(len(callback_receiver.for_message(sid)) == 3 for sid in sids), 5, message="callbacks")
    assert simulator.pool()["queue_length"] == 0
    assert fetch(simulator_url, sids[2]).json()["status"] == "delivered"
    assert moved - time.time() >= 249
    backwards = requests.post(f"{simulator_url}/_simulator/clock", json={"offset_seconds": 0}, timeout=10)
    assert backwards.status_code == 409  # messages are stored: time cannot go back


def test_with_no_pool_every_message_leaves_at_once_as_before(simulator_url: str, simulator: SimulatorControl) -> None:
    simulator.configure(latency_ms=0, callbacks_enabled=False)
    created = send(simulator_url, To="+15557130001").json()

    fetched = fetch(simulator_url, created["sid"]).json()
    assert fetched["date_sent"] == fetched["date_created"]
    pool = simulator.pool()
    assert (pool["configured"], pool["transmitted"], pool["queue_peak"]) == (False, 1, 0)


def test_command_line_flags_set_the_startup_pool(tmp_path: Path) -> None:
    port = find_free_port()
    process = ManagedProcess(
        "simulator-pool-flags",
        [
            sys.executable, "-m", "bulksms_tools.simulator",
            "--port", str(port),
            "--account-sid", TEST_ACCOUNT_SID,
            "--auth-token", TEST_AUTH_TOKEN,
            "--pool", "3x5,1x100:short_code",
            "--queue-limit-seconds", "600",
            "--sender-assignment", "sticky",
        ],
        environment=dict(os.environ),
        log_path=tmp_path / "simulator.log",
        working_directory=REPOSITORY_ROOT,
    ).start()  # fmt: skip
    try:
        wait_for_port(port)
        control = SimulatorControl(f"http://127.0.0.1:{port}")
        control.configure_pool(senders=[])  # changed at run time ...
        control.reset()  # ... and back to the flags
        pool = control.pool()
        assert [sender["type"] for sender in pool["senders"]] == ["long_code"] * 3 + ["short_code"]
        assert (pool["segments_per_second"], pool["queue_limit_seconds"], pool["assignment"]) == (115, 600, "sticky")
    finally:
        process.stop()
