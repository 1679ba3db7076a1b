"""The simulator's HTTP server: Twilio's Messages API (create, fetch, list), the Messaging Service's sender-pool
lists (Messaging API v1), and control endpoints for tests.

Kept cheap per request because it shares the benchmark machine with the whole stack: no per-request logging,
the form parsed with `parse_qsl`, credentials compared against a precomputed header, records stored compactly
and rendered only for the response. Requests beyond `max_concurrency` in flight get Twilio's 429 / 20429 at
once. Each accepted message is placed on a sender of the pool (bulksms_tools.simulator.pool), which decides
when it leaves its queue, or the code it fails with.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import hmac
import json
import random
import re
import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from aiohttp import web

from bulksms_tools.simulator.callbacks import CallbackDispatcher
from bulksms_tools.simulator.clock import SimulatorClock
from bulksms_tools.simulator.magic_numbers import REJECTION_MESSAGES, MagicKind, magic_number_for
from bulksms_tools.simulator.pool import (
    POOL_ERROR_MESSAGES,
    VALIDITY_EXPIRED_CODE,
    PoolConfig,
    PoolConfigError,
    Sender,
    SenderKind,
    SenderPool,
    updated_pool_config,
)
from bulksms_tools.simulator.store import (
    DELIVERED,
    MESSAGING_SERVICE_SENDER,
    MessageRecord,
    MessageStore,
    Outcome,
    outcome_for_dropped,
    outcome_for_failure,
)
from shared.broadcasts.segments import count_segments
from shared.broadcasts.smart_encoding import smart_encode

E164_PATTERN = re.compile(r"^\+[1-9][0-9]{1,14}$")
MESSAGING_SERVICE_SID_PATTERN = re.compile(r"^MG[0-9a-fA-F]{32}$")
ALPHANUMERIC_SENDER_PATTERN = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")
MAX_BODY_CHARACTERS = 1600
MAX_MEDIA_URLS = 10
MAX_VALIDITY_PERIOD_SECONDS = 36000
SCHEDULE_MIN_SECONDS = 300
SCHEDULE_MAX_SECONDS = 35 * 24 * 3600
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
BODY_CACHE_LIMIT = 10_000
JSON_CONTENT_TYPE = "application/json; charset=utf-8"
# The CreateMessage form parameters the simulator reads (the tests check each is in Twilio's OpenAPI).
CREATE_MESSAGE_PARAMETERS = frozenset(
    {
        "To",
        "From",
        "MessagingServiceSid",
        "Body",
        "MediaUrl",
        "ContentSid",
        "StatusCallback",
        "ValidityPeriod",
        "SmartEncoded",
        "ScheduleType",
        "SendAt",
    }
)


@dataclass
class SimulatorConfig:
    """Startup configuration; the fields in RUNTIME_OPTIONS can also be changed through /_simulator/config."""

    account_sid: str = "AC" + "0" * 32
    auth_token: str = "simulator-auth-token"  # noqa: S105 - the demo's fake account, not a secret
    api_key_sid: str | None = None  # an API Key (SK...) accepted instead of the Auth Token, as Twilio does
    api_key_secret: str | None = None
    latency_ms: float = 100.0
    max_concurrency: int = 100  # 0: no cap
    error_rate_429: float = 0.0
    error_rate_500: float = 0.0
    timeout_rate: float = 0.0  # share of accepted messages answered only after slow_ms (a client times out)
    callbacks_enabled: bool = True
    callback_delay_ms: float = 200.0
    slow_ms: float = 10_000.0
    callback_workers: int = 20
    callback_backlog: int = 200_000
    # The Messaging Service's senders (none: one sender of unlimited rate); changed through /_simulator/pool.
    pool: PoolConfig = field(default_factory=PoolConfig)


# Option name -> (accepted JSON types, lowest value, highest value).
RUNTIME_OPTIONS: dict[str, tuple[tuple[type, ...], float | None, float | None]] = {
    "latency_ms": ((int, float), 0, None),
    "max_concurrency": ((int,), 0, None),
    "error_rate_429": ((int, float), 0, 1),
    "error_rate_500": ((int, float), 0, 1),
    "timeout_rate": ((int, float), 0, 1),
    "callbacks_enabled": ((bool,), None, None),
    "callback_delay_ms": ((int, float), 0, None),
    "slow_ms": ((int, float), 0, None),
}


ReadHandler = Callable[[web.Request], tuple[int, dict[str, Any]]]

# Messaging API v1 sender lists: path segment -> (the list's key in the answer, the sender types it holds).
SENDER_LISTS: dict[str, tuple[str, frozenset[SenderKind]]] = {
    "PhoneNumbers": ("phone_numbers", frozenset({SenderKind.LONG_CODE, SenderKind.TOLL_FREE})),
    "ShortCodes": ("short_codes", frozenset({SenderKind.SHORT_CODE})),
    "AlphaSenders": ("alpha_senders", frozenset({SenderKind.ALPHA})),
}


def _within(value: float, lowest: float | None, highest: float | None) -> bool:
    return (lowest is None or value >= lowest) and (highest is None or value <= highest)


class SimulatorError(Exception):
    """A Twilio error answer: HTTP status, Twilio error code, message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_document(status: int, code: int, message: str) -> dict[str, Any]:
    # Exactly Twilio's v2010 keys: with `type`/`title` twilio-python would raise a different exception class.
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def basic_authorization(account_sid: str, auth_token: str) -> str:
    return "Basic " + base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode("ascii")


