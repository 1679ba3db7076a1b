"""libphonenumber's numbering plans compiled for speed, and a parser for the shapes lists are made of. Pure, no I/O.

`phonenumbers.parse` plus `is_valid_number` costs about 30 µs a number, most of it spent on text handling that
plain numbers do not need (finding a number inside free text, extensions, letters, RFC 3966) and on
recompiling or re-walking the metadata. `parse_common_shape` takes only numbers written with ASCII digits, an
optional leading `+` and the separators ` -./()`, and repeats phonenumbers' own steps on them (international
prefix, country calling code, national prefix, lengths, number types, the region among those sharing a calling
code) with the metadata compiled once per country. It answers exactly as phonenumbers does, and leaves every
other input, and every input phonenumbers would refuse with an error, to `facts_from_phonenumbers`.
`tests/shared/compliance/test_numbering_plans.py` compares the two on generated numbers of many countries and
formats.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum
from functools import cache
from typing import NamedTuple

import phonenumbers
from phonenumbers import NumberParseException, PhoneMetadata, ValidationResult

# The order phonenumbers tries number types in does not change whether *some* type matches, which is all
# validity asks; mobile and fixed line come first because most numbers are one of them.
_NUMBER_TYPE_DESCRIPTIONS = (
    "mobile",
    "fixed_line",
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
)
# phonenumbers' limits (phonenumberutil._MIN_LENGTH_FOR_NSN and friends).
MIN_NATIONAL_NUMBER_LENGTH = 2
MAX_NATIONAL_NUMBER_LENGTH = 17
MAX_INPUT_LENGTH = 250
MIN_VIABLE_DIGITS = 3  # a number with separators needs three digits to be "viable" to phonenumbers
NON_GEOGRAPHIC_REGION = "001"  # phonenumbers' region for +800, +808, +870, +878, +881, +882, +883, +888, +979


class Possibility(IntEnum):
    """phonenumbers' ValidationResult: whether the length is possible for the country."""

    IS_POSSIBLE = ValidationResult.IS_POSSIBLE
    IS_POSSIBLE_LOCAL_ONLY = ValidationResult.IS_POSSIBLE_LOCAL_ONLY
    INVALID_COUNTRY_CODE = ValidationResult.INVALID_COUNTRY_CODE
    TOO_SHORT = ValidationResult.TOO_SHORT
    INVALID_LENGTH = ValidationResult.INVALID_LENGTH
    TOO_LONG = ValidationResult.TOO_LONG


class NumberFacts(NamedTuple):
    """What phonenumbers says about a number that parses: E.164 form, length verdict, region, validity."""

    e164: str
    calling_code: int
    possibility: Possibility
    region: str | None  # ISO 3166-1 alpha-2, "001" for non-geographic codes; None if no region's ranges match
    valid: bool  # in a range libphonenumber knows as assigned
    extension: str = ""


@dataclass(frozen=True, slots=True)
class ParseError:
    """phonenumbers refused the text before looking at lengths (NumberParseException.error_type)."""

    error_type: int


class _Plan:
    """One region's (or non-geographic calling code's) metadata, with its patterns compiled once."""

    __slots__ = (
        "calling_code",
        "calling_code_text",
        "general",
        "international_prefix",
        "leading_digits_text",
        "local_only_lengths",
        "maximum_length",
        "minimum_length",
        "national_prefix",
        "possible_lengths",
        "region",
        "transform_rule",
        "validity_by_length",
    )

    def __init__(self, region: str, metadata: PhoneMetadata) -> None:
        general = metadata.general_desc
        # Every plan phonenumbers ships has both; the assertions tell the type checker.
        assert metadata.country_code is not None and general is not None and general.national_number_pattern
        self.region = region
        self.calling_code: int = metadata.country_code
        self.calling_code_text = str(metadata.country_code)
        self.general = re.compile(general.national_number_pattern)
        lengths = tuple(general.possible_length)
        self.possible_lengths = frozenset(lengths)
        self.minimum_length = lengths[0]
        self.maximum_length = lengths[-1]
        self.local_only_lengths = frozenset(general.possible_length_local_only or ())
        prefix = metadata.international_prefix
        self.international_prefix = re.compile(prefix) if prefix else None
        national = metadata.national_prefix_for_parsing
        self.national_prefix = re.compile(national) if national else None
        self.transform_rule: str | None = metadata.national_prefix_transform_rule or None
        self.leading_digits_text: str | None = metadata.leading_digits or None
        self.validity_by_length = _validity_patterns(metadata, lengths)

    def length_verdict(self, national_number: str) -> Possibility:
        """phonenumberutil._test_number_length for the general description (type UNKNOWN)."""
        length = len(national_number)
        if length in self.local_only_lengths:
            return Possibility.IS_POSSIBLE_LOCAL_ONLY
        if length == self.minimum_length:
            return Possibility.IS_POSSIBLE
        if length < self.minimum_length:
            return Possibility.TOO_SHORT
        if length > self.maximum_length:
            return Possibility.TOO_LONG
        return Possibility.IS_POSSIBLE if length in self.possible_lengths else Possibility.INVALID_LENGTH

    def is_valid(self, national_number: str) -> bool:
        """phonenumberutil._number_type_helper(...) != UNKNOWN: the general pattern and some number type match."""
        pattern = self.validity_by_length.get(len(national_number))
        return pattern is not None and pattern.fullmatch(national_number) is not None

    def strip_national_prefix(self, number: str) -> str:
        """phonenumberutil._maybe_strip_national_prefix_carrier_code, keeping only the resulting number."""
        if self.national_prefix is None or not number:
            return number
        match = self.national_prefix.match(number)
        if match is None:
            return number
        viable_original = self.general.fullmatch(number) is not None
        groups = match.groups()
        if self.transform_rule is None or groups[-1] is None:
            stripped = number[match.end() :]
        else:
            stripped = self.national_prefix.sub(self.transform_rule, number, count=1)
        if viable_original and self.general.fullmatch(stripped) is None:
            return number
        return stripped


