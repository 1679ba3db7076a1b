"""The option list and what intake derives from it: fingerprints (unchanged from before the list), stored columns."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from marshmallow import ValidationError

from shared.broadcasts.intake import BroadcastRequest
from shared.broadcasts.options import BROADCAST_OPTIONS, OPTIONS_BY_NAME, BroadcastOption
from shared.broadcasts.outgoing import OutgoingContent
from shared.platform.models import Broadcast

# Fingerprints computed by the code before the option list existed: a stored broadcast's `request_fingerprint`
# must still match a replay of the same request, or every Idempotency-Key retry after a deploy would be a 409.
MINIMAL_FINGERPRINT = "c437f0196e3e77cf96daf50d1ded6a8a337e735d96a5ab28d16e94fbe8d28b31"
EVERY_OPTION_FINGERPRINT = "c103b6f1e01dbfcb0e84e231270281be666b6edc917346a09904586ed37ac1e6"


def every_option_request() -> BroadcastRequest:
    return BroadcastRequest.from_options(
        {
            "message": "Hi {name|there} é",
            "recipients": [{"to": "+447700900123", "vars": {"name": "Ann"}}, "0044 7700 900124"],
            "on_invalid": "skip",
            "callback_url": "https://hooks.example.com/x",
            "send_at": datetime(2026, 12, 1, 9, 0, tzinfo=UTC),
            "quiet_hours": {"start": "21:00", "end": "08:00"},
            "media_urls": ["https://example.com/a.png"],
            "validity_period": 600,
            "max_segments": 3,
            "max_cost": Decimal("12.50"),
            "dry_run": False,
        }
    )


def example_values() -> dict[str, Any]:
    """Every option's example, loaded by its own field (as a request would be)."""
    return {option.name: option.request_field().deserialize(option.example) for option in BROADCAST_OPTIONS}


def test_fingerprints_are_byte_identical_to_those_stored_before_the_option_list() -> None:
    assert BroadcastRequest("hi", ["+447700900123"]).fingerprint() == MINIMAL_FINGERPRINT
    assert every_option_request().fingerprint() == EVERY_OPTION_FINGERPRINT


@pytest.mark.parametrize("option", BROADCAST_OPTIONS, ids=lambda option: option.name)
def test_an_option_changes_the_fingerprint_exactly_when_it_is_fingerprinted(option: BroadcastOption) -> None:
    values = example_values()
    with_option = BroadcastRequest.from_options(values)
    without_option = BroadcastRequest.from_options({**values, option.name: None})  # not given

    assert (with_option.fingerprint() != without_option.fingerprint()) is option.fingerprinted


@pytest.mark.parametrize("option", BROADCAST_OPTIONS, ids=lambda option: option.name)
def test_every_example_passes_its_own_rules(option: BroadcastOption) -> None:
    option.request_field().deserialize(option.example)  # raises ValidationError otherwise


def test_a_field_keeps_its_rules_when_copied_into_a_schema() -> None:
    with pytest.raises(ValidationError, match="https"):
        OPTIONS_BY_NAME["callback_url"].request_field().deserialize("ftp://example.com/")


@pytest.mark.parametrize("option", BROADCAST_OPTIONS, ids=lambda option: option.name)
def test_a_stored_option_names_real_columns_and_fills_them(option: BroadcastOption) -> None:
    model_columns = set(Broadcast.__table__.columns.keys())
    assert set(option.columns) <= model_columns, f"{option.name}: no such broadcasts column"
    stored = BroadcastRequest.from_options(example_values()).stored_values()
    assert set(option.columns) <= set(stored)
    if option.columns:
        assert any(stored[column] is not None for column in option.columns), f"{option.name} was not stored"


def test_options_that_reach_twilio_are_read_back_for_the_send() -> None:
    outgoing = {field.name for field in dataclasses.fields(OutgoingContent)}
    for option in BROADCAST_OPTIONS:
        if option.reaches_twilio and option.name != "message":  # the message is sent as the stored `body`
            assert option.name in outgoing, f"{option.name} reaches Twilio but the worker never reads it"


def test_request_attributes_and_options_are_every_declared_option() -> None:
    request = BroadcastRequest.from_options(example_values())
    attributes = {field.name for field in dataclasses.fields(BroadcastRequest)} - {"options"}
    assert attributes | set(request.options) == set(OPTIONS_BY_NAME)
    assert every_option_request().option_value("quiet_hours") == ("21:00", "08:00")
    with pytest.raises(ValueError, match="send_at"):
        BroadcastRequest("hi", ["+447700900123"], options={"send_at": None})