def parse_date_filter(text: str) -> tuple[float, float]:
    """The whole UTC day a DateSent filter value falls on, as Twilio filters: `YYYY-MM-DD`, or the day of an
    ISO-8601 / RFC 2822 date-time (twilio-python sends `2024-05-01T10:30:00Z`: the time of day is ignored)."""
    value = text.strip()
    try:
        if len(value) == 10:
            moment = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
        else:
            try:
                moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                moment = parsedate_to_datetime(value)
    except (ValueError, TypeError) as error:
        raise SimulatorError(400, 20001, f"Invalid DateSent value: {text}") from error
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    day = datetime.combine(moment.astimezone(UTC).date(), datetime.min.time(), UTC)
    return day.timestamp(), (day + timedelta(days=1)).timestamp() - 1e-6


def parse_send_at(text: str) -> float:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as error:
        raise SimulatorError(400, 35115, "SendAt is not a valid ISO-8601 UTC timestamp.") from error
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def validate_status_callback(url: str) -> None:
    parts = urlsplit(url.partition("#")[0])
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host or "_" in host or len(url) > 4000:
        raise SimulatorError(400, 21609, f"The StatusCallback URL {url} is not a valid URL.")


class Simulator:
    """Holds the configuration, the counters, the message store and the callback dispatcher."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.startup_config = config
        self.config = dataclasses.replace(config)
        self.clock = SimulatorClock()
        self.store = MessageStore(config.account_sid, self.clock)
        self.pool = SenderPool(config.pool, self.clock)
        self.callbacks = CallbackDispatcher(
            self.store,
            config.auth_token,
            workers=config.callback_workers,
            backlog_limit=config.callback_backlog,
        )
        self.accepted_credentials = [(config.account_sid, config.auth_token)]
        if config.api_key_sid and config.api_key_secret:
            self.accepted_credentials.append((config.api_key_sid, config.api_key_secret))
        self.expected_authorization = basic_authorization(config.account_sid, config.auth_token)
        self.in_flight = 0
        # A broadcast sends one body and one Messaging Service SID many times: keep one copy of each.
        self._body_cache: dict[tuple[str, bool], tuple[str, str | None, int]] = {}
        self._shared_strings: dict[str, str] = {}
        self._step_seconds = (-1.0, 0.0)
        self.deleted: set[int] = set()  # indices of messages deleted through the API
        self._reset_counters()

    def _reset_counters(self) -> None:
        self.requests = 0
        self.read_requests = 0
        self.accepted = 0
        self.rejected_429 = 0
        self.max_in_flight = self.in_flight
        self.errors_by_code: dict[int, int] = {}
        self.per_status_code: dict[int, int] = {}

    # --- building answers

    def _json(self, status: int, document: Any, twilio_headers: bool = True) -> web.Response:
        headers = {"Content-Type": JSON_CONTENT_TYPE}
        if twilio_headers:
            headers["Twilio-Concurrent-Requests"] = str(self.in_flight)
        return web.Response(status=status, body=json.dumps(document).encode(), headers=headers)

    def _error(self, error: SimulatorError) -> web.Response:
        response = self._json(error.status, error_document(error.status, error.code, error.message))
        if error.status == 401:
            response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
        return response

    def _count_answer(self, status: int, code: int | None = None) -> None:
        self.per_status_code[status] = self.per_status_code.get(status, 0) + 1
        if code is not None:
            self.errors_by_code[code] = self.errors_by_code.get(code, 0) + 1

    def _at_capacity(self) -> bool:
        return bool(self.config.max_concurrency) and self.in_flight >= self.config.max_concurrency

    def _enter(self) -> None:
        self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight

    def _check_credentials(self, request: web.Request) -> None:
        # Messaging API v1 paths name no account: the credentials alone say whose it is.
        if request.match_info.get("account_sid", self.startup_config.account_sid) != self.startup_config.account_sid:
            raise SimulatorError(401, 20003, "Authenticate")
        presented = request.headers.get("Authorization", "")
        if presented == self.expected_authorization:
            return
        scheme, _, encoded = presented.partition(" ")
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        username, _, password = decoded.partition(":")
        # The account's SID and Auth Token, or one of its API Keys (SID and secret), as Twilio accepts.
        if not scheme.lower() == "basic" or not any(
            hmac.compare_digest(username.encode(), expected_username.encode())
            and hmac.compare_digest(password.encode(), expected_password.encode())
            for expected_username, expected_password in self.accepted_credentials
        ):
            raise SimulatorError(401, 20003, "Authenticate")

    # --- POST Messages.json

    async def create_message(self, request: web.Request) -> web.Response:
        self.requests += 1
        rate_429 = self.config.error_rate_429
        if self._at_capacity() or (rate_429 and random.random() < rate_429):
            # Never processed: not stored, not counted as accepted, not in flight.
            self.rejected_429 += 1
            self._count_answer(429, 20429)
            return self._error(SimulatorError(429, 20429, "Too Many Requests"))
        self._enter()
        try:
            delay = self.config.latency_ms / 1000
            try:
                self._check_credentials(request)
                form = parse_qsl((await request.read()).decode("utf-8", "replace"), keep_blank_values=True)
                document, answer_500, slow = self._accept(form)
            except SimulatorError as error:
                if delay > 0:
                    await asyncio.sleep(delay)
                self._count_answer(error.status, error.code)
                return self._error(error)
            if slow:
                delay = self.config.slow_ms / 1000
            if delay > 0:
                await asyncio.sleep(delay)
            if answer_500:
                self._count_answer(500, 20500)
                return self._error(SimulatorError(500, 20500, "An internal server error has occurred"))
            self._count_answer(201)
            return self._json(201, document)
        finally:
            self.in_flight -= 1

    def _body_and_segments(self, body: str, smart_encoded: bool) -> tuple[str, str | None, int]:
        """(the body Twilio stores, the body as sent when Smart Encoding changed it, its segments); one shared
        copy of each per broadcast."""
        key = (body, smart_encoded)
        cached = self._body_cache.get(key)
        if cached is None:
            stored = smart_encode(body) if smart_encoded else body  # Twilio's own map, as Twilio stores it
            cached = (stored, body if stored != body else None, count_segments(stored).segments)
            if len(self._body_cache) >= BODY_CACHE_LIMIT:
                self._body_cache.clear()
            self._body_cache[key] = cached
        return cached

    def _shared(self, text: str | None) -> str | None:
        if text is None:
            return None
        shared = self._shared_strings.get(text)
        if shared is None:
            if len(self._shared_strings) >= BODY_CACHE_LIMIT:
                self._shared_strings.clear()
            shared = self._shared_strings[text] = text
        return shared

    def _current_step_seconds(self) -> float:
        milliseconds, seconds = self._step_seconds
        if milliseconds != self.config.callback_delay_ms:
            self._step_seconds = (self.config.callback_delay_ms, self.config.callback_delay_ms / 1000)
            seconds = self._step_seconds[1]
        return seconds

    def _accept(self, form: list[tuple[str, str]]) -> tuple[dict[str, Any], bool, bool]:
        """Validate a create request and store the message: (resource, answer 500 instead, answer late)."""
        parameters: dict[str, str] = {}
        media_urls: list[str] = []
        for name, value in form:
            if name == "MediaUrl":
                media_urls.append(value)
            else:
                parameters[name] = value

        to = parameters.get("To", "")
        if not to:
            raise SimulatorError(400, 21604, "A 'To' phone number is required.")
        if not E164_PATTERN.match(to):
            raise SimulatorError(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        magic = magic_number_for(to)
        if magic is not None and magic.kind is MagicKind.REJECTED:
            assert magic.error_code is not None
            raise SimulatorError(400, magic.error_code, REJECTION_MESSAGES[magic.error_code].format(to=to))

        sender = parameters.get("From") or None
        service_sid = parameters.get("MessagingServiceSid") or None
        if sender is not None and MESSAGING_SERVICE_SID_PATTERN.match(sender):
            service_sid, sender = (
                service_sid or sender,
                None,
            )  # Twilio accepts a Messaging Service SID as From
        if sender is None and service_sid is None:
            raise SimulatorError(400, 21603, "A 'From' phone number is required.")
        if service_sid is not None and not MESSAGING_SERVICE_SID_PATTERN.match(service_sid):
            raise SimulatorError(400, 21705, "The Messaging Service Sid is invalid.")
        if sender is not None and not (E164_PATTERN.match(sender) or ALPHANUMERIC_SENDER_PATTERN.match(sender)):
            raise SimulatorError(400, 21212, f"The 'From' number {sender} is not a valid phone number.")

        body = parameters.get("Body")
        if not body and not media_urls and not parameters.get("ContentSid"):
            raise SimulatorError(400, 21602, "Message body is required.")
        if body is not None and len(body) > MAX_BODY_CHARACTERS:
            raise SimulatorError(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
        if len(media_urls) > MAX_MEDIA_URLS:
            raise SimulatorError(400, 21623, "Too many media urls. A maximum of 10 media urls is allowed.")

        status_callback = parameters.get("StatusCallback") or None
        if status_callback is not None:
            validate_status_callback(status_callback)
        validity_period = parameters.get("ValidityPeriod")
        if validity_period is not None and not (
            validity_period.isdigit() and 1 <= int(validity_period) <= MAX_VALIDITY_PERIOD_SECONDS
        ):
            raise SimulatorError(400, 21624, "Invalid validity period value.")

        now = self.store.now()
        base = now
        scheduled = False
        schedule_type = parameters.get("ScheduleType")
        if schedule_type is not None:
            if schedule_type != "fixed":
                raise SimulatorError(400, 35115, "ScheduleType must be 'fixed'.")
            if service_sid is None:
                raise SimulatorError(400, 35118, "MessagingServiceSid is required to schedule a message.")
            base = parse_send_at(parameters.get("SendAt", ""))
            if not SCHEDULE_MIN_SECONDS <= base - now <= SCHEDULE_MAX_SECONDS:
                raise SimulatorError(400, 35115, "SendAt must be between 5 minutes and 35 days in the future.")
            scheduled = True

        stored_body, sent_body, segments = body, None, 1
        if body:
            stored_body, sent_body, body_segments = self._body_and_segments(
                body, parameters.get("SmartEncoded", "").lower() == "true"
            )
            if not media_urls:
                segments = body_segments
        outcome: Outcome = DELIVERED
        if magic is not None and (
            magic.kind is MagicKind.DELIVERY_FAILS
            # A delivery retry's story: the handset is unreachable for the first message only.
            or (magic.kind is MagicKind.FIRST_DELIVERY_FAILS and to not in self.store.by_recipient)
        ):
            assert magic.final_status is not None and magic.error_code is not None
            outcome = outcome_for_failure(magic.final_status, magic.error_code)
        left_queue_at, picked = base, MESSAGING_SERVICE_SENDER
        if not scheduled:  # a scheduled message joins no queue before its SendAt: sent then
            refusal = self.pool.request_refusal(now)
            if refusal is not None:
                raise SimulatorError(400, refusal, POOL_ERROR_MESSAGES[refusal])
            validity = int(validity_period) if validity_period is not None else None
            admission = self.pool.admit(to, segments, now, validity, sender)
            left_queue_at, picked = admission.leaves_queue_at, admission.sender_address
            if admission.failure_code is not None:
                outcome = outcome_for_dropped(
                    admission.failure_code, expired=admission.failure_code == VALIDITY_EXPIRED_CODE
                )
        config = self.config
        record = MessageRecord(
            to=to,
            sender=self._shared(sender),
            service_sid=self._shared(service_sid),
            body=stored_body,
            segments=segments,
            num_media=len(media_urls),
            outcome=outcome,
            created=now,
            base=base,
            step_seconds=self._current_step_seconds(),
            scheduled=scheduled,
            options=self._request_options(parameters, media_urls),
            left_queue_at=left_queue_at,
            picked=picked,
            sent_body=sent_body,
        )
        index = self.store.add(record)
        self.accepted += 1
        if status_callback is not None and config.callbacks_enabled:
            self.callbacks.schedule(index, status_callback)
        answer_500 = (magic is not None and magic.kind is MagicKind.SERVER_ERROR) or (
            bool(config.error_rate_500) and random.random() < config.error_rate_500
        )
        slow = (magic is not None and magic.kind is MagicKind.SLOW) or (
            bool(config.timeout_rate) and random.random() < config.timeout_rate
        )
        return self.store.resource(index, now), answer_500, slow

    @staticmethod
    def _request_options(parameters: dict[str, str], media_urls: list[str]) -> dict[str, Any] | None:
        options: dict[str, Any] = {}
        if media_urls:
            options["MediaUrl"] = media_urls
        for name in ("ValidityPeriod", "SmartEncoded"):
            if name in parameters:
                options[name] = parameters[name]
        return options or None

    # --- GET Messages/{Sid}.json and Messages.json

    async def _read(self, request: web.Request, answer: ReadHandler) -> web.Response:
        """Reads share the concurrency cap and the latency with sends, as Twilio counts all API requests."""
        status, document = await self._answer_read(request, answer)
        response = self._json(status, document)
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
        return response

    async def _answer_read(self, request: web.Request, answer: ReadHandler) -> tuple[int, dict[str, Any]]:
        self.read_requests += 1
        if self._at_capacity():
            return 429, error_document(429, 20429, "Too Many Requests")
        self._enter()
        try:
            try:
                self._check_credentials(request)
                status, document = answer(request)
            except SimulatorError as error:
                status, document = error.status, error_document(error.status, error.code, error.message)
            delay = self.config.latency_ms / 1000
            if delay > 0:
                await asyncio.sleep(delay)
            return status, document
        finally:
            self.in_flight -= 1

    async def fetch_message(self, request: web.Request) -> web.Response:
        return await self._read(request, self._fetch)

    async def list_messages(self, request: web.Request) -> web.Response:
        return await self._read(request, self._list)

    async def delete_message(self, request: web.Request) -> web.Response:
        """`DELETE Messages/{Sid}.json`: 204, then the message is gone from fetches and `/_simulator/messages`."""
        status, document = await self._answer_read(request, self._delete)
        if status == 204:
            return web.Response(status=204, headers={"Twilio-Concurrent-Requests": str(self.in_flight)})
        return self._json(status, document)

    def _delete(self, request: web.Request) -> tuple[int, dict[str, Any]]:
        index = self._existing(request.match_info["sid"])
        self.deleted.add(index)
        return 204, {}

    def _existing(self, sid: str) -> int:
        index = self.store.find(sid)
        if index is None or index in self.deleted:
            raise SimulatorError(404, 20404, f"The requested resource /Messages/{sid}.json was not found")
        return index

    def _fetch(self, request: web.Request) -> tuple[int, dict[str, Any]]:
        index = self.store.find(request.match_info["sid"])
        if index is not None and index in self.deleted:
            index = None
        if index is None:
            raise SimulatorError(404, 20404, f"The requested resource {request.path} was not found")
        return 200, self.store.resource(index)

    def _list(self, request: web.Request) -> tuple[int, dict[str, Any]]:
        query = request.query
        # DateSent filters work by whole UTC days on `date_sent` (Twilio's "on and after" / "on and before"):
        # a message still waiting in its sender's queue has no date_sent and matches none of them.
        sent_from: float | None = None
        sent_until: float | None = None
        for name in ("DateSent>", "DateSent>="):
            if name in query:
                sent_from = parse_date_filter(query[name])[0]
        for name in ("DateSent<", "DateSent<="):
            if name in query:
                sent_until = parse_date_filter(query[name])[1]
        if "DateSent" in query:
            sent_from, sent_until = parse_date_filter(query["DateSent"])
        try:
            page_size = min(MAX_PAGE_SIZE, max(1, int(query.get("PageSize", DEFAULT_PAGE_SIZE))))
            page = max(0, int(query.get("Page", 0)))
        except ValueError as error:
            raise SimulatorError(400, 20001, "Page and PageSize must be integers.") from error

        now = self.store.now()
        indices = self.store.select(query.get("To"), query.get("From"), sent_from, sent_until, now)
        if self.deleted:
            indices = [index for index in indices if index not in self.deleted]
        start = page * page_size
        token = query.get("PageToken")
        if token:
            # Twilio's PageToken is a cursor: the next page holds what is older than the last message shown, so
            # messages created meanwhile never shift it.
            older = indices[: bisect_left(indices, self._page_token_position(token))]
        else:
            older = indices[: max(0, len(indices) - start)]
        # Newest first, as Twilio lists.
        chosen = list(reversed(older[max(0, len(older) - page_size) :]))
        messages = [self.store.resource(index, now) for index in chosen]

        kept = [(name, value) for name, value in query.items() if name not in ("Page", "PageSize", "PageToken")]

        def page_uri(number: int, token: str | None = None) -> str:
            items = [*kept, ("PageSize", str(page_size)), ("Page", str(number))]
            if token is not None:
                items.append(("PageToken", token))
            return f"{request.path}?{urlencode(items)}"

        has_next = len(older) > page_size
        next_token = f"PA{self.store.run_key}{chosen[-1]:016x}" if has_next and chosen else None
        return 200, {
            "end": start + len(messages) - 1 if messages else 0,
            "first_page_uri": page_uri(0),
            "messages": messages,
            "next_page_uri": page_uri(page + 1, next_token) if has_next else None,
            "page": page,
            "page_size": page_size,
            "previous_page_uri": page_uri(page - 1) if page > 0 else None,
            "start": start if messages else 0,
            "uri": page_uri(page),
        }

    def _page_token_position(self, token: str) -> int:
        """The record position a PageToken of this run points at (the oldest message of the previous page)."""
        run_key = self.store.run_key
        if len(token) != 34 or not token.startswith("PA" + run_key):
            raise SimulatorError(400, 20001, f"Invalid PageToken: {token}")
        try:
            return int(token[18:], 16)
        except ValueError as error:
            raise SimulatorError(400, 20001, f"Invalid PageToken: {token}") from error

    # --- GET /v1/Services/{ServiceSid}/PhoneNumbers | ShortCodes | AlphaSenders (Messaging API v1)

    async def list_pool_senders(self, request: web.Request) -> web.Response:
        return await self._read(request, self._pool_senders)

    def _pool_senders(self, request: web.Request) -> tuple[int, dict[str, Any]]:
        """One of the Messaging Service's sender lists, in Twilio's v1 shape (`meta` paging; the resources and the
        list document as in twilio-oai's spec/json/twilio_messaging_v1.json, ListPhoneNumber / ListShortCode /
        ListAlphaSender). Every valid service SID names the one pool; with no pool configured the lists are empty."""
        service_sid = request.match_info["service_sid"]
        if not MESSAGING_SERVICE_SID_PATTERN.match(service_sid):
            raise SimulatorError(404, 20404, f"The requested resource {request.path} was not found")
        key, kinds = SENDER_LISTS[request.match_info["sender_list"]]
        try:
            page_size = min(MAX_PAGE_SIZE, max(1, int(request.query.get("PageSize", DEFAULT_PAGE_SIZE))))
            page = max(0, int(request.query.get("Page", 0)))
        except ValueError as error:
            raise SimulatorError(400, 20001, "Page and PageSize must be integers.") from error
        senders = self.pool.senders_of(kinds)
        shown = senders[page * page_size : (page + 1) * page_size]
        base = f"{request.scheme}://{request.host}{request.path}"

        def page_url(number: int) -> str:
            return f"{base}?{urlencode({'PageSize': page_size, 'Page': number})}"

        items = [self._sender_resource(sender, service_sid, base) for sender in shown]
        return 200, {
            key: items,
            "meta": {
                "first_page_url": page_url(0),
                "key": key,
                "next_page_url": page_url(page + 1) if (page + 1) * page_size < len(senders) else None,
                "page": page,
                "page_size": page_size,
                "previous_page_url": page_url(page - 1) if page > 0 else None,
                "url": page_url(page),
            },
        }

    def _sender_resource(self, sender: Sender, service_sid: str, list_url: str) -> dict[str, Any]:
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(sender.created))
        resource: dict[str, Any] = {
            "account_sid": self.startup_config.account_sid,
            "service_sid": service_sid,
            "sid": sender.sid,
            "date_created": created,
            "date_updated": created,
            "url": f"{list_url}/{sender.sid}",
        }
        if sender.kind is SenderKind.ALPHA:
            resource.update(alpha_sender=sender.address, capabilities=["SMS"])
        elif sender.kind is SenderKind.SHORT_CODE:
            resource.update(short_code=sender.address, country_code="US", capabilities=["SMS", "MMS"])
        else:
            # Long code or toll-free: Twilio says which by the number itself (toll-free area codes).
            resource.update(phone_number=sender.address, country_code="US", capabilities=["SMS", "MMS"])
        return resource

    async def unknown_resource(self, request: web.Request) -> web.Response:
        message = f"The requested resource {request.path} was not found"
        return self._json(404, error_document(404, 20404, message))

    # --- control endpoints (no auth)

    async def reset(self, request: web.Request) -> web.Response:
        """Forget every message, counter and scheduled callback; restore the startup configuration, pool and clock."""
        self.store.clear()
        self.deleted.clear()
        self.callbacks.reset()
        self.clock.reset()
        self.config = dataclasses.replace(self.startup_config)
        self.pool.configure(self.startup_config.pool, fresh=True)
        self._reset_counters()
        return self._json(200, self._config_document(), twilio_headers=False)

    async def configure(self, request: web.Request) -> web.Response:
        try:
            changes = await request.json()
        except ValueError:
            return self._json(400, {"error": "expected a JSON object"}, twilio_headers=False)
        if not isinstance(changes, dict):
            return self._json(400, {"error": "expected a JSON object"}, twilio_headers=False)
        problems = []
        for name, value in changes.items():
            if name not in RUNTIME_OPTIONS:
                problems.append(f"unknown option {name!r}; known: {', '.join(RUNTIME_OPTIONS)}")
                continue
            types, lowest, highest = RUNTIME_OPTIONS[name]
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                problems.append(f"{name} must be {' or '.join(t.__name__ for t in types)}")
            elif isinstance(value, int | float) and not _within(value, lowest, highest):
                upper = "any" if highest is None else highest
                problems.append(f"{name} must be between {lowest} and {upper}")
        if problems:
            return self._json(400, {"error": "; ".join(problems)}, twilio_headers=False)
        self.config = dataclasses.replace(self.config, **changes)
        return self._json(200, self._config_document(), twilio_headers=False)

    async def show_config(self, request: web.Request) -> web.Response:
        return self._json(200, self._config_document(), twilio_headers=False)

    def _config_document(self) -> dict[str, Any]:
        return {name: getattr(self.config, name) for name in RUNTIME_OPTIONS}

    async def received_messages(self, request: web.Request) -> web.Response:
        """What was sent to one number (`?to=`, required), oldest first: the body as sent and as Twilio stores it,
        segments, the optional parameters, and where the message is now (status, sender, times)."""
        to = request.query.get("to")
        if not to:
            return self._json(400, {"message": "?to= is required"}, twilio_headers=False)
        now = self.store.now()
        items = []
        for index in self.store.select(to=to):
            if index in self.deleted:
                continue
            record = self.store.records[index]
            items.append(
                {
                    "sid": self.store.sid(index),
                    "to": record.to,
                    "body": record.sent_body or record.body,
                    "stored_body": record.body,
                    "num_segments": record.segments,
                    "num_media": record.num_media,
                    "parameters": record.options or {},
                    "status": record.status_after(record.steps_done(now)),
                    "from": record.sending_number(),
                    "created_at": record.created,
                    "sent_at": record.date_sent(now),
                }
            )
        return self._json(200, {"messages": items}, twilio_headers=False)

    async def show_pool(self, request: web.Request) -> web.Response:
        return self._json(200, self.pool.summary(), twilio_headers=False)

    async def configure_pool(self, request: web.Request) -> web.Response:
        """Change the sender pool: the keys given replace the current ones (`senders` starts new, empty queues)."""
        try:
            document = await request.json()
        except ValueError:
            return self._json(400, {"error": "expected a JSON object"}, twilio_headers=False)
        try:
            config = updated_pool_config(self.pool.config, document)
        except PoolConfigError as error:
            return self._json(400, {"error": str(error)}, twilio_headers=False)
        self.pool.configure(config, new_senders="senders" in document)
        return self._json(200, self.pool.summary(), twilio_headers=False)

    async def transmissions(self, request: web.Request) -> web.Response:
        """What left the senders' queues in `[since, until]` (epoch seconds on the simulator clock; until: now)."""
        try:
            since = float(request.query["since"]) if "since" in request.query else None
            until = float(request.query["until"]) if "until" in request.query else None
        except ValueError:
            return self._json(400, {"error": "since and until are epoch seconds"}, twilio_headers=False)
        return self._json(200, self.pool.transmissions(since, until), twilio_headers=False)

    def _clock_document(self) -> dict[str, Any]:
        now = self.clock.now()
        return {"now": now, "offset_seconds": self.clock.offset, "utc": datetime.fromtimestamp(now, UTC).isoformat()}

    async def show_clock(self, request: web.Request) -> web.Response:
        return self._json(200, self._clock_document(), twilio_headers=False)

    async def move_clock(self, request: web.Request) -> web.Response:
        """`{"advance_seconds": n}` moves the clock forward; `{"offset_seconds": x}` sets its offset from the wall
        clock (backwards only while no message is stored, right after a reset)."""
        try:
            document = await request.json()
        except ValueError:
            document = None
        if not isinstance(document, dict) or len(document) != 1:
            return self._json(400, {"error": "expected {advance_seconds} or {offset_seconds}"}, twilio_headers=False)
        ((name, value),) = document.items()
        if name not in ("advance_seconds", "offset_seconds") or not isinstance(value, int | float):
            return self._json(400, {"error": "expected {advance_seconds} or {offset_seconds}"}, twilio_headers=False)
        try:
            if name == "advance_seconds":
                self.clock.advance(float(value))
            else:
                self.clock.set_offset(float(value), allow_backwards=not self.store.records)
        except ValueError as error:
            return self._json(409, {"error": str(error)}, twilio_headers=False)
        return self._json(200, self._clock_document(), twilio_headers=False)

    async def summary(self, request: web.Request) -> web.Response:
        store = self.store
        callbacks = self.callbacks.counters.as_dict()
        callbacks["pending"] = self.callbacks.pending
        document = {
            "requests": self.requests,
            "accepted": self.accepted,
            "rejected_429": self.rejected_429,
            "errors_by_code": {str(code): count for code, count in sorted(self.errors_by_code.items())},
            "per_status_code": {str(status): count for status, count in sorted(self.per_status_code.items())},
            "max_in_flight": self.max_in_flight,
            "in_flight": self.in_flight,
            "read_requests": self.read_requests,
            "stored_messages": len(store.records),
            "deleted_messages": len(self.deleted),
            "distinct_recipients": store.distinct_recipients,
            "duplicate_count": len(store.records) - store.distinct_recipients,
            "duplicate_recipient_count": store.duplicate_recipient_count,
            "duplicate_recipients": list(store.duplicate_recipients),
            "callbacks": callbacks,
            "config": self._config_document(),
            "pool": self.pool.summary(),
        }
        return self._json(200, document, twilio_headers=False)


