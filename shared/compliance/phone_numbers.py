"""Recipient numbers as people write them, to E.164, with reasons a person can act on. Pure functions, no I/O.

Numbers are read with libphonenumber's rules (`phonenumbers`; the common shapes through the compiled plans of
`shared.compliance.numbering_plans`, which give the same answers faster): `+44 (0) 7700 900123`, `0044 7700
900123` and, with a default region of GB, `07700 900123` are all `+447700900123`. A leading `00` is an
international prefix even where the default region dials out with another (`011` in North America), as people
write it that way everywhere. A number must have a possible length for its country; libphonenumber's stricter
"valid" (in an assigned range) is reported, and refused only when asked (`strict`), except for the published
fictional ranges (`shared.compliance.fictional_numbers`). Letters and extensions are refused: SMS reaches
neither a vanity spelling nor an extension.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import phonenumbers
from phonenumbers import NumberParseException

from shared.compliance.fictional_numbers import is_fictional
from shared.compliance.numbering_plans import (
    NON_GEOGRAPHIC_REGION,
    NumberFacts,
    ParseError,
    Possibility,
    calling_code_plan,
    facts_from_phonenumbers,
    parse_common_shape,
    region_plan,
)

MAX_REPORTED_INVALID = 100
MAX_ECHOED_CHARACTERS = 64
SUPPORTED_REGIONS = frozenset(phonenumbers.SUPPORTED_REGIONS)

_LEADING_DOUBLE_ZERO = re.compile(r"([^0-9+\uff0b]*)00", re.ASCII)
_NOT_ASCII_DIGITS = re.compile(r"[^0-9]+", re.ASCII)
# What is left of an entry once the separators phonenumbers ignores are gone: nothing means "empty".
_SEPARATORS_AND_SPACE = re.compile(r"[\s\-.()/\[\]~\u2010-\u2015\u2212\u30fc\uff0d-\uff0f\u00ad\u200b\u2060]+")


class InvalidPhoneNumber(ValueError):
    """The entry cannot be sent to; `reason` says why in words a person can act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PhoneNumber(NamedTuple):
    """A number intake can send to: its E.164 form, its country, and what libphonenumber says of its range."""

    e164: str
    country: str  # ISO 3166-1 alpha-2 ("001" for non-geographic codes such as +800)
    valid: bool  # in a range libphonenumber knows as assigned
    fictional: bool  # in a published fictional range: accepted even when `strict`, valid or not


@dataclass(frozen=True)
class InvalidRecipient:
    index: int
    value: Any
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "value": echo_value(self.value), "reason": self.reason}


