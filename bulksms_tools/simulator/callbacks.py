"""Status callbacks, posted off the request path by a fixed pool of consumer tasks sharing one ClientSession.

Each message with a StatusCallback becomes one job that walks its outcome's steps (queued → sent →
delivered, or the magic failure) in order: a step is posted when it falls due (the record's `step_time`, on the
simulator clock: "sent" waits until the message leaves its sender's queue), and the next step is scheduled only
once the previous one was delivered or given up, so one message's callbacks never overtake each other. Waiting
jobs sit in one heap by due time behind a single event-loop timer, re-armed when the simulator clock jumps. The
URL fragment carries Twilio's connection overrides (`#rc=2&ct=1000`); it is stripped before posting and signing,
as an HTTP client never sends it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import heapq
import hmac
import itertools
import math
import re
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote_plus

from bulksms_tools.simulator.http_poster import HttpPoster, PostFailure, Target
from bulksms_tools.simulator.store import API_VERSION, MessageStore

DEFAULT_RETRY_COUNT = 1  # Twilio's default `rc`
MAX_RETRY_COUNT = 5
DEFAULT_CONNECT_TIMEOUT_MS = 5000
DEFAULT_READ_TIMEOUT_MS = 15000
DEFAULT_TOTAL_TIMEOUT_MS = 15000
RETRY_DELAY_SECONDS = 0.1
# Failures retried when the URL names no `rp`: connection failures, time-outs, server errors.
DEFAULT_RETRY_POLICY = frozenset({"ct", "rt", "5xx"})
RETRY_POLICY_WORDS = frozenset({"ct", "rt", "4xx", "5xx", "all"})


@dataclass(frozen=True)
class ConnectionOverrides:
    retry_count: int = DEFAULT_RETRY_COUNT
    retry_policy: frozenset[str] = DEFAULT_RETRY_POLICY
    connect_timeout_ms: int = DEFAULT_CONNECT_TIMEOUT_MS
    read_timeout_ms: int = DEFAULT_READ_TIMEOUT_MS
    total_timeout_ms: int = DEFAULT_TOTAL_TIMEOUT_MS

    def retries(self, failure: str) -> bool:
        return "all" in self.retry_policy or failure in self.retry_policy


DEFAULT_OVERRIDES = ConnectionOverrides()


def _bounded_int(text: str, low: int, high: int, default: int) -> int:
    try:
        return min(high, max(low, int(text)))
    except ValueError:
        return default


def split_callback_url(url: str) -> tuple[str, ConnectionOverrides]:
    """The URL Twilio would request (fragment removed) and the connection overrides its fragment carried."""
    address, _, fragment = url.partition("#")
    if not fragment:
        return address, DEFAULT_OVERRIDES
    options = dict(parse_qsl(fragment, keep_blank_values=True))
    policy = frozenset(word for word in options.get("rp", "").split(",") if word in RETRY_POLICY_WORDS)
    return address, ConnectionOverrides(
        retry_count=_bounded_int(options.get("rc", ""), 0, MAX_RETRY_COUNT, DEFAULT_RETRY_COUNT),
        retry_policy=policy or DEFAULT_RETRY_POLICY,
        connect_timeout_ms=_bounded_int(options.get("ct", ""), 100, 10000, DEFAULT_CONNECT_TIMEOUT_MS),
        read_timeout_ms=_bounded_int(options.get("rt", ""), 100, 15000, DEFAULT_READ_TIMEOUT_MS),
        total_timeout_ms=_bounded_int(options.get("tt", ""), 100, 15000, DEFAULT_TOTAL_TIMEOUT_MS),
    )


# Callback values are mostly SIDs and status words that need no escaping; only phone numbers carry "+".
_FORM_SAFE = re.compile(r"[A-Za-z0-9_.~-]*")


def encode_form(parameters: dict[str, str]) -> bytes:
    """application/x-www-form-urlencoded, escaping only the values that need it (urlencode is slow)."""
    return "&".join(
        f"{quote_plus(name)}={value if _FORM_SAFE.fullmatch(value) else quote_plus(value)}"
        for name, value in parameters.items()
    ).encode()


def twilio_signature(auth_token: bytes, url: str, parameters: dict[str, str]) -> str:
    """X-Twilio-Signature: base64 HMAC-SHA1 keyed by the auth token over the URL + sorted names and values."""
    data = url + "".join(name + parameters[name] for name in sorted(parameters))
    return base64.b64encode(hmac.new(auth_token, data.encode(), hashlib.sha1).digest()).decode()


def raw_dlr_done_date(timestamp: float) -> str:
    """The carrier's delivery-report time as Twilio forwards it: YYMMDDhhmm (UTC)."""
    return time.strftime("%y%m%d%H%M", time.gmtime(timestamp))


@dataclass
class CallbackCounters:
    attempted: int = 0  # HTTP attempts, retries included
    delivered: int = 0  # callbacks the receiver answered with 2xx
    failed: int = 0  # callbacks given up after their retries
    retried: int = 0
    dropped: int = 0  # messages whose callbacks were never scheduled: backlog full

    def as_dict(self) -> dict[str, int]:
        return {
            "attempted": self.attempted,
            "delivered": self.delivered,
            "failed": self.failed,
            "retried": self.retried,
            "dropped": self.dropped,
        }


@dataclass
class CallbackJob:
    index: int
    url: str
    target: Target
    overrides: ConnectionOverrides
    generation: int
    step: int = 1
    retries_left: int = 0