SIMULATOR_KEY = web.AppKey("simulator", Simulator)


def create_app(config: SimulatorConfig) -> web.Application:
    """The aiohttp application; the callback pool starts and stops with it."""
    simulator = Simulator(config)
    app = web.Application()
    app[SIMULATOR_KEY] = simulator
    account = "/2010-04-01/Accounts/{account_sid}"
    app.router.add_post(f"{account}/Messages.json", simulator.create_message)
    app.router.add_get(f"{account}/Messages.json", simulator.list_messages)
    app.router.add_get(account + "/Messages/{sid}.json", simulator.fetch_message)
    app.router.add_delete(account + "/Messages/{sid}.json", simulator.delete_message)
    app.router.add_route("*", "/2010-04-01/{tail:.*}", simulator.unknown_resource)
    # Messaging API v1 (messaging.twilio.com in real life): the Messaging Service's sender pool.
    app.router.add_get(
        "/v1/Services/{service_sid}/{sender_list:PhoneNumbers|ShortCodes|AlphaSenders}", simulator.list_pool_senders
    )
    app.router.add_route("*", "/v1/{tail:.*}", simulator.unknown_resource)
    app.router.add_post("/_simulator/reset", simulator.reset)
    app.router.add_post("/_simulator/config", simulator.configure)
    app.router.add_get("/_simulator/config", simulator.show_config)
    app.router.add_get("/_simulator/summary", simulator.summary)
    app.router.add_get("/_simulator/messages", simulator.received_messages)
    app.router.add_get("/_simulator/pool", simulator.show_pool)
    app.router.add_post("/_simulator/pool", simulator.configure_pool)
    app.router.add_get("/_simulator/transmissions", simulator.transmissions)
    app.router.add_get("/_simulator/clock", simulator.show_clock)
    app.router.add_post("/_simulator/clock", simulator.move_clock)

    async def start_callbacks(app: web.Application) -> None:
        await simulator.callbacks.start()

    async def stop_callbacks(app: web.Application) -> None:
        await simulator.callbacks.stop()

    app.on_startup.append(start_callbacks)
    app.on_cleanup.append(stop_callbacks)
    return app
