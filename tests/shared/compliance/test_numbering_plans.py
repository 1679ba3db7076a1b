"""The compiled plans' parser answers exactly as phonenumbers does, on 100,000 generated numbers per country.

Numbers are generated from each country's example numbers with digits changed and lengths varied (so valid,
merely possible, too short and too long ones all occur) and written in every shape people use: E.164, spaced,
with the trunk `(0)`, with `00` / `011` / the country's own international prefix, nationally with and without
the trunk prefix and with dots, dashes, slashes and parentheses, with the calling code but no `+`, and with
unassigned codes, letters and extensions (which the fast parser must leave to phonenumbers). The default region
is the country's own, another one, or none. A fixed seed keeps every run identical.
"""

from __future__ import annotations

import random

import phonenumbers
import pytest
from phonenumbers import PhoneMetadata, PhoneNumberType

from shared.compliance.numbering_plans import facts_from_phonenumbers, parse_common_shape

NUMBERS_PER_COUNTRY = 100_000
# Each listed country, with the regions that share its calling code where lists mix them.
COUNTRIES = {
    "GB": ("GB",),
    "DE": ("DE",),
    "FR": ("FR",),
    "IT": ("IT",),
    "CH": ("CH",),
    "IN": ("IN",),
    "BR": ("BR",),
    "MX": ("MX",),
    "US/CA": ("US", "CA"),
    "AU": ("AU",),
    "JP": ("JP",),
}
OTHER_REGIONS = ("GB", "US", "DE", "FR", "JP", "AU", "BR", "IN")
NUMBER_TYPES = (
    PhoneNumberType.MOBILE,
    PhoneNumberType.FIXED_LINE,
    PhoneNumberType.TOLL_FREE,
    PhoneNumberType.PREMIUM_RATE,
    PhoneNumberType.VOIP,
    PhoneNumberType.PERSONAL_NUMBER,
    PhoneNumberType.UAN,
    PhoneNumberType.SHARED_COST,
    PhoneNumberType.PAGER,
)
UNASSIGNED_CALLING_CODES = ("999", "210", "80", "259", "3", "0")


def example_national_numbers(region: str) -> list[str]:
    examples = []
    for number_type in NUMBER_TYPES:
        example = phonenumbers.example_number_for_type(region, number_type)
        if example is not None:
            examples.append(phonenumbers.national_significant_number(example))
    return examples


def national_number(rng: random.Random, examples: list[str]) -> str:
    """An example's first digits, random others, and sometimes a length one or three digits off."""
    example = rng.choice(examples)
    kept = rng.randint(1, min(4, len(example)))
    length = len(example) + rng.choice((0, 0, 0, 0, 0, 0, -1, 1, -3, 3))
    length = max(length, 1)
    digits = example[:kept] + "".join(rng.choice("0123456789") for _ in range(max(length - kept, 0)))
    return digits[:length]


def grouped(rng: random.Random, digits: str, separator: str) -> str:
    groups, position = [], 0
    while position < len(digits):
        size = rng.choice((2, 3, 4))
        groups.append(digits[position : position + size])
        position += size
    return separator.join(groups)


def written(rng: random.Random, region: str) -> tuple[str, str | None]:
    """One number of `region` as someone might write it, and the default region it is read in."""
    metadata = PhoneMetadata.metadata_for_region(region)
    assert metadata is not None
    code = str(metadata.country_code)
    trunk = metadata.national_prefix or "0"
    digits = national_number(rng, EXAMPLES[region])
    separator = rng.choice((" ", " ", "-", ".", "/", ""))
    other = rng.choice(OTHER_REGIONS)
    own_or_other_or_none = rng.choice((region, region, other, None))
    shape = rng.randrange(16)
    if shape == 0:
        return f"+{code}{digits}", own_or_other_or_none
    if shape == 1:
        return f"+{code} {grouped(rng, digits, separator)}", own_or_other_or_none
    if shape == 2:
        return f"+{code} (0){rng.choice(('', ' '))}{grouped(rng, digits, separator)}", own_or_other_or_none
    if shape == 3:
        return f"00{code} {grouped(rng, digits, separator)}", rng.choice((region, "GB", "DE", "MX", "US"))
    if shape == 4:
        return f"011 {code} {grouped(rng, digits, separator)}", rng.choice(("US", "CA", region))
    if shape == 5:
        idd = {"AU": "0011", "JP": "010", "BR": "0021", "US": "011", "CA": "011"}.get(region, "00")
        return f"{idd}{separator}{code}{separator}{digits}", region
    if shape in (6, 7):
        return f"{trunk}{grouped(rng, digits, separator)}", region
    if shape == 8:
        area = rng.randint(1, 4)
        return f"({trunk}{digits[:area]}) {grouped(rng, digits[area:], separator)}", region
    if shape == 9:
        return grouped(rng, digits, separator), region
    if shape == 10:
        return f"{code}{digits}", region
    if shape == 11:
        return f"+{rng.choice(UNASSIGNED_CALLING_CODES)}{digits}", own_or_other_or_none
    if shape == 12:  # letters: phonenumbers reads them, the fast parser must not
        position = rng.randrange(len(digits))
        return f"+{code} {digits[:position]}{rng.choice('OolIABx')}{digits[position + 1 :]}", own_or_other_or_none
    if shape == 13:  # extensions
        extension = rng.choice((" ext. ", " x", " #", ";ext=", " extension "))
        return f"+{code} {grouped(rng, digits, ' ')}{extension}{rng.randint(1, 9999)}", own_or_other_or_none
    if shape == 14:  # stray characters around and inside
        return rng.choice(("(", " ", "-", "")) + f"+{code}{separator}{digits}" + rng.choice((")", " ", ".", "")), None
    return f"{trunk}{digits}", own_or_other_or_none


EXAMPLES = {region: example_national_numbers(region) for regions in COUNTRIES.values() for region in regions}


@pytest.mark.parametrize("country", list(COUNTRIES))
def test_fast_parser_agrees_with_phonenumbers_on_generated_numbers(country: str) -> None:
    rng = random.Random(f"numbering-plans-{country}")
    regions = COUNTRIES[country]
    handled = 0
    disagreements = []
    for _ in range(NUMBERS_PER_COUNTRY):
        text, default_region = written(rng, rng.choice(regions))
        fast = parse_common_shape(text, default_region)
        if fast is None:
            continue  # phonenumbers answers it
        handled += 1
        expected = facts_from_phonenumbers(text, default_region)
        if fast != expected:
            disagreements.append((text, default_region, fast, expected))

    assert disagreements[:10] == []
    # Most shapes are common ones: the comparison is not vacuous.
    assert handled > NUMBERS_PER_COUNTRY * 0.6


@pytest.mark.parametrize(
    ("text", "default_region"),
    [
        ("+44 7700 900123 ext. 12", None),
        ("+1 800 FLOWERS", None),
        ("+44 7700 9OO123", None),
        ("+\uff14\uff147700900123", None),
        ("+44\t7700 900123", None),
        ("07700 900123", None),
        ("+999 1234 5678", None),
        ("++447700900123", None),
        ("12", "GB"),
    ],
)
def test_fast_parser_leaves_unusual_text_to_phonenumbers(text: str, default_region: str | None) -> None:
    assert parse_common_shape(text, default_region) is None
