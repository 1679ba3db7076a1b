"""`bulksms doctor`'s pacing check: the configured pace next to what the Messaging Service's sender pool implies,
read from the simulator's sender-pool endpoints over HTTP."""

from __future__ import annotations

import pytest

from bulksms_tools.doctor import Environment, check_pacing, sender_pool_of
from shared.platform.settings import Settings
from tests.conftest import SimulatorControl


def test_short_codes_and_toll_free_add_up_and_10dlc_is_not_guessed() -> None:
    pool = sender_pool_of(["+18335550100", "+18335550101", "+14155550100"], short_codes=2, alpha_senders=0)
    assert pool.known_segments_per_second == 2 * 100 + 2 * 3
    assert "must come from your campaign" in pool.describe()


def doctor(settings: Settings, simulator: SimulatorControl) -> Environment:
    return Environment(settings, "http://127.0.0.1:9", None, None, simulator=True)


@pytest.mark.parametrize(
    ("rate", "ok", "words"),
    [
        ("200", True, "2 short code(s) x 100 = 200 segments/s"),
        ("1000", False, "set TWILIO_SEGMENTS_PER_SECOND=200"),  # faster than the pool transmits
    ],
)
def test_the_configured_rate_is_checked_against_the_sender_pool(
    settings: Settings, simulator: SimulatorControl, rate: str, ok: bool, words: str
) -> None:
    simulator.configure_pool(senders=[{"type": "short_code", "count": 2, "segments_per_second": 100}])
    check = check_pacing(doctor(settings.replace(twilio_segments_per_second=rate), simulator))
    assert check.ok is ok
    assert words in check.detail + check.fix


def test_without_public_base_url_the_configured_rate_alone_applies(
    settings: Settings, simulator: SimulatorControl
) -> None:
    simulator.configure_pool(senders=[{"type": "long_code", "count": 3, "segments_per_second": 1}])
    check = check_pacing(doctor(settings.replace(twilio_segments_per_second="3", public_base_url=None), simulator))
    assert check.ok
    assert "the configured rate alone applies" in check.detail
    assert "3 US long code(s)" in check.detail and "not guessed" in check.detail
