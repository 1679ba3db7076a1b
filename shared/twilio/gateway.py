"""The only module that talks to Twilio to send: one request per message, and what its answer means for us.

Every answer becomes one of four outcomes. `Accepted`: Twilio has the message (a SID). `Retryable`: Twilio
never processed the request (20429, or the connection failed before the request was sent): safe to send again.
`Permanent`: Twilio refused this message and would again (invalid number, STOP, authentication...).
`Ambiguous`: the request left but no usable answer came back (timeout, 5xx, connection reset), so Twilio may
or may not have it; such a message is reconciled against Twilio's message list (`messages_to`: every message
to the number, queued ones included), never resent blindly.
Which outcome an error code gets is decided by the table in shared.twilio.error_codes, not here.

The official library's `AsyncTwilioHttpClient` is used for throughput, without its `max_retries` (it resends a
POST after any 5xx, which can send an SMS twice) and with our own `request`: it rewrites the API host (the
simulator, a proxy) and enforces the timeout (the library hands aiohttp `timeout=None`, which disables it).
"""

from __future__ import annotations

import asyncio
import base64
import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, assert_never

import aiohttp
from twilio.base import values
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from shared.platform.settings import TWILIO_DEFAULT_API_BASE_URL, Settings
from shared.twilio.accounts import TwilioAccount, live_account
from shared.twilio.error_codes import SendErrorBehaviour, send_error_behaviour

logger = logging.getLogger(__name__)

# The reason of every 429 / 20429 outcome: metrics count rate limiting by it (shared.platform.metrics).
RATE_LIMITED_REASON = "too many requests"
# Reading a number's messages: Twilio's largest page, and how many pages before the answer is called incomplete.
LOOKUP_PAGE_SIZE = 1000
LOOKUP_MAX_PAGES = 50


@dataclass(frozen=True, slots=True)
class Accepted:
    sid: str
    status: str


@dataclass(frozen=True, slots=True)
class Retryable:
    reason: str


@dataclass(frozen=True, slots=True)
class Permanent:
    code: int | None
    message: str


@dataclass(frozen=True, slots=True)
class Ambiguous:
    reason: str


SendOutcome = Accepted | Retryable | Permanent | Ambiguous


@dataclass(frozen=True, slots=True)
class TwilioMessage:
    """A message as Twilio's list shows it: enough to reconcile a send whose answer we never saw."""

    sid: str
    to: str
    body: str | None
    status: str | None
    date_created: datetime | None
    date_sent: datetime | None = None  # None while the message waits in its sender's queue at Twilio
    messaging_service_sid: str | None = None
    direction: str | None = None


class Deletion(enum.StrEnum):
    DELETED = "deleted"  # Twilio no longer holds the message's body and number
    NOT_FOUND = "not_found"  # Twilio has no such message (deleted before, or never there): nothing left to delete
    FAILED = "failed"  # still there (Twilio refused, for a message still being delivered, or did not answer)


@dataclass(frozen=True, slots=True)
class DeletionOutcome:
    sid: str
    result: Deletion
    reason: str | None = None


class TwilioLookupError(RuntimeError):
    """Twilio's message list could not be read this time (network, timeout, 5xx): try again later."""


class _RedirectingAsyncHttpClient(AsyncTwilioHttpClient):
    """twilio-python's aiohttp client, aimed at `base_url`, with a real timeout and no retries of its own."""

    def __init__(self, base_url: str, timeout_seconds: float) -> None:
        # pool_connections=False: the parent would build its ClientSession here, outside any event loop.
        super().__init__(pool_connections=False, timeout=timeout_seconds)
        self.base_url = base_url.rstrip("/")
        self.client_timeout = aiohttp.ClientTimeout(
            total=timeout_seconds,
            # A connect that times out never sent the request: a separate, shorter limit tells it apart.
            sock_connect=max(min(timeout_seconds / 2, 5.0), 0.1),
        )
        # No limit on connections here: the Redis semaphore caps requests in flight, and queueing for a pooled
        # connection would eat into the total timeout and turn a never-sent request into an ambiguous one.
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300))
        self._auth_cache: tuple[tuple[str, str], str] | None = None

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        if url.startswith(TWILIO_DEFAULT_API_BASE_URL):
            url = self.base_url + url[len(TWILIO_DEFAULT_API_BASE_URL) :]
        client_timeout = self.client_timeout if timeout is None else aiohttp.ClientTimeout(total=timeout)
        assert self.session is not None
        if auth is not None:
            headers = {**(headers or {}), "Authorization": self._authorization(auth)}
        # No request/response logging here: the library's logs headers and URLs at INFO for every message.
        async with self.session.request(
            method.upper(),
            url,
            params=params,  # type: ignore[arg-type]
            data=data,
            headers=headers,
            timeout=client_timeout,
            allow_redirects=allow_redirects,
        ) as response:
            text = await response.text()
            return Response(response.status, text, response.headers)

    def _authorization(self, auth: tuple[str, str]) -> str:
        # Encoded once, not per request.
        if self._auth_cache is None or self._auth_cache[0] != auth:
            encoded = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            self._auth_cache = (auth, f"Basic {encoded}")
        return self._auth_cache[1]