@dataclass
class NormalisedRecipients:
    numbers: list[str] = field(default_factory=list)  # valid, distinct, in first-seen order
    countries: list[str] = field(default_factory=list)  # the country of each of `numbers`
    duplicates: int = 0
    invalid_count: int = 0
    invalid_sample: list[InvalidRecipient] = field(default_factory=list)  # the first MAX_REPORTED_INVALID
    not_valid: int = 0  # accepted numbers libphonenumber does not know as assigned (fictional ones aside)

    def count_invalid(self, index: int, value: Any, reason: str) -> None:
        self.invalid_count += 1
        if len(self.invalid_sample) < MAX_REPORTED_INVALID:
            self.invalid_sample.append(InvalidRecipient(index, value, reason))

    def per_country(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for country in self.countries:
            counts[country] = counts.get(country, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def echo_value(value: Any) -> Any:
    """`value` as it may be shown back: text of at most 64 characters, control characters escaped.

    Numbers, booleans and null are shown as given; arrays and objects as compact JSON text, shortened alike.
    """
    if value is None or isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    shown: list[str] = []
    length = 0
    for position, character in enumerate(text):
        if unicodedata.category(character) in ("Cc", "Cf", "Zl", "Zp"):
            character = character.encode("unicode_escape").decode("ascii")
        if length + len(character) > MAX_ECHOED_CHARACTERS - (1 if position < len(text) - 1 else 0):
            shown.append("…")
            break
        shown.append(character)
        length += len(character)
    return "".join(shown)


def _place(calling_code: int) -> str:
    """How a calling code's country is named in reasons: `GB`, or `+800` for a non-geographic code."""
    region = calling_code_plan(calling_code).main.region
    return f"+{calling_code}" if region == NON_GEOGRAPHIC_REGION else region


def _international_prefix_as_plus(text: str, default_region: str | None) -> str:
    """`text` with a leading `00` written as `+`, unless the default region's own international prefix reads it."""
    if "+" in text or "\uff0b" in text:
        return text
    double_zero = _LEADING_DOUBLE_ZERO.match(text)
    if double_zero is None:
        return text
    if default_region is not None:
        prefix = region_plan(default_region).international_prefix
        if prefix is not None and prefix.match(_NOT_ASCII_DIGITS.sub("", text)):
            return text  # phonenumbers reads the region's prefix itself (`00` in GB, `0041` in Brazil)
    return double_zero.group(1) + "+" + text[double_zero.end() :]


def _has_letters(text: str) -> bool:
    return any(character.isalpha() for character in text)


def _parse_error_reason(text: str, error: ParseError, default_region: str | None) -> str:
    if error.error_type == NumberParseException.INVALID_COUNTRY_CODE:
        if default_region is None and "+" not in text and "\uff0b" not in text:
            return "missing country code: start with + or 00, or set default_region"
        return "unknown country code"
    if _has_letters(text):
        return "contains letters"
    if _SEPARATORS_AND_SPACE.sub("", text) == "":
        return "empty"
    if error.error_type == NumberParseException.TOO_LONG:
        return "too long"
    if error.error_type == NumberParseException.TOO_SHORT_AFTER_IDD:
        return "too short after the international prefix"
    if error.error_type == NumberParseException.TOO_SHORT_NSN or sum(ch.isdigit() for ch in text) < 3:
        return "too short"
    return "not a phone number: use digits, spaces, dashes, dots and parentheses"


def _facts_of_unusual_text(text: str, default_region: str | None) -> NumberFacts:
    """phonenumbers' facts for text outside the common shapes; InvalidPhoneNumber for what it cannot read, and
    for extensions and letters, which it reads but which SMS cannot reach."""
    if not text or text.isspace():
        raise InvalidPhoneNumber("empty")
    facts = facts_from_phonenumbers(text, default_region)
    if isinstance(facts, ParseError):
        raise InvalidPhoneNumber(_parse_error_reason(text, facts, default_region))
    if facts.extension:
        raise InvalidPhoneNumber(f"has an extension ({facts.extension}): SMS cannot reach an extension")
    if _has_letters(text):  # phonenumbers reads letters as keypad digits or drops them: neither is safe
        raise InvalidPhoneNumber("contains letters")
    return facts


def _refuse_kept_trunk_prefix(facts: NumberFacts) -> None:
    """Refuse a number phonenumbers kept its trunk prefix in because the rest was too short for the country.

    `07700 9001` in GB is one digit short; phonenumbers then keeps the `0` and the ten digits pass as a possible
    `+44077009001`, a number no British line has. Only numbers outside the assigned ranges get here.
    """
    plan = calling_code_plan(facts.calling_code).main
    national_number = facts.e164[len(plan.calling_code_text) + 1 :]
    without_trunk = plan.strip_national_prefix(national_number)
    if without_trunk is national_number:
        return
    verdict = plan.length_verdict(without_trunk)
    trunk = national_number[: len(national_number) - len(without_trunk)] or "prefix"
    if verdict in (Possibility.TOO_SHORT, Possibility.IS_POSSIBLE_LOCAL_ONLY):
        raise InvalidPhoneNumber(f"too short for {_place(facts.calling_code)} without the trunk prefix {trunk}")
    if verdict is Possibility.INVALID_LENGTH:
        raise InvalidPhoneNumber(f"wrong length for {_place(facts.calling_code)} without the trunk prefix {trunk}")


def _judge(facts: NumberFacts, strict: bool) -> PhoneNumber:
    """The policy over phonenumbers' facts: a possible length, and with `strict` a valid or fictional number."""
    possibility = facts.possibility
    if possibility is not Possibility.IS_POSSIBLE:
        place = _place(facts.calling_code)
        # A local-only length is a number without its area code: too short to reach from anywhere else.
        if possibility in (Possibility.TOO_SHORT, Possibility.IS_POSSIBLE_LOCAL_ONLY):
            raise InvalidPhoneNumber(f"too short for {place}")
        if possibility is Possibility.TOO_LONG:
            raise InvalidPhoneNumber(f"too long for {place}")
        if possibility is Possibility.INVALID_LENGTH:
            raise InvalidPhoneNumber(f"wrong length for {place}")
        raise InvalidPhoneNumber("unknown country code")
    country = facts.region or _place(facts.calling_code)
    fictional = is_fictional(facts.e164)
    if facts.valid:
        return PhoneNumber(facts.e164, country, True, fictional)
    _refuse_kept_trunk_prefix(facts)
    if strict and not fictional:
        raise InvalidPhoneNumber(f"not a valid number for {country}")
    return PhoneNumber(facts.e164, country, False, fictional)


def check_default_region(region: str | None) -> str | None:
    """The region in upper case; ValueError unless phonenumbers has a plan for it (ISO 3166-1 alpha-2)."""
    if region is None:
        return None
    upper = region.strip().upper()
    if upper not in SUPPORTED_REGIONS:
        raise ValueError(f"{region!r} is not an ISO 3166-1 alpha-2 country code with a numbering plan")
    return upper


def check_country_codes(codes: str | Collection[str]) -> frozenset[str]:
    """ISO 3166-1 alpha-2 codes (`"GB, ie"` or a collection) in upper case, `001` for non-geographic numbers;
    ValueError naming the first unknown one."""
    items = codes.split(",") if isinstance(codes, str) else codes
    checked = set()
    for item in items:
        code = item.strip().upper()
        if not code:
            continue
        if code not in SUPPORTED_REGIONS and code != NON_GEOGRAPHIC_REGION:
            raise ValueError(f"{item.strip()!r} is not an ISO 3166-1 alpha-2 country code with a numbering plan")
        checked.add(code)
    return frozenset(checked)


def parse_phone_number(raw: Any, default_region: str | None = None, *, strict: bool = False) -> PhoneNumber:
    """`raw` as an E.164 number with its country; InvalidPhoneNumber (with a reason) when it cannot be sent to.

    `default_region` (ISO 3166-1 alpha-2, upper case) is the country national numbers are read in; without it
    only international numbers (`+44…`, `0044…`) are accepted. `strict` refuses numbers libphonenumber does not
    know as assigned, fictional ranges aside.
    """
    if not isinstance(raw, str):
        raise InvalidPhoneNumber("not a string")
    text = raw if raw[:1] == "+" else _international_prefix_as_plus(raw, default_region)
    facts = parse_common_shape(text, default_region) or _facts_of_unusual_text(text, default_region)
    return _judge(facts, strict)


def normalise_phone_number(raw: Any, default_region: str | None = None) -> str | None:
    """The E.164 form of `raw`, or None when it cannot be sent to."""
    try:
        return parse_phone_number(raw, default_region).e164
    except InvalidPhoneNumber:
        return None


def invalid_reason(raw: Any, default_region: str | None = None, *, strict: bool = False) -> str:
    """Why `raw` is refused ("" if it is not)."""
    try:
        parse_phone_number(raw, default_region, strict=strict)
    except InvalidPhoneNumber as error:
        return error.reason
    return ""


@dataclass(frozen=True)
class NumberRules:
    """How a list's numbers are read: its default region, `strict` validity, the countries allowed.

    `allowed_countries` (ISO codes; None: any) mirrors Twilio's geo permissions: a number elsewhere is refused at
    intake instead of failing at send with 21408.
    """

    default_region: str | None = None
    strict: bool = False
    allowed_countries: frozenset[str] | None = None


class RecipientNumberReader:
    """Reads a list's numbers under one set of rules, keeping first occurrences and reporting the refused."""

    def __init__(self, rules: NumberRules | None = None) -> None:
        self.rules = rules or NumberRules()
        self.result = NormalisedRecipients()
        self._seen: set[str] = set()

    def read(self, index: int, raw: Any) -> bool:
        """Take entry `index`; True when it is a new number (appended to `result.numbers`)."""
        rules = self.rules
        facts = None
        if type(raw) is str:
            text = raw if raw[:1] == "+" else _international_prefix_as_plus(raw, rules.default_region)
            facts = parse_common_shape(text, rules.default_region)
        if facts is not None and facts.valid and facts.possibility is Possibility.IS_POSSIBLE:
            # Most numbers: what parse_phone_number would return, without the policy for the rest.
            e164, country, counted_valid = facts.e164, str(facts.region), True
        else:
            try:
                if facts is None:
                    number = parse_phone_number(raw, rules.default_region, strict=rules.strict)
                else:
                    number = _judge(facts, rules.strict)
            except InvalidPhoneNumber as error:
                self.result.count_invalid(index, raw, error.reason)
                return False
            e164, country, counted_valid = number.e164, number.country, number.valid or number.fictional
        if e164 in self._seen:
            self.result.duplicates += 1
            return False
        if rules.allowed_countries is not None and country not in rules.allowed_countries:
            self.result.count_invalid(index, raw, f"{country} is not among the allowed countries")
            return False
        self._seen.add(e164)
        self.result.numbers.append(e164)
        self.result.countries.append(country)
        if not counted_valid:
            self.result.not_valid += 1
        return True


def normalise_recipients(raw_recipients: Sequence[Any], rules: NumberRules | None = None) -> NormalisedRecipients:
    """Normalise every entry, keep the first occurrence of each number, and report the refused ones."""
    reader = RecipientNumberReader(rules)
    read = reader.read
    for index, raw in enumerate(raw_recipients):
        read(index, raw)
    return reader.result


def mask_phone_number(number: str) -> str:
    """For logs: keep only the last four digits."""
    return "*" * max(len(number) - 4, 0) + number[-4:]
