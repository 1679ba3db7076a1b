"""Log lines: JSON with the bound ids, phone numbers masked, secrets never written."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from shared.platform.logging_config import (
    configure_logging,
    log_context,
    mask_phone_numbers,
    redact_secrets,
    resolve_log_format,
)
from shared.platform.settings import SettingsError, load_settings

AUTH_TOKEN = "twilio-auth-token-0123456789"
API_KEY = "bsk_3f9a1c2e_c2VjcmV0LXNlY3JldC1zZWNyZXQ"


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    stream = io.StringIO()
    settings = load_settings({"TWILIO_AUTH_TOKEN": AUTH_TOKEN, "LOG_FORMAT": "json"}, dotenv_path=None)
    configure_logging(settings, "test", stream=stream)
    yield stream
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sent to +447700900123", "sent to *********0123"),
        ("+12025550100 and +33612345678", "********0100 and ********5678"),
        ("encoded %2B447700900123", "encoded ***********0123"),
        ("short +12345 and a count 447700900123", "short +12345 and a count 447700900123"),
    ],
)
def test_phone_numbers_keep_only_their_last_four_digits(text: str, expected: str) -> None:
    assert mask_phone_numbers(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        f"Authorization: Bearer {API_KEY}",
        f"headers={{'Authorization': 'Bearer {API_KEY}'}}",
        f"key {API_KEY} used",
        f"auth token is {AUTH_TOKEN}",
        "signing secret " + "ab" * 32,
        "Authorization: Basic QUM6c2VjcmV0",
    ],
)
def test_secrets_are_redacted(text: str) -> None:
    cleaned = redact_secrets(text, [AUTH_TOKEN])
    for secret in (API_KEY.split("_", 2)[2], AUTH_TOKEN, "ab" * 32, "QUM6c2VjcmV0"):
        assert secret not in cleaned
    assert "[redacted]" in cleaned


def test_a_log_line_is_one_json_object_with_the_bound_ids(log_stream: io.StringIO) -> None:
    with log_context(broadcast_id="b-1", task_id="t-1"):
        logging.getLogger("shared.sending.chunks").info("chunk %d sent to %s", 3, "+447700900123")
    logging.getLogger("shared.sending.chunks").info("outside", extra={"message_id": 42})
    first, second = lines(log_stream)
    assert first["message"] == "chunk 3 sent to *********0123"
    assert first["broadcast_id"] == "b-1" and first["task_id"] == "t-1"
    assert first["level"] == "INFO" and first["service"] == "test" and first["logger"] == "shared.sending.chunks"
    assert "broadcast_id" not in second and second["message_id"] == 42


def test_secrets_and_numbers_never_reach_the_output(log_stream: io.StringIO) -> None:
    logger = logging.getLogger("api.anything")
    logger.warning("request headers %s", {"Authorization": f"Bearer {API_KEY}", "X-Token": AUTH_TOKEN})
    try:
        raise ValueError(f"bad number +447700900123 with key {API_KEY}")
    except ValueError:
        logger.exception("failed")
    output = log_stream.getvalue()
    assert API_KEY not in output and AUTH_TOKEN not in output and "+447700900123" not in output
    assert "*********0123" in lines(log_stream)[1]["exception"]  # type: ignore[operator]


def test_log_format_auto_is_text_on_a_terminal_and_json_elsewhere() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert resolve_log_format("auto", Terminal()) == "text"
    assert resolve_log_format("auto", io.StringIO()) == "json"
    assert resolve_log_format("TEXT", io.StringIO()) == "text"
    with pytest.raises(SettingsError, match="LOG_FORMAT"):
        resolve_log_format("xml", io.StringIO())
