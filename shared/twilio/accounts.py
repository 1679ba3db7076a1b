"""The Twilio accounts a deployment sends through: the live one (TWILIO_*) and, for test keys, the test one
(TEST_TWILIO_*: the simulator service, never Twilio).

A broadcast's account follows from its `test` flag, chosen per broadcast by the worker through the gateway; each
account has its own concurrency budget in Redis (keyed by its SID), so test traffic never slows real sends.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.platform.settings import Settings, SettingsError


class TestAccountNotConfigured(SettingsError):
    """A test key's broadcast, and no TEST_TWILIO_* settings: it waits unsent rather than go to the live account."""


@dataclass(frozen=True, slots=True)
class TwilioAccount:
    is_test: bool
    account_sid: str
    credentials: tuple[str, str]  # HTTP basic auth of the REST API
    messaging_service_sid: str
    api_base_url: str

    @property
    def label(self) -> str:
        return "test" if self.is_test else "live"


def live_account(settings: Settings) -> TwilioAccount:
    settings.require("twilio_account_sid", "twilio_messaging_service_sid")
    credentials = settings.twilio_rest_credentials
    if credentials is None:
        settings.require("twilio_auth_token")
    assert settings.twilio_account_sid and settings.twilio_messaging_service_sid and credentials
    return TwilioAccount(
        is_test=False,
        account_sid=settings.twilio_account_sid,
        credentials=credentials,
        messaging_service_sid=settings.twilio_messaging_service_sid,
        api_base_url=settings.twilio_api_base_url,
    )


def test_account(settings: Settings) -> TwilioAccount:
    """The test account; TestAccountNotConfigured when its settings are incomplete (never the live one instead)."""
    if not settings.test_account_configured:
        raise TestAccountNotConfigured(
            "a test key's broadcast needs TEST_TWILIO_ACCOUNT_SID, TEST_TWILIO_AUTH_TOKEN, "
            "TEST_TWILIO_MESSAGING_SERVICE_SID and TEST_TWILIO_BASE_URL"
        )
    assert settings.test_twilio_account_sid and settings.test_twilio_auth_token
    assert settings.test_twilio_messaging_service_sid and settings.test_twilio_base_url
    if settings.test_twilio_account_sid == settings.twilio_account_sid:
        raise SettingsError("TEST_TWILIO_ACCOUNT_SID must not be the live TWILIO_ACCOUNT_SID")
    return TwilioAccount(
        is_test=True,
        account_sid=settings.test_twilio_account_sid,
        credentials=(settings.test_twilio_account_sid, settings.test_twilio_auth_token),
        messaging_service_sid=settings.test_twilio_messaging_service_sid,
        api_base_url=settings.test_twilio_base_url,
    )


def account_for(settings: Settings, is_test: bool) -> TwilioAccount:
    """The account a broadcast is sent through: the test account for a test key's broadcast, else the live one."""
    return test_account(settings) if is_test else live_account(settings)