class TwilioGateway:
    """Sends one message through Twilio's Messages API and maps the answer to a `SendOutcome`.

    Create it inside the event loop that will use it (`await TwilioGateway.open(settings)`), once per process,
    and `close()` it on shutdown.
    """

    def __init__(
        self,
        account_sid: str,
        credentials: tuple[str, str],
        messaging_service_sid: str,
        api_base_url: str = TWILIO_DEFAULT_API_BASE_URL,
        timeout_seconds: float = 15.0,
    ) -> None:
        """`credentials`: HTTP basic auth for Twilio, (Account SID, Auth Token) or (API Key SID, its secret)."""
        self.messaging_service_sid = messaging_service_sid
        self.http_client = _RedirectingAsyncHttpClient(api_base_url, timeout_seconds)
        username, password = credentials
        # environment={}: the library would otherwise read TWILIO_* from os.environ; settings are the source.
        self.client = Client(username, password, account_sid=account_sid, http_client=self.http_client, environment={})

    @classmethod
    async def open(cls, settings: Settings, account: TwilioAccount | None = None) -> TwilioGateway:
        """A gateway to `account` (default: the live one, with the API Key when TWILIO_API_KEY_SID/SECRET are set,
        else the Account SID and Auth Token)."""
        account = account or live_account(settings)
        return cls(
            account.account_sid,
            account.credentials,
            account.messaging_service_sid,
            api_base_url=account.api_base_url,
            timeout_seconds=settings.twilio_request_timeout_seconds,
        )

    async def close(self) -> None:
        await self.http_client.close()

    async def send(
        self,
        to: str,
        body: str,
        status_callback: str | None = None,
        *,
        media_urls: Sequence[str] | None = None,
        validity_period: int | None = None,
        smart_encoded: bool = False,
    ) -> SendOutcome:
        """Ask Twilio to send `body` to `to` once; never raises for anything Twilio or the network does.

        `media_urls` become repeated `MediaUrl` (an MMS; `body` may then be empty), `validity_period` is
        `ValidityPeriod` in seconds, `smart_encoded` sends `SmartEncoded=true`.
        """
        options: dict[str, Any] = {}
        if media_urls:
            options["media_url"] = list(media_urls)
        if validity_period is not None:
            options["validity_period"] = validity_period
        if smart_encoded:
            options["smart_encoded"] = True
        try:
            message = await self.client.messages.create_async(
                to=to,
                body=body if body else values.unset,
                messaging_service_sid=self.messaging_service_sid,
                status_callback=status_callback,
                **options,
            )
        except TwilioRestException as error:
            return outcome_of_error_response(error)
        except aiohttp.ConnectionTimeoutError:
            return Retryable("connect timeout")
        except aiohttp.ClientConnectorError as error:
            # Raised while opening the connection (refused, unreachable, DNS): the request was never sent.
            return Retryable(f"connection failed: {error.os_error.strerror or error.os_error}")
        except TimeoutError:
            return Ambiguous("timeout waiting for Twilio's answer")
        except (aiohttp.ClientError, OSError) as error:
            return Ambiguous(f"connection lost before Twilio's answer: {type(error).__name__}")
        except (TwilioException, ValueError, KeyError) as error:
            # A 2xx we could not read: Twilio probably has the message, so reconcile it.
            return Ambiguous(f"unreadable answer: {type(error).__name__}")
        if not message.sid:
            return Ambiguous("accepted without a SID")
        return Accepted(sid=message.sid, status=str(message.status or "accepted"))

    async def messages_to(
        self, to: str, page_size: int = LOOKUP_PAGE_SIZE, max_pages: int = LOOKUP_MAX_PAGES
    ) -> list[TwilioMessage]:
        """Every message Twilio has for `to`, queued ones included: `GET Messages.json?To=`, every page.

        No DateSent filter, on purpose: a message still waiting in its sender's queue has no `date_sent`, and
        Twilio filters DateSent by whole days on that field, so any DateSent filter hides exactly the messages a
        crash leaves in doubt. Raises TwilioLookupError when a page cannot be read or the number has more than
        `max_pages` pages: an incomplete answer must never be taken for "Twilio does not have it".
        """
        found: list[TwilioMessage] = []
        try:
            page: Any = await self.client.messages.page_async(to=to, page_size=page_size)
            pages = 1
            while True:
                found.extend(_listed_message(record, to) for record in page if record.sid)
                if not page.next_page_url:
                    return found
                if pages >= max_pages:
                    raise TwilioLookupError(f"more than {max_pages} pages of messages to this number")
                page = await page.next_page_async()
                pages += 1
        except TwilioRestException as error:
            raise TwilioLookupError(f"Twilio answered {error.status} (code {error.code})") from error
        except (aiohttp.ClientError, OSError, TwilioException, ValueError) as error:
            raise TwilioLookupError(f"listing messages failed: {type(error).__name__}") from error

    async def delete_message(self, sid: str) -> DeletionOutcome:
        """`DELETE Messages/{sid}.json`: Twilio erases the message's body and number; never raises."""
        try:
            deleted = await self.client.messages(sid).delete_async()
        except TwilioRestException as error:
            if int(error.status) == 404:
                return DeletionOutcome(sid, Deletion.NOT_FOUND)
            return DeletionOutcome(sid, Deletion.FAILED, f"Twilio answered {error.status} (code {error.code})")
        except (aiohttp.ClientError, OSError, TimeoutError, TwilioException) as error:
            return DeletionOutcome(sid, Deletion.FAILED, f"no answer from Twilio: {type(error).__name__}")
        return DeletionOutcome(sid, Deletion.DELETED if deleted else Deletion.FAILED)