def _validity_patterns(metadata: PhoneMetadata, general_lengths: tuple[int, ...]) -> dict[int, re.Pattern[str]]:
    """Per national-number length, one pattern matching exactly the numbers phonenumbers calls valid."""
    names = [
        name
        for name in _NUMBER_TYPE_DESCRIPTIONS
        # phonenumbers skips the mobile description when it repeats the fixed-line one.
        if not (name == "mobile" and metadata.same_mobile_and_fixed_line_pattern)
    ]
    assert metadata.general_desc is not None
    general = metadata.general_desc.national_number_pattern
    patterns = {}
    for length in general_lengths:
        alternatives = []
        for name in names:
            description = getattr(metadata, name)
            if description is None or not description.national_number_pattern:
                continue
            if description.possible_length and length not in description.possible_length:
                continue
            alternatives.append(f"(?:{description.national_number_pattern})")
        if alternatives:
            patterns[length] = re.compile(f"(?=(?:{general})\\Z)(?:{'|'.join(alternatives)})")
    return patterns


@cache
def region_plan(region: str) -> _Plan:
    """The plan of a region phonenumbers supports (`GB`), as used for numbers written nationally there."""
    metadata = PhoneMetadata.metadata_for_region(region)
    if metadata is None:
        raise ValueError(f"no numbering plan for region {region!r}")
    return _Plan(region, metadata)


class _CallingCode:
    """Everything about one country calling code: its main plan and the regions that share it, in order."""

    __slots__ = ("code", "main", "region_checks", "single_region")

    def __init__(self, code: int) -> None:
        self.code = code
        main_region = phonenumbers.region_code_for_country_code(code)
        if main_region == NON_GEOGRAPHIC_REGION:
            metadata = PhoneMetadata.metadata_for_nongeo_region(code)
            assert metadata is not None
            self.main = _Plan(NON_GEOGRAPHIC_REGION, metadata)
            regions: tuple[_Plan, ...] = (self.main,)
        else:
            self.main = region_plan(main_region)
            regions = tuple(region_plan(region) for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE[code])
        self.single_region = len(regions) == 1
        self.region_checks = _region_checks(regions)

    def region_and_validity(self, national_number: str) -> tuple[str | None, bool]:
        """phonenumbers.region_code_for_number and is_valid_number for this national number.

        Regions are tried in phonenumbers' order: the first whose leading digits match the number (then valid
        if its ranges say so), or, for a region without leading digits, the first in whose ranges it is valid.
        """
        for check in self.region_checks:
            if isinstance(check, _Plan):
                if check.is_valid(national_number):
                    return check.region, True
            else:
                match = check.match(national_number)
                if match is not None:
                    plan = region_plan(str(match.lastgroup))
                    return plan.region, plan.is_valid(national_number)
        return None, False


def _region_checks(regions: tuple[_Plan, ...]) -> list[_Plan | re.Pattern[str]]:
    """The regions as checks in order; consecutive leading-digit patterns become one alternation, which picks
    the first region whose pattern matches, as trying them one by one does."""
    checks: list[_Plan | re.Pattern[str]] = []
    run: list[_Plan] = []

    def close_run() -> None:
        if run:
            checks.append(re.compile("|".join(f"(?P<{plan.region}>{plan.leading_digits_text})" for plan in run)))
            run.clear()

    for plan in regions:
        if plan.leading_digits_text is None:
            close_run()
            checks.append(plan)
        else:
            run.append(plan)
    close_run()
    return checks


