"""The one typed settings object, built from the environment and an optional `.env` file.

Nothing else in the project reads `os.environ`: entry points call `load_settings()` once and pass the result
to `create_app(settings)` and `create_celery_app(settings)`, so tests can hand in overrides.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, get_type_hints

from dotenv import dotenv_values

from shared.compliance.phone_numbers import check_country_codes, check_default_region
from shared.twilio.error_codes import DEFAULT_DELIVERY_RETRY_CODES

TWILIO_DEFAULT_API_BASE_URL = "https://api.twilio.com"


UNLIMITED = "unlimited"  # TWILIO_SEGMENTS_PER_SECOND's explicit "no pacing"


def parse_segments_per_second(text: str | None) -> float | None:
    """TWILIO_SEGMENTS_PER_SECOND: a positive number, `unlimited` (math.inf), or unset (None: adaptive)."""
    if text is None or not text.strip():
        return None
    if text.strip().lower() == UNLIMITED:
        return math.inf
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(text)
    return value


class SettingsError(RuntimeError):
    """A setting is missing or malformed; the message names it."""


def _env(name: str, help_text: str, **kwargs: Any) -> Any:
    """A dataclass field that records its environment variable name and a one-line description."""
    return field(metadata={"env": name, "help": help_text}, **kwargs)


@dataclass(frozen=True)
class Settings:
    database_url: str | None = _env(
        "DATABASE_URL", "PostgreSQL URL; unset under `bulksms up`/tests: embedded", default=None
    )
    redis_url: str | None = _env(
        "REDIS_URL", "Redis URL (Celery broker, concurrency cap, callback queue)", default=None
    )
    twilio_account_sid: str | None = _env("TWILIO_ACCOUNT_SID", "Twilio Account SID (AC...)", default=None)
    twilio_auth_token: str | None = _env(
        "TWILIO_AUTH_TOKEN", "Twilio Auth Token; also signs status callbacks", default=None
    )
    twilio_messaging_service_sid: str | None = _env(
        "TWILIO_MESSAGING_SERVICE_SID", "Messaging Service SID (MG...) that picks the sender", default=None
    )
    twilio_auth_token_previous: str | None = _env(
        "TWILIO_AUTH_TOKEN_PREVIOUS",
        "The Auth Token being rotated out: callbacks it signed are still accepted",
        default=None,
    )
    twilio_api_key_sid: str | None = _env(
        "TWILIO_API_KEY_SID", "API Key SID (SK...) for sending, instead of the Auth Token", default=None
    )
    twilio_api_key_secret: str | None = _env("TWILIO_API_KEY_SECRET", "That API Key's secret", default=None)
    twilio_api_base_url: str = _env(
        "TWILIO_API_BASE_URL",
        "Where the workers send; any Twilio-compatible endpoint",
        default=TWILIO_DEFAULT_API_BASE_URL,
    )
    test_twilio_account_sid: str | None = _env(
        "TEST_TWILIO_ACCOUNT_SID", "Account SID of the test account that test keys send through", default=None
    )
    test_twilio_auth_token: str | None = _env(
        "TEST_TWILIO_AUTH_TOKEN", "Its token; signs test receipts, which only ever apply to test messages", default=None
    )
    test_twilio_messaging_service_sid: str | None = _env(
        "TEST_TWILIO_MESSAGING_SERVICE_SID", "Messaging Service SID of the test account", default=None
    )
    test_twilio_base_url: str | None = _env(
        "TEST_TWILIO_BASE_URL", "Where test keys' messages go: the simulator service, never Twilio", default=None
    )
    rate_limit_per_minute: int = _env(
        "RATE_LIMIT_PER_MINUTE", "API requests per key per minute, fleet-wide, unless the key sets its own", default=600
    )
    daily_message_limit: int = _env(
        "DAILY_MESSAGE_LIMIT",
        "Recipients a key may have accepted per UTC day, unless the key sets its own",
        default=1_000_000,
    )
    public_base_url: str | None = _env("PUBLIC_BASE_URL", "Public URL where Twilio reaches our webhooks", default=None)
    twilio_max_concurrency: int = _env(
        "TWILIO_MAX_CONCURRENCY", "Cap on Twilio requests in flight across all workers and hosts", default=100
    )
    twilio_segments_per_second: str | None = _env(
        "TWILIO_SEGMENTS_PER_SECOND",
        "The sender pool's throughput in segments/s, all workers together; unset: adaptive from a conservative "
        "start; 'unlimited': unpaced",
        default=None,
    )
    twilio_queue_max_seconds: float = _env(
        "TWILIO_QUEUE_MAX_SECONDS",
        "Keep what Twilio holds queued under this many seconds of its observed drain rate (needs PUBLIC_BASE_URL)",
        default=60.0,
    )
    circuit_breaker_failure_share: float = _env(
        "CIRCUIT_BREAKER_FAILURE_SHARE",
        "Hold a broadcast when this share of its recent outcomes are 30007/30034/21610/5xx/timeouts (0: never)",
        default=0.25,
    )
    circuit_breaker_min_outcomes: int = _env(
        "CIRCUIT_BREAKER_MIN_OUTCOMES",
        "Outcomes the circuit breaker needs in its window before it may trip",
        default=200,
    )
    twilio_request_timeout_seconds: float = _env(
        "TWILIO_REQUEST_TIMEOUT_SECONDS", "Give up waiting for one Twilio response after this long", default=15.0
    )
    send_chunk_size: int = _env("SEND_CHUNK_SIZE", "Recipients per Celery chunk task", default=100)
    send_window_chunks: int = _env(
        "SEND_WINDOW_CHUNKS",
        "Chunk tasks of one normal-priority broadcast out at once (high: twice, bulk: half); broadcasts sending at "
        "once share the workers in proportion",
        default=4,
    )
    send_retry_max_attempts: int = _env(
        "SEND_RETRY_MAX_ATTEMPTS", "Tries per message on 20429/connection errors before releasing it", default=6
    )
    send_retry_max_seconds: float = _env(
        "SEND_RETRY_MAX_SECONDS", "Time budget per message for those retries", default=60.0
    )
    claim_lease_seconds: int = _env(
        "CLAIM_LEASE_SECONDS", "A claimed message not recorded after this long is reconciled", default=120
    )
    concurrency_lease_seconds: int = _env(
        "CONCURRENCY_LEASE_SECONDS", "A dead worker's concurrency slots free themselves after this long", default=30
    )
    sweeper_interval_seconds: float = _env("SWEEPER_INTERVAL_SECONDS", "How often beat runs the sweeper", default=15.0)
    sweeper_grace_seconds: int = _env(
        "SWEEPER_GRACE_SECONDS", "Pending recipients idle this long with an empty queue are re-enqueued", default=60
    )
    sweeper_busy_grace_seconds: int = _env(
        "SWEEPER_BUSY_GRACE_SECONDS",
        "Pending recipients idle this long are re-enqueued even while sms.send has a backlog",
        default=600,
    )
    max_request_bytes: int = _env(
        "MAX_REQUEST_BYTES",
        "Largest accepted request body (default fits 1,000,000 recipients)",
        default=64 * 1024 * 1024,
    )
    delivery_retry_error_codes: str = _env(
        "DELIVERY_RETRY_ERROR_CODES",
        "Carrier codes in a callback that earn a new attempt (comma-separated)",
        default=",".join(map(str, DEFAULT_DELIVERY_RETRY_CODES)),
    )
    delivery_retry_max_attempts: int = _env(
        "DELIVERY_RETRY_MAX_ATTEMPTS", "Attempts per recipient in all, the first send included", default=3
    )
    delivery_retry_base_seconds: float = _env(
        "DELIVERY_RETRY_BASE_SECONDS",
        "First delivery retry after about this long; x4 each time (1, 4, 16 min)",
        default=60.0,
    )
    status_batch_size: int = _env("STATUS_BATCH_SIZE", "Status callbacks applied to PostgreSQL per batch", default=500)
    status_batch_seconds: float = _env(
        "STATUS_BATCH_SECONDS", "Longest wait to fill a batch of status callbacks", default=0.25
    )
    completion_idle_seconds: int = _env(
        "COMPLETION_IDLE_SECONDS", "A submitted broadcast with no receipt for this long is completed", default=6 * 3600
    )
    retention_days: int = _env(
        "RETENTION_DAYS",
        "Days after completion before numbers, bodies and raw callbacks are removed (0: keep)",
        default=30,
    )
    schedule_min_lead_seconds: float = _env(
        "SCHEDULE_MIN_LEAD_SECONDS", "A broadcast's send_at must be at least this far ahead", default=60.0
    )
    trusted_proxy_count: int = _env(
        "TRUSTED_PROXY_COUNT", "Proxies in front of the webhook whose X-Forwarded-* headers are trusted", default=0
    )
    webhook_port: int = _env("WEBHOOK_PORT", "Where the standalone webhook service listens", default=8001)
    webhook_max_body_bytes: int = _env(
        "WEBHOOK_MAX_BODY_BYTES", "Largest body the Twilio webhooks read; larger ones get 413 unread", default=16 * 1024
    )
    webhook_read_timeout_seconds: float = _env(
        "WEBHOOK_READ_TIMEOUT_SECONDS", "A webhook body not fully received after this long is cut off", default=3.0
    )
    allow_private_callback_urls: bool = _env(
        "ALLOW_PRIVATE_CALLBACK_URLS",
        "Let callback_url and media_urls reach loopback, private and link-local hosts (development only)",
        default=False,
    )
    callback_deadline_seconds: float = _env(
        "CALLBACK_DEADLINE_SECONDS",
        "A completion callback POST (connect, send, response) is cut off after this long in all",
        default=10.0,
    )
    metrics_token: str | None = _env(
        "METRICS_TOKEN",
        "Bearer token for GET /metrics; unset: the API serves it openly, the webhook service not at all",
        default=None,
    )
    smart_encoding: bool = _env(
        "SMART_ENCODING",
        "Send SmartEncoded=true and count segments after Twilio's look-alike replacements",
        default=False,
    )
    price_per_segment: float = _env(
        "PRICE_PER_SEGMENT", "Estimated price of one segment, for cost estimates and max_cost", default=0.0083
    )
    price_table: str = _env(
        "PRICE_TABLE",
        "Prices per country or number prefix overriding PRICE_PER_SEGMENT, e.g. 'GB=0.04,CA=0.0075,+1876=0.05'",
        default="",
    )
    price_currency: str = _env("PRICE_CURRENCY", "Currency of the prices above", default="USD")
    default_region: str | None = _env(
        "DEFAULT_REGION",
        "Country (ISO code) whose national numbers recipients may be written as, unless the broadcast or its "
        "API key names one; unset: international format only",
        default=None,
    )
    allowed_countries: str = _env(
        "ALLOWED_COUNTRIES",
        "Countries (ISO codes, comma-separated) recipients may be in, as Twilio's geo permissions; unset: any",
        default="",
    )
    dashboard_secret_key: str | None = _env(
        "DASHBOARD_SECRET_KEY",
        "Signs dashboard sign-in cookies; unset: derived from TWILIO_AUTH_TOKEN, else random per process",
        default=None,
    )
    clock_offset_seconds: float = _env(
        "CLOCK_OFFSET_SECONDS",
        "Tests only: beat releases daily-cap holds and due retries as if it were this much later",
        default=0.0,
    )
    port: int = _env("PORT", "Where `bulksms up` serves the API and the webhooks", default=8000)
    data_dir: str = _env(
        "BULKSMS_DATA_DIR", "Folder for embedded PostgreSQL/Redis data and beat state", default=".bulksms"
    )
    log_level: str = _env("LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR", default="INFO")
    log_format: str = _env("LOG_FORMAT", "json, text, or auto (text on a terminal, else json)", default="auto")
    api_url: str | None = _env(
        "BULKSMS_API_URL",
        "API the client commands (send, status, ...) talk to; unset: http://127.0.0.1:PORT",
        default=None,
    )
    api_key: str | None = _env("BULKSMS_API_KEY", "API key of the client commands (bulksms keys create)", default=None)

    def require(self, *attribute_names: str) -> None:
        """Fail with a message naming every missing setting among `attribute_names`."""
        missing = [_env_name(name) for name in attribute_names if getattr(self, name) in (None, "")]
        if missing:
            raise SettingsError(
                "missing required setting(s): " + ", ".join(missing) + " (set them in the environment or .env)"
            )

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def clock_now(self) -> datetime | None:
        """The time beat's releases compare with: None (the database's now()) unless CLOCK_OFFSET_SECONDS moves it."""
        if not self.clock_offset_seconds:
            return None
        return datetime.now(UTC) + timedelta(seconds=self.clock_offset_seconds)

    @property
    def delivery_retry_codes(self) -> frozenset[int]:
        return frozenset(int(code) for code in self.delivery_retry_error_codes.replace(" ", "").split(",") if code)

    def _price_entries(self) -> list[tuple[str, float]]:
        entries = []
        for entry in self.price_table.replace(" ", "").split(","):
            if entry:
                key, _, price = entry.partition("=")
                is_prefix = key.startswith("+") and key[1:].isdigit()
                if not is_prefix and not (len(key) == 2 and key.isalpha() and key.isascii()):
                    raise ValueError(key)
                entries.append((key if is_prefix else key.upper(), float(price)))
        return entries

    @property
    def price_by_prefix(self) -> dict[str, float]:
        """PRICE_TABLE's number prefixes: the longest one a number starts with gives its price per segment."""
        return {key: price for key, price in self._price_entries() if key.startswith("+")}

    @property
    def price_by_country(self) -> dict[str, float]:
        """PRICE_TABLE's countries (ISO codes): the price per segment of a number in it, unless a prefix matches."""
        return {key: price for key, price in self._price_entries() if not key.startswith("+")}

    @property
    def allowed_country_codes(self) -> frozenset[str] | None:
        """ALLOWED_COUNTRIES parsed; None when unset (every country)."""
        return check_country_codes(self.allowed_countries) if self.allowed_countries.strip() else None

    @property
    def twilio_configured(self) -> bool:
        """Enough to send: the account, the Messaging Service and REST credentials (Auth Token or API Key)."""
        return bool(self.twilio_account_sid and self.twilio_messaging_service_sid and self.twilio_rest_credentials)

    @property
    def test_account_configured(self) -> bool:
        """Test keys' broadcasts can be sent: the test account and where it is (the simulator) are set."""
        return bool(
            self.test_twilio_account_sid
            and self.test_twilio_auth_token
            and self.test_twilio_messaging_service_sid
            and self.test_twilio_base_url
        )

    @property
    def twilio_rest_credentials(self) -> tuple[str, str] | None:
        """(username, password) for Twilio's REST API: the API Key when one is set (it can be revoked alone),
        else the Account SID and Auth Token; None when neither is complete."""
        if self.twilio_api_key_sid and self.twilio_api_key_secret:
            return self.twilio_api_key_sid, self.twilio_api_key_secret
        if self.twilio_account_sid and self.twilio_auth_token:
            return self.twilio_account_sid, self.twilio_auth_token
        return None

    @property
    def twilio_webhook_tokens(self) -> tuple[str, ...]:
        """The tokens a Twilio signature may be made with: the Auth Token, then the one being rotated out."""
        return tuple(token for token in (self.twilio_auth_token, self.twilio_auth_token_previous) if token)


