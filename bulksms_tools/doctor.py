"""`bulksms doctor`: the checks a first broadcast needs, each with what to fix when it fails.

Where things are comes from the settings, else from the `bulksms up` running on the data folder (its state file
names the embedded PostgreSQL, Redis and the Twilio simulator). Every check is read-only.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from bulksms_tools.stack import SIMULATOR_CREDENTIALS_FILE_NAME, data_directory, mask_url, read_stack_state
from shared.platform.db import sqlalchemy_url
from shared.platform.settings import TWILIO_DEFAULT_API_BASE_URL, Settings
from shared.sending.pacing import PacingPolicy
from shared.sending.sweeper import SWEEP_HEARTBEAT_KEY

PING_TIMEOUT_SECONDS = 2.0
CONNECT_TIMEOUT_SECONDS = 5


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


@dataclass
class Environment:
    """Where the pieces are: the settings, completed from a running `bulksms up`."""

    settings: Settings
    api_url: str
    api_key: str | None
    stack_state: dict[str, Any] | None
    simulator: bool  # the Twilio endpoint is the simulator started by `bulksms up`

    @property
    def database_url(self) -> str | None:
        return self.settings.database_url

    @property
    def redis_url(self) -> str | None:
        return self.settings.redis_url


def discover(settings: Settings, api_url: str, api_key: str | None) -> Environment:
    state = read_stack_state(data_directory(settings))
    simulator = False
    if state is not None:
        settings = settings.replace(
            database_url=settings.database_url or state.get("database_url"),
            redis_url=settings.redis_url or state.get("redis_url"),
        )
        credentials_path = data_directory(settings) / SIMULATOR_CREDENTIALS_FILE_NAME
        if state.get("simulator_url") and not settings.twilio_account_sid and credentials_path.is_file():
            import json

            stored = json.loads(credentials_path.read_text())
            settings = settings.replace(
                twilio_account_sid=stored.get("account_sid"),
                twilio_auth_token=stored.get("auth_token"),
                twilio_messaging_service_sid=stored.get("messaging_service_sid"),
                twilio_api_base_url=state["simulator_url"],
                public_base_url=settings.public_base_url or state.get("api_url"),
            )
            simulator = True
    return Environment(settings, api_url, api_key, state, simulator)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


# --- the checks ---------------------------------------------------------------------------------------------


def check_postgres(environment: Environment) -> list[Check]:
    url = environment.database_url
    name = "PostgreSQL"
    if not url:
        return [
            Check(
                name,
                False,
                "DATABASE_URL is unset and no `bulksms up` is running on this data folder",
                "start the stack with `bulksms up`, or set DATABASE_URL",
            )
        ]
    engine = create_engine(sqlalchemy_url(url), connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        from shared.platform.migrate import head_revision, is_at_head

        at_head = is_at_head(engine)
    except SQLAlchemyError as error:
        return [
            Check(
                name,
                False,
                f"cannot connect to {mask_url(url)}: {_first_line(getattr(error, 'orig', None) or error)}",
                "start PostgreSQL or correct DATABASE_URL",
            ),
            Check("migrations", False, "not checked: PostgreSQL is unreachable", "fix PostgreSQL first"),
        ]
    finally:
        engine.dispose()
    return [
        Check(name, True, f"reachable at {mask_url(url)}"),
        Check(
            "migrations",
            at_head,
            f"schema at head ({head_revision()})" if at_head else "the schema is not at the latest revision",
            "run `bulksms migrate`",
        ),
    ]


def _redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_SECONDS, socket_timeout=5)


def check_redis(environment: Environment) -> Check:
    url = environment.redis_url
    if not url:
        return Check(
            "Redis",
            False,
            "REDIS_URL is unset and no `bulksms up` is running on this data folder",
            "start the stack with `bulksms up`, or set REDIS_URL",
        )
    client = _redis_client(url)
    try:
        client.ping()
    except redis.RedisError as error:
        return Check(
            "Redis", False, f"cannot reach {mask_url(url)}: {_first_line(error)}", "start Redis or fix REDIS_URL"
        )
    finally:
        client.close()
    return Check("Redis", True, f"reachable at {mask_url(url)}")


def twilio_client(settings: Settings) -> Any:
    """A synchronous twilio `Client` aimed at TWILIO_API_BASE_URL (every *.twilio.com host rewritten to it)."""
    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    base_url = settings.twilio_api_base_url.rstrip("/")

    class RedirectingHttpClient(TwilioHttpClient):
        def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            if base_url != TWILIO_DEFAULT_API_BASE_URL:
                parts = urlsplit(url)
                if parts.hostname and parts.hostname.endswith(".twilio.com"):
                    url = base_url + url[len(f"{parts.scheme}://{parts.netloc}") :]
            kwargs["timeout"] = kwargs.get("timeout") or 10
            return super().request(method, url, *args, **kwargs)

    # The Auth Token when there is one: a standard API Key may not read the account resource checked below.
    username, password = (
        (settings.twilio_account_sid, settings.twilio_auth_token)
        if settings.twilio_auth_token
        else settings.twilio_rest_credentials or (None, None)
    )
    return Client(
        username,
        password,
        account_sid=settings.twilio_account_sid,
        http_client=RedirectingHttpClient(),
        environment={},
    )


def check_twilio(environment: Environment) -> list[Check]:
    from twilio.base.exceptions import TwilioException, TwilioRestException

    settings = environment.settings
    where = "the simulator" if environment.simulator else settings.twilio_api_base_url
    if not settings.twilio_configured:
        missing = [
            variable
            for variable, value in (
                ("TWILIO_ACCOUNT_SID", settings.twilio_account_sid),
                ("TWILIO_AUTH_TOKEN", settings.twilio_auth_token),
                ("TWILIO_MESSAGING_SERVICE_SID", settings.twilio_messaging_service_sid),
            )
            if not value
        ]
        return [
            Check(
                "Twilio credentials",
                False,
                f"not set: {', '.join(missing)} (and no `bulksms up` simulator running)",
                "set them in .env, or leave all three empty and run `bulksms up` to use the simulator",
            )
        ]
    client = twilio_client(settings)
    checks: list[Check] = []
    try:
        account = client.api.v2010.accounts(settings.twilio_account_sid).fetch()
        checks.append(
            Check(
                "Twilio credentials", True, f"account {account.sid} ({account.status or 'status unknown'}) at {where}"
            )
        )
    except TwilioRestException as error:
        if error.status in (401, 403):
            return [
                Check(
                    "Twilio credentials",
                    False,
                    f"{where} refused them (HTTP {error.status})",
                    "check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN",
                )
            ]
        if error.status != 404 or settings.twilio_api_base_url == TWILIO_DEFAULT_API_BASE_URL:
            return [
                Check(
                    "Twilio credentials",
                    False,
                    f"fetching the account failed: HTTP {error.status} {error.msg}",
                    "check TWILIO_ACCOUNT_SID",
                )
            ]
        checks.append(_credentials_by_message_list(client, where))
    except (TwilioException, requests.RequestException, OSError) as error:
        return [
            Check(
                "Twilio credentials",
                False,
                f"cannot reach {settings.twilio_api_base_url}: {_first_line(error)}",
                "check TWILIO_API_BASE_URL and the network",
            )
        ]
    checks.append(_messaging_service(client, settings, environment.simulator))
    return checks


def _credentials_by_message_list(client: Any, where: str) -> Check:
    """Endpoints without the account resource (the simulator): an authenticated read of the message list."""
    from twilio.base.exceptions import TwilioException, TwilioRestException

    try:
        client.messages.list(limit=1)
    except TwilioRestException as error:
        return Check(
            "Twilio credentials",
            False,
            f"{where} refused a read of the message list (HTTP {error.status})",
            "check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN",
        )
    except (TwilioException, requests.RequestException, OSError) as error:
        return Check("Twilio credentials", False, f"cannot reach {where}: {_first_line(error)}", "")
    return Check(
        "Twilio credentials",
        True,
        f"accepted by {where} (it has no account resource: checked by reading the message list)",
    )


def _messaging_service(client: Any, settings: Settings, simulator: bool) -> Check:
    from twilio.base.exceptions import TwilioException, TwilioRestException

    sid = settings.twilio_messaging_service_sid
    name = "Messaging Service"
    try:
        service = client.messaging.v1.services(sid).fetch()
        senders = client.messaging.v1.services(sid).phone_numbers.list(limit=1)
    except TwilioRestException as error:
        if error.status == 404 and settings.twilio_api_base_url != TWILIO_DEFAULT_API_BASE_URL:
            what = "the simulator" if simulator else settings.twilio_api_base_url
            return Check(name, True, f"{sid}: not checkable against {what} (it has no Messaging Services API)")
        if error.status == 404:
            return Check(name, False, f"{sid} does not exist in this account", "check TWILIO_MESSAGING_SERVICE_SID")
        return Check(name, False, f"fetching {sid} failed: HTTP {error.status} {error.msg}", "")
    except (TwilioException, requests.RequestException, OSError) as error:
        return Check(name, False, f"cannot reach Twilio: {_first_line(error)}", "")
    if not senders:
        return Check(
            name,
            False,
            f"{sid} ({service.friendly_name}) has no phone numbers",
            "add a sender to the Messaging Service in the Twilio console (Sender Pool)",
        )
    return Check(name, True, f"{sid} ({service.friendly_name}) has senders")


def _is_private_host(host: str) -> bool:
    if host in ("localhost",) or host.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False  # unknown here: Twilio may still resolve it
    for address in addresses:
        ip = ipaddress.ip_address(str(address).split("%")[0])
        if ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_unspecified:
            return True
    return False


def check_public_base_url(environment: Environment) -> Check:
    settings = environment.settings
    url = settings.public_base_url
    real_twilio = settings.twilio_api_base_url.rstrip("/") == TWILIO_DEFAULT_API_BASE_URL
    name = "PUBLIC_BASE_URL"
    if not real_twilio:
        return Check(name, True, f"{url or 'unset'} (not checked: the workers do not send to api.twilio.com)")
    if not url:
        return Check(
            name, False, "unset: Twilio cannot deliver status callbacks", "set it to your public https address"
        )
    parts = urlsplit(url)
    if parts.scheme != "https":
        return Check(name, False, f"{url} is not https", "use the https address Twilio reaches you at")
    if not parts.hostname or _is_private_host(parts.hostname):
        return Check(
            name,
            False,
            f"{url} is a private or loopback address Twilio cannot reach",
            "set it to a public address (a tunnel such as ngrok locally)",
        )
    return Check(name, True, f"{url} is public https")


# Throughput per sender Twilio documents by default (segments/s); 10DLC long codes depend on the campaign.
SHORT_CODE_SEGMENTS_PER_SECOND = 100.0
TOLL_FREE_SEGMENTS_PER_SECOND = 3.0
TOLL_FREE_PREFIXES = ("+1800", "+1833", "+1844", "+1855", "+1866", "+1877", "+1888")


@dataclass(frozen=True)
class SenderPool:
    short_codes: int = 0
    toll_free: int = 0
    us_long_codes: int = 0
    other_long_codes: int = 0
    alpha_senders: int = 0

    @property
    def known_segments_per_second(self) -> float:
        """Short codes and toll-free numbers add up; the others have no rate we can know from here."""
        return self.short_codes * SHORT_CODE_SEGMENTS_PER_SECOND + self.toll_free * TOLL_FREE_SEGMENTS_PER_SECOND

    def describe(self) -> str:
        parts = []
        if self.short_codes:
            parts.append(f"{self.short_codes} short code(s) x {SHORT_CODE_SEGMENTS_PER_SECOND:g}")
        if self.toll_free:
            parts.append(f"{self.toll_free} toll-free x {TOLL_FREE_SEGMENTS_PER_SECOND:g}")
        known = f"{' + '.join(parts)} = {self.known_segments_per_second:g} segments/s" if parts else ""
        unknown = []
        if self.us_long_codes:
            unknown.append(
                f"{self.us_long_codes} US long code(s): A2P 10DLC throughput is set per campaign and brand, not per "
                "number, so the rate must come from your campaign (not guessed)"
            )
        if self.other_long_codes or self.alpha_senders:
            unknown.append(
                f"{self.other_long_codes + self.alpha_senders} other sender(s): throughput set per country (not "
                "guessed)"
            )
        return "; ".join(filter(None, [known, *unknown])) or "no senders"


def sender_pool_of(phone_numbers: list[str], short_codes: int, alpha_senders: int) -> SenderPool:
    """Classify a Messaging Service's senders (a phone number's type comes from its number)."""
    toll_free = sum(1 for number in phone_numbers if number.startswith(TOLL_FREE_PREFIXES))
    us = sum(1 for number in phone_numbers if number.startswith("+1") and not number.startswith(TOLL_FREE_PREFIXES))
    return SenderPool(short_codes, toll_free, us, len(phone_numbers) - toll_free - us, alpha_senders)


def check_pacing(environment: Environment) -> Check:
    """The configured pace next to what the Messaging Service's sender pool implies, and whether receipts (the
    queue bound) can work."""
    from twilio.base.exceptions import TwilioException

    settings = environment.settings
    name = "Pacing"
    policy = PacingPolicy.from_settings(settings)
    configured = policy.describe()
    if not settings.twilio_configured:
        return Check(name, True, f"{configured} (sender pool not read: no Twilio credentials)")
    service = twilio_client(settings).messaging.v1.services(settings.twilio_messaging_service_sid)
    try:
        numbers = [sender.phone_number for sender in service.phone_numbers.list()]
        short_codes = len(service.short_codes.list())
        alpha = len(service.alpha_senders.list())
    except (TwilioException, requests.RequestException, OSError) as error:
        return Check(name, True, f"{configured}; the sender pool could not be read: {_first_line(error)}")
    pool = sender_pool_of(numbers, short_codes, alpha)
    detail = f"configured: {configured}. Sender pool: {pool.describe()}"
    implied = pool.known_segments_per_second
    rate = policy.rate
    mixed = sum(1 for count in (pool.short_codes, pool.toll_free, pool.us_long_codes) if count) > 1
    if mixed:
        detail += ". A pool mixing sender types is paced at one rate: set the lowest common one"
    if policy.enabled and rate is not None and implied and not pool.us_long_codes and rate > implied * 1.05:
        return Check(
            name,
            False,
            f"{detail}. The configured rate is above what the pool transmits",
            f"set TWILIO_SEGMENTS_PER_SECOND={implied:g} (the queue bound still protects you meanwhile)",
        )
    if policy.enabled and policy.queue_max_seconds <= 0:
        return Check(
            name,
            True,
            f"{detail}. No PUBLIC_BASE_URL, so no status callbacks: the configured rate alone applies (no queue bound)",
        )
    return Check(name, True, detail)


def check_workers(environment: Environment) -> Check:
    if not environment.redis_url:
        return Check("Celery workers", False, "not checked: no Redis", "fix Redis first")
    from shared.platform.task_queue import create_celery_app

    app = create_celery_app(environment.settings)
    try:
        replies = app.control.ping(timeout=PING_TIMEOUT_SECONDS)
    except Exception as error:  # kombu raises many kinds; all mean "could not ask"
        return Check("Celery workers", False, f"could not ask: {_first_line(error)}", "check REDIS_URL")
    finally:
        app.close()
    if not replies:
        return Check(
            "Celery workers",
            False,
            f"no worker answered a ping within {PING_TIMEOUT_SECONDS:g}s",
            "start one: `bulksms worker` (or `bulksms up`)",
        )
    names = sorted(name for reply in replies for name in reply)
    return Check("Celery workers", True, f"{len(names)} answered: {', '.join(names)}")


def check_beat(environment: Environment, now: Callable[[], float] = time.time) -> Check:
    if not environment.redis_url:
        return Check("Celery beat", False, "not checked: no Redis", "fix Redis first")
    client = _redis_client(environment.redis_url)
    try:
        raw = client.get(SWEEP_HEARTBEAT_KEY)
    except redis.RedisError as error:
        return Check("Celery beat", False, f"cannot read the sweeper heartbeat: {_first_line(error)}", "")
    finally:
        client.close()
    interval = environment.settings.sweeper_interval_seconds
    allowed = max(60.0, 3 * interval + 30)
    if raw is None:
        return Check(
            "Celery beat",
            False,
            "the sweeper never ran (no heartbeat)",
            "start beat: `bulksms beat` (or `bulksms up`), with a worker to run its tasks",
        )
    age = now() - float(raw)
    if age > allowed:
        return Check(
            "Celery beat",
            False,
            f"the sweeper last ran {age:,.0f}s ago (it should every {interval:g}s)",
            "start beat: `bulksms beat`; if it runs, check that a worker consumes the sms.maintenance queue",
        )
    return Check("Celery beat", True, f"the sweeper ran {age:.0f}s ago")


def check_api(environment: Environment) -> list[Check]:
    url = environment.api_url
    try:
        ready = requests.get(f"{url}/readyz", timeout=5)
    except requests.RequestException:
        return [
            Check("API", False, f"nothing answers at {url}", "start it: `bulksms up`, or set BULKSMS_API_URL"),
        ]
    checks = [
        Check(
            "API",
            ready.status_code == 200,
            f"{url} is ready" if ready.status_code == 200 else f"{url}/readyz answers HTTP {ready.status_code}",
            "see its log (.bulksms/logs/api.log under `bulksms up`)",
        )
    ]
    if not environment.api_key:
        checks.append(
            Check(
                "API key",
                False,
                "BULKSMS_API_KEY is unset",
                "create one with `bulksms keys create NAME` and export BULKSMS_API_KEY=bsk_...",
            )
        )
        return checks
    try:
        answer = requests.get(
            f"{url}/v1/broadcasts?limit=1", headers={"Authorization": f"Bearer {environment.api_key}"}, timeout=10
        )
    except requests.RequestException as error:
        checks.append(Check("API key", False, f"could not check: {type(error).__name__}", ""))
        return checks
    if answer.status_code == 401:
        checks.append(
            Check("API key", False, "the API refused BULKSMS_API_KEY (401)", "create a new one: bulksms keys create")
        )
    else:
        checks.append(Check("API key", answer.status_code == 200, f"accepted (HTTP {answer.status_code})", ""))
    return checks


def run_checks(settings: Settings, api_url: str, api_key: str | None) -> list[Check]:
    environment = discover(settings, api_url, api_key)
    redis_check = check_redis(environment)
    checks = [*check_postgres(environment), redis_check]
    checks += check_twilio(environment)
    checks.append(check_public_base_url(environment))
    checks.append(check_pacing(environment))
    if redis_check.ok:
        checks += [check_workers(environment), check_beat(environment)]
    else:
        checks += [
            Check(name, False, "not checked: Redis is unreachable", "fix Redis first")
            for name in ("Celery workers", "Celery beat")
        ]
    checks += check_api(environment)
    return checks
