"""Recipient numbers as people write them: E.164 out, refusals with reasons, duplicates, countries. Table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from bulksms_tools.cli import demo_numbers
from bulksms_tools.simulator.magic_numbers import MAGIC_NUMBERS, magic_variant
from shared.compliance.fictional_numbers import is_fictional
from shared.compliance.phone_numbers import (
    MAX_ECHOED_CHARACTERS,
    MAX_REPORTED_INVALID,
    InvalidPhoneNumber,
    NumberRules,
    check_default_region,
    echo_value,
    invalid_reason,
    mask_phone_number,
    normalise_phone_number,
    normalise_recipients,
    parse_phone_number,
)


@pytest.mark.parametrize(
    ("raw", "default_region", "expected"),
    [
        # GB: trunk 0, the (0) written after +44, 00, spaces, dashes, dots, parentheses.
        ("+447700900123", None, "+447700900123"),
        ("+44 7700 900123", None, "+447700900123"),
        ("+44-7700-900-123", None, "+447700900123"),
        ("+44.7700.900.123", None, "+447700900123"),
        ("+44 (0) 7700 900123", None, "+447700900123"),
        ("+44 (0)7700 900123", None, "+447700900123"),
        ("00447700900123", None, "+447700900123"),
        ("0044 7700 900123", None, "+447700900123"),
        ("07700 900123", "GB", "+447700900123"),
        ("07700900123", "GB", "+447700900123"),
        ("(020) 7946-0018", "GB", "+442079460018"),
        ("447700900123", "GB", "+447700900123"),  # the calling code without +
        # DE: trunk 0, (0), slashes.
        ("030 1234567", "DE", "+49301234567"),
        ("030/1234567", "DE", "+49301234567"),
        ("+49 (0)30 1234567", None, "+49301234567"),
        ("0151 23456789", "DE", "+4915123456789"),
        ("00 49 151 23456789", "GB", "+4915123456789"),
        # FR
        ("06 12 34 56 78", "FR", "+33612345678"),
        ("06.12.34.56.78", "FR", "+33612345678"),
        ("+33 (0)6 12 34 56 78", None, "+33612345678"),
        # IT: the leading 0 of a fixed line is part of the number, not a trunk prefix.
        ("+39 06 1234 5678", None, "+390612345678"),
        ("+39 (0)6 1234 5678", None, "+390612345678"),
        ("06 1234 5678", "IT", "+390612345678"),
        ("312 345 6789", "IT", "+393123456789"),
        # CH
        ("044 668 18 00", "CH", "+41446681800"),
        ("+41 (0)44 668 18 00", None, "+41446681800"),
        ("078 123 45 67", "CH", "+41781234567"),
        # IN
        ("081234 56789", "IN", "+918123456789"),
        ("98765 43210", "IN", "+919876543210"),
        ("+91 81234 56789", None, "+918123456789"),
        # BR
        ("(11) 96123-4567", "BR", "+5511961234567"),
        ("011 96123 4567", "BR", "+5511961234567"),
        ("+55 11 96123-4567", None, "+5511961234567"),
        # MX
        ("222 123 4567", "MX", "+522221234567"),
        ("+52 222 123 4567", None, "+522221234567"),
        # US / CA: 011 from North America, the trunk 1, the region among those sharing +1.
        ("(202) 555-0142", "US", "+12025550142"),
        ("1-202-555-0142", "US", "+12025550142"),
        ("202.555.0142", "CA", "+12025550142"),
        ("(416) 555-0142", "US", "+14165550142"),
        ("+1 (202) 555-0100", None, "+12025550100"),
        ("(+1) 202 555 0100", None, "+12025550100"),
        ("011 44 7700 900123", "US", "+447700900123"),
        ("0044 7700 900123", "US", "+447700900123"),  # 00 is read as + even where 011 is the prefix
        # AU
        ("0491 570 156", "AU", "+61491570156"),
        ("+61 (0)491 570 156", None, "+61491570156"),
        ("0011 44 7700 900123", "AU", "+447700900123"),
        ("(02) 5550 1234", "AU", "+61255501234"),
        # JP
        ("090-1234-5678", "JP", "+819012345678"),
        ("03-1234-5678", "JP", "+81312345678"),
        ("010 44 7700 900123", "JP", "+447700900123"),
        ("+81 (0)90 1234 5678", None, "+819012345678"),
        # Digits of other scripts are read as the digits they are.
        ("+\uff14\uff14 7700 900123", None, "+447700900123"),
        ("+\u0664\u0664\u0667\u0667\u0660\u0660\u0669\u0660\u0660\u0661\u0662\u0663", None, "+447700900123"),
        ("++447700900123", None, "+447700900123"),
        ("  +447700900123\r", None, "+447700900123"),
    ],
)
def test_numbers_as_people_write_them_become_e164(raw: str, default_region: str | None, expected: str) -> None:
    assert normalise_phone_number(raw, default_region) == expected


@pytest.mark.parametrize(
    ("raw", "default_region", "reason"),
    [
        (447700900123, None, "not a string"),
        (None, None, "not a string"),
        (["+447700900123"], None, "not a string"),
        ("", None, "empty"),
        (" - ", None, "empty"),
        ("07700900123", None, "missing country code: start with + or 00, or set default_region"),
        ("447700900123", None, "missing country code: start with + or 00, or set default_region"),
        ("011 44 7700 900123", None, "missing country code: start with + or 00, or set default_region"),
        ("+999 1234 5678", None, "unknown country code"),
        ("00999 1234 5678", None, "unknown country code"),
        ("+0447700900123", None, "unknown country code"),
        ("+12", None, "too short"),
        ("+1", None, "too short"),
        ("+44 7700 90", None, "too short for GB"),
        ("07700 9001", "GB", "too short for GB without the trunk prefix 0"),
        ("07700 900123 4", "GB", "too long for GB"),
        ("+1 202 555 01", None, "too short for US"),
        ("555-0142", "US", "too short for US"),  # seven digits: a local number without its area code
        ("+1 123 456 7890", None, "too short for US without the trunk prefix 1"),
        ("+1234567890123456", None, "too long for US"),
        ("06 12 34 56 7", "FR", "too short for FR without the trunk prefix 0"),
        ("+33 6 12 34 56 78 9", None, "too long for FR"),
        ("+41 44 668 18 001", None, "wrong length for CH"),
        ("0151 2345678901234", "DE", "too long for DE"),
        ("+52 1 222 123 4567", None, "too long for MX"),  # the mobile 1 Mexico dropped in 2019
        ("+44 7700 9OO123", None, "contains letters"),  # letter O for zero
        ("1-800-FLOWERS", "US", "contains letters"),
        ("tel:+447700900123", None, "contains letters"),
        ("+44 20 7946 0018 ext. 12", None, "has an extension (12): SMS cannot reach an extension"),
        ("(202) 555-0142 x3", "US", "has an extension (3): SMS cannot reach an extension"),
        ("+44\t7700\n900123", None, "not a phone number: use digits, spaces, dashes, dots and parentheses"),
    ],
)
def test_refused_entries_say_why(raw: Any, default_region: str | None, reason: str) -> None:
    with pytest.raises(InvalidPhoneNumber) as refused:
        parse_phone_number(raw, default_region)

    assert refused.value.reason == reason
    assert invalid_reason(raw, default_region) == reason


@pytest.mark.parametrize(
    ("raw", "country", "valid", "fictional"),
    [
        ("+12025550142", "US", True, True),
        ("+14165550142", "CA", True, True),
        ("+18765550100", "JM", True, True),
        ("+447700900123", "GB", False, True),
        ("+441632960001", "GB", False, True),
        ("+61491570156", "AU", True, True),
        ("+61255501234", "AU", True, True),
        ("+4915123456789", "DE", True, False),
        ("+12025550200", "US", True, False),
        ("+15550000000", "US", False, False),  # area code 555 is not assigned: possible, not valid
        ("+80012345678", "001", True, False),  # international freephone: no country
    ],
)
def test_country_validity_and_fictional_ranges_are_reported(
    raw: str, country: str, valid: bool, fictional: bool
) -> None:
    number = parse_phone_number(raw)

    assert (number.country, number.valid, number.fictional) == (country, valid, fictional)


def test_strict_refuses_numbers_in_no_assigned_range_but_not_fictional_ones() -> None:
    with pytest.raises(InvalidPhoneNumber) as refused:
        parse_phone_number("+15550000000", strict=True)
    assert refused.value.reason == "not a valid number for US"

    assert parse_phone_number("+447700900123", strict=True).e164 == "+447700900123"  # Ofcom's drama range
    assert parse_phone_number("+4915123456789", strict=True).e164 == "+4915123456789"


@pytest.mark.parametrize("number", ["+12125550100", "+16045550199", "+442079460000", "+61491579455", "+611800160401"])
def test_published_fictional_ranges(number: str) -> None:
    assert is_fictional(number)


@pytest.mark.parametrize("number", ["+12125550200", "+447700901000", "+61491570155", "+15550000000"])
def test_numbers_next_to_the_fictional_ranges_are_not_fictional(number: str) -> None:
    assert not is_fictional(number)


def test_demo_and_simulator_magic_numbers_are_accepted() -> None:
    magic = [magic_variant(number, variant) for number in MAGIC_NUMBERS for variant in (0, 1, 99)]
    result = normalise_recipients([*demo_numbers(1000), *magic])

    assert result.invalid_sample == []
    assert len(result.numbers) == 1000 + len(magic)


def test_one_recipient_however_it_is_written() -> None:
    result = normalise_recipients(
        ["+44 (0)7700 900123", "07700900123", "0044 7700 900123", "+447700900123", "+44 7700 900124"],
        NumberRules(default_region="GB"),
    )

    assert result.numbers == ["+447700900123", "+447700900124"]
    assert result.duplicates == 3


def test_duplicates_after_normalisation_are_collapsed_keeping_first_seen_order() -> None:
    result = normalise_recipients(
        [
            "+33612345678",
            "+44 7700 900123",
            "0044-7700-900123",
            "+33 6 12 34 56 78",
            "+12025550100",
            "+447700900123",
        ]
    )

    assert result.numbers == ["+33612345678", "+447700900123", "+12025550100"]
    assert result.countries == ["FR", "GB", "US"]
    assert result.duplicates == 3
    assert result.invalid_count == 0


def test_recipients_are_counted_per_country_and_not_valid_ones_reported() -> None:
    result = normalise_recipients(["+447700900123", "+4915123456789", "+4915123456788", "+15550000000"])

    assert result.per_country() == {"DE": 2, "GB": 1, "US": 1}
    assert result.not_valid == 1  # +1 555: the fictional GB number counts as valid


def test_countries_outside_the_allowed_ones_are_refused_with_their_own_reason() -> None:
    rules = NumberRules(allowed_countries=frozenset({"GB", "US"}))
    result = normalise_recipients(["+447700900123", "+33612345678", "+14165550142", "+12025550142"], rules)

    assert result.numbers == ["+447700900123", "+12025550142"]
    assert [entry.as_dict() for entry in result.invalid_sample] == [
        {"index": 1, "value": "+33612345678", "reason": "FR is not among the allowed countries"},
        {"index": 2, "value": "+14165550142", "reason": "CA is not among the allowed countries"},
    ]


def test_only_the_first_hundred_invalid_entries_are_sampled_but_all_are_counted() -> None:
    result = normalise_recipients(["bad"] * 250 + ["+447700900123"])

    assert result.invalid_count == 250
    assert len(result.invalid_sample) == MAX_REPORTED_INVALID
    assert [entry.index for entry in result.invalid_sample] == list(range(MAX_REPORTED_INVALID))
    assert result.numbers == ["+447700900123"]


def test_an_invalid_duplicate_is_invalid_not_a_duplicate() -> None:
    result = normalise_recipients(["bad", "bad", "+447700900123", "+447700900123"])

    assert (result.invalid_count, result.duplicates, result.numbers) == (2, 1, ["+447700900123"])


@pytest.mark.parametrize(
    ("value", "echoed"),
    [
        ("+44 7700 900123", "+44 7700 900123"),
        ("a\x00b\nc\u202ed", "a\\x00b\\nc\\u202ed"),
        ("x" * 64, "x" * 64),
        ("x" * 65, "x" * 63 + "…"),
        ("\x1b" * 40, "\\x1b" * 15 + "…"),
        (447700900123, 447700900123),
        (None, None),
        (["+44", "+1"], '["+44","+1"]'),
        ({"to": "y" * 100}, '{"to":"' + "y" * 56 + "…"),
    ],
)
def test_invalid_values_are_echoed_short_and_with_control_characters_escaped(value: Any, echoed: Any) -> None:
    assert echo_value(value) == echoed
    assert not isinstance(echoed, str) or len(echoed) <= MAX_ECHOED_CHARACTERS


@pytest.mark.parametrize(("region", "expected"), [("gb", "GB"), (" US ", "US"), (None, None)])
def test_default_region_is_an_iso_code_with_a_numbering_plan(region: str | None, expected: str | None) -> None:
    assert check_default_region(region) == expected


@pytest.mark.parametrize("region", ["UK", "XX", "GBR", "", "001"])
def test_unknown_default_regions_are_refused(region: str) -> None:
    with pytest.raises(ValueError, match="ISO 3166-1 alpha-2"):
        check_default_region(region)


@pytest.mark.parametrize(
    ("number", "masked"),
    [("+447700900123", "*********0123"), ("+12", "+12"), ("+1234", "*1234"), ("+12345", "**2345")],
)
def test_mask_phone_number_keeps_only_the_last_four_characters(number: str, masked: str) -> None:
    assert mask_phone_number(number) == masked