class CallbackDispatcher:
    """Schedules and posts status callbacks; `pending` counts messages whose callbacks are not finished."""

    def __init__(self, store: MessageStore, auth_token: str, workers: int = 20, backlog_limit: int = 200_000) -> None:
        self.store = store
        self.auth_token = auth_token.encode()
        self.workers = workers
        self.backlog_limit = backlog_limit
        self.counters = CallbackCounters()
        self.pending = 0
        self.generation = 0
        self._queue: asyncio.Queue[CallbackJob] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._poster = HttpPoster()
        # Jobs waiting for their step to fall due: (due on the simulator clock, tie-breaker, job).
        self._waiting: list[tuple[float, int, CallbackJob]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = math.inf
        store.clock.on_change(self._clock_changed)

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._consume()) for _ in range(self.workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._poster.close()

    def reset(self) -> None:
        """Forget scheduled callbacks: jobs of an older generation are dropped when they come due."""
        self.generation += 1
        self.pending = 0
        self.counters = CallbackCounters()
        self._waiting.clear()
        self._disarm()

    def schedule(self, index: int, callback_url: str) -> None:
        if self.pending >= self.backlog_limit:
            self.counters.dropped += 1
            return
        url, overrides = split_callback_url(callback_url)
        job = CallbackJob(
            index, url, Target.from_url(url), overrides, self.generation, retries_left=overrides.retry_count
        )
        self.pending += 1
        self._schedule_step(job)

    def _schedule_step(self, job: CallbackJob) -> None:
        record = self.store.records[job.index]
        # No callback for the initial status: with an explicit From that is already "queued".
        while job.step <= len(record.outcome.steps) and record.outcome.steps[job.step - 1] == record.initial_status:
            job.step += 1
        if job.step > len(record.outcome.steps):
            self.pending -= 1
            return
        due = record.step_time(job.step)
        if due <= self.store.now():
            self._queue.put_nowait(job)
            return
        heapq.heappush(self._waiting, (due, next(self._order), job))
        if due < self._timer_due:
            self._arm()

    def _arm(self) -> None:
        """One timer, for the earliest waiting job (on the simulator clock, converted to a delay)."""
        self._disarm()
        if not self._waiting:
            return
        due = self._waiting[0][0]
        self._timer_due = due
        delay = max(0.0, due - self.store.now())
        self._timer = asyncio.get_running_loop().call_later(delay, self._release_due)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_due = math.inf

    def _release_due(self) -> None:
        self._timer = None
        self._timer_due = math.inf
        now = self.store.now()
        waiting = self._waiting
        while waiting and waiting[0][0] <= now:
            self._queue.put_nowait(heapq.heappop(waiting)[2])
        self._arm()

    def _clock_changed(self) -> None:
        # The simulator clock jumped: what fell due goes out now, and the timer waits for the new earliest job.
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # not serving yet: nothing is waiting
        self._release_due()

    def _parameters(self, job: CallbackJob) -> dict[str, str]:
        store = self.store
        record = store.records[job.index]
        status = record.outcome.steps[job.step - 1]
        sid = store.sid(job.index)
        parameters = {
            "AccountSid": store.account_sid,
            "ApiVersion": API_VERSION,
            "From": record.sending_number(),
            "MessageSid": sid,
            "MessageStatus": status,
            "SmsSid": sid,
            "SmsStatus": status,
            "To": record.to,
        }
        if record.service_sid:
            parameters["MessagingServiceSid"] = record.service_sid
        if status in ("failed", "undelivered") and record.outcome.error_code is not None:
            parameters["ErrorCode"] = str(record.outcome.error_code)
        if status in ("delivered", "undelivered"):
            parameters["RawDlrDoneDate"] = raw_dlr_done_date(record.step_time(job.step))
        return parameters

    async def _consume(self) -> None:
        while True:
            job = await self._queue.get()
            if job.generation != self.generation:
                continue
            try:
                await self._post(job)
            except Exception:
                self._give_up(job)

    async def _post(self, job: CallbackJob) -> None:
        parameters = self._parameters(job)
        signature = twilio_signature(self.auth_token, job.url, parameters)
        overrides = job.overrides
        self.counters.attempted += 1
        failure: str | None = None
        try:
            status = await self._poster.post(
                job.target,
                encode_form(parameters),
                f"X-Twilio-Signature: {signature}\r\nUser-Agent: TwilioProxy/1.1\r\n",
                connect_timeout=overrides.connect_timeout_ms / 1000,
                read_timeout=overrides.read_timeout_ms / 1000,
                total_timeout=overrides.total_timeout_ms / 1000,
            )
            if status >= 500:
                failure = "5xx"
            elif status >= 400:
                failure = "4xx"
        except PostFailure as error:
            failure = error.kind
        if job.generation != self.generation:
            return
        if failure is None:
            self.counters.delivered += 1
            self._next_step(job)
        elif job.retries_left > 0 and job.overrides.retries(failure):
            job.retries_left -= 1
            self.counters.retried += 1
            asyncio.get_running_loop().call_later(RETRY_DELAY_SECONDS, self._queue.put_nowait, job)
        else:
            self._give_up(job)

    def _give_up(self, job: CallbackJob) -> None:
        if job.generation != self.generation:
            return
        self.counters.failed += 1
        self._next_step(job)  # Twilio still reports the later statuses

    def _next_step(self, job: CallbackJob) -> None:
        job.step += 1
        job.retries_left = job.overrides.retry_count
        self._schedule_step(job)
