"""Logging for every process: one JSON object per line (or plain text in a terminal), with the request, task,
broadcast and message ids of the work in hand, phone numbers masked and secrets redacted.

`configure_logging(settings, service_name)` is called once by each entry point (api.wsgi, api.webhook_wsgi,
worker.app). The ids come from context variables: `bind_log_context` sets them (the Flask hook in
api.request_logging, the Celery signals connected by `connect_celery_task_context`), and every record picks them
up, so a plain `logger.info(...)` anywhere carries them.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any, TextIO

from shared.platform.settings import Settings, SettingsError

LOG_FORMATS = ("auto", "json", "text")
# The ids a log line may carry; `bind_log_context` accepts exactly these names.
CONTEXT_FIELDS = ("request_id", "task_id", "task_name", "broadcast_id", "message_id")
# Chatty libraries: per-request lines cost CPU at hundreds of messages a second and say nothing new.
NOISY_LOGGERS = ("twilio", "aiohttp", "urllib3")

_context: dict[str, ContextVar[str | None]] = {
    name: ContextVar(f"bulksms_log_{name}", default=None) for name in CONTEXT_FIELDS
}

# E.164-looking numbers: a `+` and 6 to 15 digits. Everything but the last four digits is masked.
PHONE_NUMBER_PATTERN = re.compile(r"(?:\+|%2[Bb])\d{6,15}(?!\d)")
# An API key (`bsk_<prefix>_<secret>`) keeps its prefix, which identifies it without granting anything.
API_KEY_PATTERN = re.compile(r"\b(bsk_[A-Za-z0-9]+_)[A-Za-z0-9_\-]+")
BEARER_PATTERN = re.compile(r"(?i)\b(bearer\s+)[^\s,;\"']+")
AUTHORIZATION_PATTERN = re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?(?:[a-z]+\s+)?)[^\s,;\"']+")
# Signing secrets are 64 hex characters; a SHA-256 digest in a log line is redacted too, which costs nothing.
HEX_SECRET_PATTERN = re.compile(r"\b[0-9a-fA-F]{64}\b")
REDACTED = "[redacted]"

# Attributes every LogRecord has; anything else on a record came from `extra=` and is written out.
_STANDARD_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime", "taskName"}
)


def mask_phone_numbers(text: str) -> str:
    """Every E.164-looking number in `text` reduced to its last four digits (`+447700900123` → `*********0123`)."""
    return PHONE_NUMBER_PATTERN.sub(lambda match: "*" * (len(match.group()) - 4) + match.group()[-4:], text)


def redact_secrets(text: str, known_secrets: Iterable[str] = ()) -> str:
    """`text` without API keys, bearer tokens, Authorization values, 64-hex secrets or any of `known_secrets`."""
    for secret in known_secrets:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    text = API_KEY_PATTERN.sub(lambda match: match.group(1) + REDACTED, text)
    text = BEARER_PATTERN.sub(lambda match: match.group(1) + REDACTED, text)
    text = AUTHORIZATION_PATTERN.sub(lambda match: match.group(1) + REDACTED, text)
    return HEX_SECRET_PATTERN.sub(REDACTED, text)


def bind_log_context(**values: str | None) -> dict[str, Token[str | None]]:
    """Set ids for the log lines that follow in this thread / task; returns tokens for `reset_log_context`."""
    unknown = set(values) - set(CONTEXT_FIELDS)
    if unknown:
        raise TypeError(f"unknown log context field(s): {', '.join(sorted(unknown))}")
    return {name: _context[name].set(None if value is None else str(value)) for name, value in values.items()}


def reset_log_context(tokens: Mapping[str, Token[str | None]]) -> None:
    for name, token in tokens.items():
        _context[name].reset(token)


def clear_log_context() -> None:
    for variable in _context.values():
        variable.set(None)


@contextmanager
def log_context(**values: str | None) -> Iterator[None]:
    """`with log_context(message_id=...):` the lines logged inside carry these ids."""
    tokens = bind_log_context(**values)
    try:
        yield
    finally:
        reset_log_context(tokens)


def current_log_context() -> dict[str, str]:
    return {name: value for name, variable in _context.items() if (value := variable.get()) is not None}


class ContextFilter(logging.Filter):
    """Copies the bound ids onto each record (an id given with `extra=` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in current_log_context().items():
            if getattr(record, name, None) is None:
                setattr(record, name, value)
        return True


class SafetyFilter(logging.Filter):
    """The safety net: masks phone numbers and redacts secrets in the message of every record, whoever logs it."""

    def __init__(self, known_secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.known_secrets = tuple(secret for secret in known_secrets if secret)

    def clean(self, text: str) -> str:
        return mask_phone_numbers(redact_secrets(text, self.known_secrets))

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed %-format: keep the raw parts, cleaned
            message = f"{record.msg!s} {record.args!r}"
        record.msg = self.clean(message)
        record.args = None
        for name in _extra_names(record):
            value = getattr(record, name)
            if isinstance(value, str):
                setattr(record, name, self.clean(value))
        return True


def _extra_names(record: logging.LogRecord) -> list[str]:
    return [name for name in vars(record) if name not in _STANDARD_RECORD_ATTRIBUTES and not name.startswith("_")]


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, service, logger, message, the ids, any `extra=` fields, exception."""

    def __init__(self, service_name: str, known_secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.service_name = service_name
        self.safety = SafetyFilter(known_secrets)

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service_name,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for name in _extra_names(record):
            document[name] = _json_safe(getattr(record, name))
        if record.exc_info:
            # Tracebacks quote local values; they get the same cleaning as messages.
            document["exception"] = self.safety.clean(self.formatException(record.exc_info))
        elif record.exc_text:
            document["exception"] = self.safety.clean(record.exc_text)
        if record.stack_info:
            document["stack"] = self.safety.clean(self.formatStack(record.stack_info))
        return json.dumps(document, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """For a terminal: the usual one-line format, the ids appended as `key=value`."""

    def __init__(self, service_name: str, known_secrets: Iterable[str] = ()) -> None:
        super().__init__("%(asctime)s %(levelname)s [%(processName)s] %(name)s: %(message)s")
        self.service_name = service_name
        self.safety = SafetyFilter(known_secrets)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = " ".join(f"{name}={getattr(record, name)}" for name in CONTEXT_FIELDS if getattr(record, name, None))
        if ids:
            first, newline, rest = line.partition("\n")
            line = f"{first} [{ids}]{newline}{rest}"
        return self.safety.clean(line)


def resolve_log_format(log_format: str, stream: TextIO) -> str:
    """`auto`: text when writing to a terminal, JSON otherwise (files, pipes, containers)."""
    chosen = log_format.strip().lower()
    if chosen not in LOG_FORMATS:
        raise SettingsError(f"setting LOG_FORMAT must be one of {', '.join(LOG_FORMATS)} (got {log_format!r})")
    if chosen == "auto":
        return "text" if stream.isatty() else "json"
    return chosen


def settings_secrets(settings: Settings) -> list[str]:
    """Configured values that must never appear in a log line."""
    candidates = (
        settings.twilio_auth_token,
        settings.twilio_auth_token_previous,
        settings.twilio_api_key_secret,
        settings.metrics_token,
    )
    return [value for value in candidates if value]


def configure_logging(settings: Settings, service_name: str, stream: TextIO | None = None) -> logging.Handler:
    """Replace the root logger's handlers with one that writes `settings.log_format` lines to `stream` (stderr)."""
    stream = stream or sys.stderr
    secrets = settings_secrets(settings)
    log_format = resolve_log_format(getattr(settings, "log_format", "auto"), stream)
    handler = logging.StreamHandler(stream)
    formatter_class = JsonFormatter if log_format == "json" else TextFormatter
    handler.setFormatter(formatter_class(service_name, secrets))
    # Handler filters see every record that reaches the handler, including those propagated from child loggers.
    handler.addFilter(ContextFilter())
    handler.addFilter(SafetyFilter(secrets))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler


def new_request_id() -> str:
    return uuid.uuid4().hex


def _task_broadcast_id(args: Any, kwargs: Any) -> str | None:
    """The broadcast a task works on: its `broadcast_id` argument, or a first positional argument that is a UUID."""
    if isinstance(kwargs, Mapping) and kwargs.get("broadcast_id"):
        return str(kwargs["broadcast_id"])
    if isinstance(args, list | tuple) and args:
        try:
            return str(uuid.UUID(str(args[0])))
        except ValueError:
            return None
    return None


def _bind_task_context(
    task_id: str | None = None, task: Any = None, args: Any = None, kwargs: Any = None, **_: Any
) -> None:
    clear_log_context()
    bind_log_context(
        task_id=task_id,
        task_name=getattr(task, "name", None),
        broadcast_id=_task_broadcast_id(args, kwargs),
    )


def _clear_task_context(**_: Any) -> None:
    clear_log_context()


def connect_celery_task_context() -> None:
    """Bind task id, task name and broadcast id around every task this process runs (Celery signals)."""
    from celery import signals

    signals.task_prerun.connect(_bind_task_context, weak=False)
    signals.task_postrun.connect(_clear_task_context, weak=False)
