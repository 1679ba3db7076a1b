"""Recipient normalisation to E.164, duplicate collapsing and masking: pure, table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from shared.compliance.phone_numbers import (
    MAX_REPORTED_INVALID,
    mask_phone_number,
    normalise_phone_number,
    normalise_recipients,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+447700900123", "+447700900123"),
        ("+44 7700 900123", "+447700900123"),
        ("+44-7700-900-123", "+447700900123"),
        ("+44.7700.900.123", "+447700900123"),
        ("+1 (202) 555-0100", "+12025550100"),
        ("(+1) 202 555 0100", "+12025550100"),
        ("00447700900123", "+447700900123"),
        ("0044 7700 900123", "+447700900123"),
        ("+44\t7700\n900123", "+447700900123"),
        ("+12", "+12"),  # shortest E.164 shape: country code digit and one more
        ("+123456789012345", "+123456789012345"),  # 15 digits, the longest
        ("+1234567890123456", None),  # 16 digits
        ("+1", None),
        ("+0447700900123", None),  # country codes never start with 0
        ("000447700900123", None),  # 00 then a 0 country code
        ("07700900123", None),  # national format: no country code
        ("447700900123", None),  # no + or 00
        ("+44 7700 9OO123", None),  # letters O for zeros
        ("+44/7700/900123", None),  # slashes are not removed
        ("++447700900123", None),
        ("", None),
        ("   ", None),
        ("+\uff14\uff147700900123", None),  # full-width digits are not ASCII digits
        ("+4\uff147700900123", None),
        ("+44770090012\u0663", None),  # an Arabic-Indic digit three
    ],
)
def test_normalise_phone_number(raw: str, expected: str | None) -> None:
    assert normalise_phone_number(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (447700900123, "not a string"),
        (None, "not a string"),
        (["+447700900123"], "not a string"),
        ("", "empty"),
        (" - ", "empty"),
        ("07700900123", "missing country code: start with + or 00"),
        ("+44 7700 ABC", "contains characters other than digits"),
        ("+0447700900123", "country code cannot start with 0"),
        ("+1234567890123456", "too long: E.164 numbers have at most 15 digits"),
        ("+1", "too short: E.164 numbers have at least 2 digits"),
    ],
)
def test_invalid_entries_are_reported_with_index_value_and_reason(raw: Any, reason: str) -> None:
    result = normalise_recipients(["+447700900123", raw])

    assert result.numbers == ["+447700900123"]
    assert result.invalid_count == 1
    assert [entry.as_dict() for entry in result.invalid_sample] == [{"index": 1, "value": raw, "reason": reason}]


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
    assert result.duplicates == 3
    assert result.invalid_count == 0


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
    ("number", "masked"),
    [("+447700900123", "*********0123"), ("+12", "+12"), ("+1234", "*1234"), ("+12345", "**2345")],
)
def test_mask_phone_number_keeps_only_the_last_four_characters(number: str, masked: str) -> None:
    assert mask_phone_number(number) == masked


def test_digits_of_other_scripts_are_reported_as_non_digits() -> None:
    result = normalise_recipients(["+4\uff147700900123"])

    assert result.invalid_sample[0].reason == "contains characters other than digits"