def _env_name(attribute_name: str) -> str:
    return str(next(f.metadata["env"] for f in fields(Settings) if f.name == attribute_name))


def _convert(raw: str, target_type: Any, env_name: str) -> Any:
    text = raw.strip()
    try:
        if target_type is int:
            return int(text)
        if target_type is float:
            return float(text)
        if target_type is bool:
            if text.lower() in {"1", "true", "yes", "on"}:
                return True
            if text.lower() in {"0", "false", "no", "off"}:
                return False
            raise ValueError(text)
    except ValueError:
        raise SettingsError(f"setting {env_name}={raw!r} is not a valid {target_type.__name__}") from None
    return text or None


def load_settings(environ: Mapping[str, str] | None = None, dotenv_path: str | Path | None = ".env") -> Settings:
    """Build settings from `environ` (default: the process environment) over an optional `.env` file."""
    values: dict[str, str] = {}
    if dotenv_path is not None and Path(dotenv_path).is_file():
        values.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    values.update(os.environ if environ is None else environ)
    hints = get_type_hints(Settings)
    kwargs: dict[str, Any] = {}
    for settings_field in fields(Settings):
        env_name = settings_field.metadata["env"]
        if env_name in values and values[env_name].strip() != "":
            target = hints[settings_field.name]
            base_type = target if target in (int, float, bool) else str
            kwargs[settings_field.name] = _convert(values[env_name], base_type, env_name)
    settings = Settings(**kwargs)
    for name in (
        "twilio_max_concurrency",
        "send_chunk_size",
        "send_window_chunks",
        "port",
        "max_request_bytes",
        "status_batch_size",
        "webhook_max_body_bytes",
        "webhook_read_timeout_seconds",
        "callback_deadline_seconds",
        "twilio_queue_max_seconds",
        "circuit_breaker_min_outcomes",
    ):
        if getattr(settings, name) <= 0:
            raise SettingsError(f"setting {_env_name(name)} must be a positive number")
    if bool(settings.twilio_api_key_sid) != bool(settings.twilio_api_key_secret):
        raise SettingsError("settings TWILIO_API_KEY_SID and TWILIO_API_KEY_SECRET must be set together")
    try:
        parse_segments_per_second(settings.twilio_segments_per_second)
    except ValueError:
        raise SettingsError("setting TWILIO_SEGMENTS_PER_SECOND must be a number above 0 or 'unlimited'") from None
    if not 0 <= settings.circuit_breaker_failure_share <= 1:
        raise SettingsError("setting CIRCUIT_BREAKER_FAILURE_SHARE must be between 0 (never trips) and 1")
    if settings.retention_days < 0:
        raise SettingsError("setting RETENTION_DAYS must be 0 (keep everything) or a number of days")
    try:
        settings.delivery_retry_codes  # noqa: B018 - parsed here so a typo fails at start-up
    except ValueError:
        raise SettingsError("setting DELIVERY_RETRY_ERROR_CODES must be comma-separated numbers") from None
    try:
        settings.price_by_prefix  # noqa: B018 - parsed here so a typo fails at start-up
    except ValueError:
        raise SettingsError("setting PRICE_TABLE must look like 'GB=0.04,+1876=0.05'") from None
    try:
        settings = settings.replace(default_region=check_default_region(settings.default_region))
    except ValueError as error:
        raise SettingsError(f"setting DEFAULT_REGION: {error}") from None
    try:
        settings.allowed_country_codes  # noqa: B018 - parsed here so a typo fails at start-up
    except ValueError as error:
        raise SettingsError(f"setting ALLOWED_COUNTRIES: {error}") from None
    return settings


def settings_documentation() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every setting: feeds `.env.example` checks and the README table."""
    rows = []
    for settings_field in fields(Settings):
        default = "" if settings_field.default in (None, dataclasses.MISSING) else str(settings_field.default)
        rows.append((settings_field.metadata["env"], default, settings_field.metadata["help"]))
    return rows


def settings_to_environment(settings: Settings) -> dict[str, str]:
    """The environment variables that reproduce `settings` in a child process (worker, beat, API)."""
    environment = {}
    for settings_field in fields(Settings):
        value = getattr(settings, settings_field.name)
        if value is not None:
            environment[settings_field.metadata["env"]] = str(value)
    return environment