def _listed_message(record: Any, to: str) -> TwilioMessage:
    return TwilioMessage(
        sid=record.sid,
        to=str(record.to or to),
        body=record.body,
        status=None if record.status is None else str(record.status),
        date_created=record.date_created,
        date_sent=record.date_sent,
        messaging_service_sid=record.messaging_service_sid,
        direction=None if record.direction is None else str(record.direction),
    )


# Deletions of one erasure request in flight at once: a person has a handful of messages, and these requests share
# the account's concurrency with sending.
DELETION_CONCURRENCY = 4


def delete_messages(settings: Settings, sids: Sequence[str]) -> list[DeletionOutcome]:
    """Delete these messages at Twilio (from synchronous code: the API's erasure request), in `sids` order."""

    async def delete_all() -> list[DeletionOutcome]:
        gateway = await TwilioGateway.open(settings)
        limit = asyncio.Semaphore(DELETION_CONCURRENCY)

        async def delete_one(sid: str) -> DeletionOutcome:
            async with limit:
                return await gateway.delete_message(sid)

        try:
            return list(await asyncio.gather(*(delete_one(sid) for sid in sids)))
        finally:
            await gateway.close()

    return asyncio.run(delete_all()) if sids else []


def outcome_of_error_response(error: TwilioRestException) -> SendOutcome:
    """The outcome of Twilio's error answer to a send request, as the error-code table decides it."""
    status = int(error.status)
    code = int(error.code) if error.code is not None else None
    behaviour = send_error_behaviour(code, status)
    match behaviour:
        case SendErrorBehaviour.RETRY_WITH_BACKOFF:
            # Every "send again later" answer is Twilio's rate limiting (429 / 20429): metrics count it by this reason.
            return Retryable(f"{RATE_LIMITED_REASON} ({code or status})")
        case SendErrorBehaviour.AMBIGUOUS:
            return Ambiguous(f"Twilio answered HTTP {status}")
        case SendErrorBehaviour.PERMANENT | SendErrorBehaviour.OPT_OUT:
            # An opt-out is a permanent refusal; the chunk's recorder adds the number to the opt-out list by its code.
            return Permanent(code=code if code is not None else status, message=str(error.msg or f"HTTP {status}"))
        case _:
            assert_never(behaviour)
