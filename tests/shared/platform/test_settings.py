"""Settings: read from the environment over `.env`, typed, failing with a message that names the variable."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bulksms_tools.cli import settings_markdown_table
from shared.platform.settings import (
    Settings,
    SettingsError,
    load_settings,
    settings_documentation,
    settings_to_environment,
)

REPOSITORY_ROOT = Path(__file__).resolve().parents[3]
SETTING_VARIABLES = [variable for variable, _, _ in settings_documentation()]


def test_nothing_set_gives_the_documented_defaults() -> None:
    settings = load_settings(environ={}, dotenv_path=None)
    assert settings == Settings()
    assert settings.database_url is None and settings.redis_url is None
    assert settings.twilio_api_base_url == "https://api.twilio.com"
    assert settings.port == 8000
    assert settings.data_dir == ".bulksms"
    assert not settings.twilio_configured


def test_values_are_read_and_typed() -> None:
    settings = load_settings(
        environ={"PORT": "9000", "SWEEPER_INTERVAL_SECONDS": "2.5", "DATABASE_URL": "postgresql://db/x"},
        dotenv_path=None,
    )
    assert settings.port == 9000
    assert settings.sweeper_interval_seconds == 2.5
    assert settings.database_url == "postgresql://db/x"


def test_dotenv_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("PORT=9001\nLOG_LEVEL=DEBUG\nREDIS_URL=redis://from-dotenv:6379/0\n")
    settings = load_settings(environ={"PORT": "9002"}, dotenv_path=dotenv)
    assert settings.port == 9002
    assert settings.log_level == "DEBUG"
    assert settings.redis_url == "redis://from-dotenv:6379/0"


def test_a_missing_dotenv_is_fine(tmp_path: Path) -> None:
    assert load_settings(environ={}, dotenv_path=tmp_path / "absent.env") == Settings()


def test_blank_values_mean_unset() -> None:
    settings = load_settings(environ={"DATABASE_URL": "  ", "PORT": ""}, dotenv_path=None)
    assert settings.database_url is None
    assert settings.port == 8000


@pytest.mark.parametrize(
    ("variable", "value"),
    [("PORT", "eighty"), ("SEND_CHUNK_SIZE", "1.5"), ("TWILIO_REQUEST_TIMEOUT_SECONDS", "soon")],
)
def test_a_malformed_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        load_settings(environ={variable: value}, dotenv_path=None)


@pytest.mark.parametrize("variable", ["TWILIO_MAX_CONCURRENCY", "SEND_CHUNK_SIZE", "PORT", "MAX_REQUEST_BYTES"])
def test_counts_must_be_positive(variable: str) -> None:
    with pytest.raises(SettingsError, match=f"{variable} must be a positive number"):
        load_settings(environ={variable: "0"}, dotenv_path=None)


def test_require_names_every_missing_setting() -> None:
    settings = load_settings(environ={"TWILIO_ACCOUNT_SID": "AC123"}, dotenv_path=None)
    with pytest.raises(SettingsError) as raised:
        settings.require("twilio_account_sid", "twilio_auth_token", "twilio_messaging_service_sid")
    message = str(raised.value)
    assert "TWILIO_AUTH_TOKEN" in message and "TWILIO_MESSAGING_SERVICE_SID" in message
    assert "TWILIO_ACCOUNT_SID" not in message


def test_twilio_is_configured_only_with_all_three_credentials() -> None:
    credentials = {
        "TWILIO_ACCOUNT_SID": "AC1",
        "TWILIO_AUTH_TOKEN": "t",
        "TWILIO_MESSAGING_SERVICE_SID": "MG1",
    }
    assert load_settings(environ=credentials, dotenv_path=None).twilio_configured
    del credentials["TWILIO_AUTH_TOKEN"]
    assert not load_settings(environ=credentials, dotenv_path=None).twilio_configured


def test_an_api_key_is_used_for_sending_and_needs_its_secret() -> None:
    account = {"TWILIO_ACCOUNT_SID": "AC1", "TWILIO_MESSAGING_SERVICE_SID": "MG1"}
    with_token = load_settings(environ={**account, "TWILIO_AUTH_TOKEN": "t"}, dotenv_path=None)
    assert with_token.twilio_rest_credentials == ("AC1", "t")
    key = {"TWILIO_API_KEY_SID": "SK1", "TWILIO_API_KEY_SECRET": "s"}
    with_key = load_settings(environ={**account, **key}, dotenv_path=None)
    assert with_key.twilio_configured and with_key.twilio_rest_credentials == ("SK1", "s")
    both = load_settings(environ={**account, **key, "TWILIO_AUTH_TOKEN": "t"}, dotenv_path=None)
    assert both.twilio_rest_credentials == ("SK1", "s")  # the key wins: it can be revoked on its own
    for half in ({"TWILIO_API_KEY_SID": "SK1"}, {"TWILIO_API_KEY_SECRET": "s"}):
        with pytest.raises(SettingsError, match="TWILIO_API_KEY_SID and TWILIO_API_KEY_SECRET"):
            load_settings(environ={**account, **half}, dotenv_path=None)


def test_webhook_signatures_are_checked_against_the_token_and_the_one_being_rotated_out() -> None:
    assert Settings().twilio_webhook_tokens == ()
    assert load_settings(environ={"TWILIO_AUTH_TOKEN": "new"}, dotenv_path=None).twilio_webhook_tokens == ("new",)
    rotating = load_settings(
        environ={"TWILIO_AUTH_TOKEN": "new", "TWILIO_AUTH_TOKEN_PREVIOUS": "old"}, dotenv_path=None
    )
    assert rotating.twilio_webhook_tokens == ("new", "old")


@pytest.mark.parametrize("variable", ["WEBHOOK_MAX_BODY_BYTES", "WEBHOOK_READ_TIMEOUT_SECONDS"])
def test_webhook_limits_must_be_positive(variable: str) -> None:
    with pytest.raises(SettingsError, match=f"{variable} must be a positive number"):
        load_settings(environ={variable: "0"}, dotenv_path=None)


def test_settings_survive_the_trip_to_a_child_process_environment() -> None:
    settings = load_settings(
        environ={"DATABASE_URL": "postgresql://db/x", "PORT": "9100", "CLAIM_LEASE_SECONDS": "30"},
        dotenv_path=None,
    )
    environment = settings_to_environment(settings)
    assert "REDIS_URL" not in environment  # unset stays unset
    assert load_settings(environ=environment, dotenv_path=None) == settings


def test_every_setting_is_documented() -> None:
    assert len(SETTING_VARIABLES) == len(set(SETTING_VARIABLES))
    for variable, _default, description in settings_documentation():
        assert re.fullmatch(r"[A-Z][A-Z0-9_]+", variable)
        assert description.strip(), f"{variable} has no description"


def test_readme_configuration_table_matches_the_settings() -> None:
    readme = (REPOSITORY_ROOT / "README.md").read_text()
    assert settings_markdown_table() in readme, (
        "README.md's configuration table is out of date: replace it with the output of `bulksms settings`"
    )


def test_docs_configuration_mentions_every_setting() -> None:
    text = (REPOSITORY_ROOT / "docs" / "configuration.md").read_text()
    missing = [variable for variable in SETTING_VARIABLES if f"`{variable}`" not in text]
    assert not missing, f"docs/configuration.md does not describe {missing}"


# --- through the real entry points: a missing setting stops start-up with a message naming it ---------------


def run_entry_point(
    arguments: list[str], tmp_path: Path, extra: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run from an empty folder (no `.env` to pick up) with only the given bulksms settings."""
    environment = {name: value for name, value in os.environ.items() if name not in SETTING_VARIABLES}
    environment.update(extra or {})
    return subprocess.run(
        arguments, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_the_api_refuses_to_start_without_its_database(tmp_path: Path) -> None:
    result = run_entry_point([sys.executable, "-c", "import api.wsgi"], tmp_path)
    assert result.returncode != 0
    assert "DATABASE_URL" in result.stderr


def test_the_worker_refuses_to_start_without_twilio_credentials(tmp_path: Path) -> None:
    result = run_entry_point(
        [
            sys.executable, "-m", "celery", "-A", "worker.app", "worker",
            "--queues", "sms.send,sms.maintenance,sms.status", "--concurrency", "1",
        ],
        tmp_path,
        extra={"DATABASE_URL": "postgresql://127.0.0.1:1/none", "REDIS_URL": "redis://127.0.0.1:1/0"},
    )  # fmt: skip
    assert result.returncode != 0
    assert "TWILIO_ACCOUNT_SID" in result.stdout + result.stderr


def test_bulksms_up_with_part_of_the_twilio_credentials_names_the_rest(tmp_path: Path) -> None:
    # One Twilio credential set means "send through Twilio": the others are required, never simulated.
    result = run_entry_point(
        [sys.executable, "-m", "bulksms_tools.cli", "up"],
        tmp_path,
        extra={"TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "BULKSMS_DATA_DIR": str(tmp_path / "data")},
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "TWILIO_AUTH_TOKEN" in result.stderr and "TWILIO_MESSAGING_SERVICE_SID" in result.stderr
    assert not (tmp_path / "data" / "postgres").exists(), "nothing should start before the settings are checked"