_KNOWN_CALLING_CODES = frozenset(str(code) for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
# Compiled on first use: a list of British numbers compiles only +44's four plans, not all 245.
_CALLING_CODES: dict[str, _CallingCode] = {}


def _calling_code(text: str) -> _CallingCode | None:
    """The calling code written as `text` ("44"), or None when no country has it."""
    found = _CALLING_CODES.get(text)
    if found is None and text in _KNOWN_CALLING_CODES:
        found = _CALLING_CODES[text] = _CallingCode(int(text))
    return found


def calling_code_plan(code: int) -> _CallingCode:
    found = _calling_code(str(code))
    if found is None:
        raise ValueError(f"no country has the calling code +{code}")
    return found


# ASCII digits, one optional `+`, and the separators phonenumbers ignores that people type (its punctuation
# also covers full-width forms, `x`, `~` and brackets, which take the general path).
_COMMON_SHAPE = re.compile(r"[ ()./-]*(\+?)[ ()./-]*([0-9][0-9 ()./-]*)", re.ASCII)
_NOT_DIGITS = re.compile(r"[^0-9]+", re.ASCII)


def parse_common_shape(text: str, default_region: str | None) -> NumberFacts | None:
    """What phonenumbers would say about `text`, or None when `text` is not a common shape or would not parse.

    `default_region` is the region national numbers are read in (None: only international numbers parse).
    """
    if not text or len(text) > MAX_INPUT_LENGTH:
        return None
    if text[0] == "+" and text[1:].isdigit() and text.isascii():  # already E.164-shaped: skip the regex
        return _international(text[1:], text)
    shape = _COMMON_SHAPE.fullmatch(text)
    if shape is None:
        return None
    digits = _NOT_DIGITS.sub("", shape.group(2))
    if len(digits) < MIN_VIABLE_DIGITS:
        return None
    if shape.group(1) == "+":
        return _international(digits)
    if default_region is None:
        return None
    return _national(digits, region_plan(default_region))


def _international(digits: str, written: str | None = None) -> NumberFacts | None:
    """After a `+` or an international prefix: phonenumbers' steps from the calling code on.

    `written`: the text, when it is `+` and these digits, to be kept as the E.164 form if nothing in it changes.
    """
    # phonenumberutil._extract_country_code: the shortest known code (1 to 3 digits) the digits start with.
    if len(digits) <= MIN_NATIONAL_NUMBER_LENGTH or digits[0] == "0":
        return None
    for length in (1, 2, 3):
        calling_code = _CALLING_CODES.get(digits[:length]) or _calling_code(digits[:length])
        if calling_code is not None:
            return _finish(calling_code, calling_code.main, digits[length:], written)
    return None


def _national(digits: str, plan: _Plan) -> NumberFacts | None:
    """phonenumbers.parse's steps for a number without `+`, read in the default region `plan`."""
    prefix = plan.international_prefix.match(digits) if plan.international_prefix is not None else None
    if prefix is not None and digits[prefix.end() : prefix.end() + 1] != "0":
        return _international(digits[prefix.end() :])
    calling_code = calling_code_plan(plan.calling_code)
    if digits.startswith(plan.calling_code_text):
        # Written with the country calling code but without `+`: taken as such when the rest fits better.
        without_code = plan.strip_national_prefix(digits[len(plan.calling_code_text) :])
        if (
            plan.general.fullmatch(digits) is None and plan.general.fullmatch(without_code) is not None
        ) or plan.length_verdict(digits) is Possibility.TOO_LONG:
            # phonenumbers then reads the number in the calling code's main region unless it is this one.
            return _finish(calling_code, calling_code.main, without_code)
    return _finish(calling_code, plan, digits)


def _finish(
    calling_code: _CallingCode, plan: _Plan, national_number: str, written: str | None = None
) -> NumberFacts | None:
    """The national prefix, then the facts: phonenumbers.parse's last steps and its checks."""
    if len(national_number) < MIN_NATIONAL_NUMBER_LENGTH:
        return None
    stripped = plan.strip_national_prefix(national_number)
    if stripped is not national_number and plan.length_verdict(stripped) not in _KEEPS_NATIONAL_PREFIX:
        national_number = stripped
        written = None
    if len(national_number) > MAX_NATIONAL_NUMBER_LENGTH:
        return None
    main = calling_code.main
    region: str | None
    if calling_code.single_region:
        region, valid = main.region, main.is_valid(national_number)
    else:
        region, valid = calling_code.region_and_validity(national_number)
    # A list of a million E.164 numbers keeps its own strings rather than a million equal copies.
    e164 = written if written is not None else f"+{calling_code.code}{national_number}"
    return NumberFacts(e164, calling_code.code, main.length_verdict(national_number), region, valid)


# A national number whose length after removing the national prefix is one of these keeps the prefix:
# phonenumbers takes it for a short number that merely starts like the prefix.
_KEEPS_NATIONAL_PREFIX = (Possibility.TOO_SHORT, Possibility.IS_POSSIBLE_LOCAL_ONLY, Possibility.INVALID_LENGTH)


def facts_from_phonenumbers(text: str, default_region: str | None) -> NumberFacts | ParseError:
    """The same facts from phonenumbers itself: any text, at its full cost."""
    try:
        number = phonenumbers.parse(text, default_region)
    except NumberParseException as error:
        return ParseError(error.error_type)
    return NumberFacts(
        phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        number.country_code or 0,
        Possibility(phonenumbers.is_possible_number_with_reason(number)),
        phonenumbers.region_code_for_number(number),
        phonenumbers.is_valid_number(number),
        number.extension or "",
    )


def number_facts(text: str, default_region: str | None) -> NumberFacts | ParseError:
    """phonenumbers' answer for `text`: through the compiled plans when the shape allows, else phonenumbers."""
    return parse_common_shape(text, default_region) or facts_from_phonenumbers(text, default_region)
