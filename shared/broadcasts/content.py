"""What a broadcast will send and cost: templates against recipients, segments per rendered message, price.

Pure, no I/O. Intake calls `prepare_content` once; the plain (non-template) path does no per-recipient work
beyond phone normalisation (and a price lookup when PRICE_TABLE has prefixes). Template segment counts are
derived from per-piece profiles (literal text and each distinct variable value, counted once), falling back to
an exact count only for rendered messages whose extension characters or surrogate pairs could straddle a part.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from shared.broadcasts.segments import (
    GSM7_BASIC_CHARACTERS,
    GSM7_EXTENSION_CHARACTERS,
    GSM7_MULTIPART_SEPTETS,
    GSM7_SINGLE_SEGMENT_SEPTETS,
    UCS2_MULTIPART_UNITS,
    UCS2_SINGLE_SEGMENT_UNITS,
    count_segments,
    may_join_previous,
)
from shared.broadcasts.smart_encoding import smart_encode
from shared.broadcasts.templates import MessageTemplate, Placeholder, parse_template
from shared.compliance.phone_numbers import NormalisedRecipients, NumberRules, RecipientNumberReader

MAX_RENDERED_CHARACTERS = 1_600
MAX_REPORTED_UCS2_CHARACTERS = 100
MAX_REPORTED_TEMPLATE_PROBLEMS = 100
COST_QUANTUM = Decimal("0.0001")  # broadcasts.estimated_cost is NUMERIC(14, 4)
_GSM7 = GSM7_BASIC_CHARACTERS | GSM7_EXTENSION_CHARACTERS


class ContentError(Exception):
    """The broadcast's content cannot be accepted; nothing was stored."""


class TemplateRecipientsError(ContentError):
    """Some recipients lack a value for a placeholder without default, or their message renders too long."""

    def __init__(self, problem_count: int, problems: list[dict[str, Any]]) -> None:
        super().__init__(f"{problem_count} recipient(s) cannot be rendered")
        self.problem_count = problem_count
        self.problems = problems


class ContentLimitError(ContentError):
    """The broadcast is over its own `max_segments` or `max_cost`."""

    def __init__(self, detail: str, figures: dict[str, Any]) -> None:
        super().__init__(detail)
        self.detail = detail
        self.figures = figures


@dataclass(frozen=True)
class Pricing:
    """The price per segment of a number: the longest PRICE_TABLE prefix it starts with, else its country's PRICE_TABLE
    entry, else PRICE_PER_SEGMENT."""

    price_per_segment: Decimal
    by_prefix: Mapping[str, Decimal] = field(default_factory=dict)
    currency: str = "USD"
    by_country: Mapping[str, Decimal] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Any) -> Pricing:
        return cls(
            Decimal(str(settings.price_per_segment)),
            {prefix: Decimal(str(price)) for prefix, price in settings.price_by_prefix.items()},
            settings.price_currency,
            {country: Decimal(str(price)) for country, price in settings.price_by_country.items()},
        )

    def price_for(self, number: str, country: str | None = None) -> Decimal:
        """The price per segment for `number` (in `country`, an ISO code)."""
        for length in self._prefix_lengths:
            price = self.by_prefix.get(number[:length])
            if price is not None:
                return price
        return self.by_country.get(country or "", self.price_per_segment)

    @property
    def _prefix_lengths(self) -> list[int]:
        return sorted({len(prefix) for prefix in self.by_prefix}, reverse=True)

    def as_dict(self) -> dict[str, Any]:
        return {
            "currency": self.currency,
            "price_per_segment": float(self.price_per_segment),
            "price_per_segment_by_country": {country: float(price) for country, price in self.by_country.items()},
            "price_per_segment_by_prefix": {prefix: float(price) for prefix, price in self.by_prefix.items()},
        }


@dataclass(frozen=True, slots=True)
class _Profile:
    """How a piece of text counts: septets if GSM-7 (else None), UCS-2 units, and whether exact packing matters
    (characters of two septets or two units, or ones that form a cluster with their neighbour, which a segment
    boundary may not split)."""

    characters: int
    septets: int | None
    units: int
    needs_exact_count: bool


# Any character that is not one GSM-7 septet. Text without one is GSM-7 at one septet per character, and Smart
# Encoding leaves it unchanged (it only replaces characters outside GSM-7).
_NOT_BASIC_GSM7 = re.compile("[^" + "".join(re.escape(ch) for ch in sorted(GSM7_BASIC_CHARACTERS)) + "]")


def _profile(text: str) -> _Profile:
    if _NOT_BASIC_GSM7.search(text) is None:  # the common case, without a loop over characters
        return _Profile(len(text), len(text), len(text), False)
    is_gsm = all(ch in _GSM7 for ch in text)
    extension = sum(1 for ch in text if ch in GSM7_EXTENSION_CHARACTERS) if is_gsm else 0
    astral = sum(1 for ch in text if ord(ch) > 0xFFFF)
    exact = extension > 0 or astral > 0 or may_join_previous(text)
    return _Profile(len(text), len(text) + extension if is_gsm else None, len(text) + astral, exact)


def _segments_for(septets: int | None, units: int) -> int:
    if septets is not None:
        return 1 if septets <= GSM7_SINGLE_SEGMENT_SEPTETS else -(-septets // GSM7_MULTIPART_SEPTETS)
    return 1 if units <= UCS2_SINGLE_SEGMENT_UNITS else -(-units // UCS2_MULTIPART_UNITS)


def ucs2_characters(body: str, smart_encoded: bool) -> list[tuple[int, str]]:
    """Characters of `body` (positions in the body as given) that force UCS-2, after Smart Encoding if on."""
    found = []
    for position, ch in enumerate(body):
        counted = smart_encode(ch) if smart_encoded else ch
        if any(c not in _GSM7 for c in counted):
            found.append((position, ch))
            if len(found) >= MAX_REPORTED_UCS2_CHARACTERS:
                break
    return found


@dataclass(frozen=True)
class ContentReport:
    """Encoding and segments of the message(s), per recipient, and the estimated cost."""

    encoding: str  # "UCS-2" when any recipient's message is UCS-2
    characters: int  # of the longest rendered message
    segments: int  # of the longest rendered message (1 for an MMS)
    segments_min: int | None  # None for MMS: priced per message, not per segment
    segments_max: int | None
    segments_total: int | None
    estimated_cost: Decimal | None
    mms: bool = False


def _clean_variables(raw: Any) -> dict[str, str] | str | None:
    """The `vars` object with values as strings; a string is the reason it is refused."""
    if raw is None:
        return None
    if type(raw) is not dict:
        return "vars must be an object"
    for value in raw.values():
        if type(value) is not str or "\x00" in value:
            return _converted_variables(raw)
    return raw  # the common case: text values only, kept as they are


def _converted_variables(raw: dict[str, Any]) -> dict[str, str] | str:
    cleaned: dict[str, str] = {}
    for name, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return f"vars.{name} must be a string or a number"
        text = value if isinstance(value, str) else str(value)
        if "\x00" in text:
            return f"vars.{name} contains a NUL character"
        cleaned[name] = text
    return cleaned


class PreparedContent:
    """A request's message and its recipients, read a batch at a time (`read_more`) or at once (`read_all`).

    Intake stores the numbers read so far while it reads the rest: PostgreSQL's COPY runs in its own process, so
    reading and storing a million recipients use both cores. Entries may be numbers or `{"to": ..., "vars": {...}}`
    objects; for a template, the request index and the variables the template uses (None when none) are kept per
    number. A plain message ignores `vars`, but a malformed one still makes its entry invalid.
    """

    def __init__(self, template: MessageTemplate, entries: Sequence[Any], rules: NumberRules | None = None) -> None:
        self.template = template
        self._entries = enumerate(entries)
        self._reader = RecipientNumberReader(rules)
        self._names = frozenset(template.names) if template.has_placeholders else None
        self.indexes: list[int] | None = [] if template.has_placeholders else None  # request index per number
        self.variables: list[dict[str, str] | None] | None = [] if template.has_placeholders else None
        self.done = False

    @property
    def recipients(self) -> NormalisedRecipients:
        return self._reader.result

    @property
    def is_template(self) -> bool:
        return self.template.has_placeholders

    def read_more(self, count: int) -> int:
        """Read entries until `count` more numbers are kept or none is left; returns how many were kept."""
        read = self._reader.read
        result = self._reader.result
        names, indexes, variables = self._names, self.indexes, self.variables
        kept_before = len(result.numbers)
        enough = kept_before + count
        for index, entry in self._entries:
            values: dict[str, str] | None = None
            if type(entry) is dict:
                raw = entry.get("to")
                cleaned = _clean_variables(entry.get("vars"))
                if isinstance(cleaned, str) or raw is None:
                    result.count_invalid(index, raw, cleaned if isinstance(cleaned, str) else "missing 'to'")
                    continue
                if cleaned and names:
                    # Names the template does not use are dropped; usually there are none to drop.
                    values = cleaned if cleaned.keys() <= names else {n: v for n, v in cleaned.items() if n in names}
                    values = values or None
            else:
                raw = entry
            if read(index, raw):
                if indexes is not None and variables is not None:
                    indexes.append(index)
                    variables.append(values)
                if len(result.numbers) >= enough:
                    break
        else:
            self.done = True
        return len(result.numbers) - kept_before

    def read_all(self) -> PreparedContent:
        while not self.done:
            self.read_more(1 << 62)
        return self


def start_reading(message: str, entries: Sequence[Any], rules: NumberRules | None = None) -> PreparedContent:
    """The parsed message, with its recipients yet to read (`read_more`, `read_all`)."""
    return PreparedContent(parse_template(message), entries, rules)


def prepare_recipients(message: str, entries: Sequence[Any], rules: NumberRules | None = None) -> PreparedContent:
    """Parse the message and read every recipient; per-recipient variables only for a template."""
    return start_reading(message, entries, rules).read_all()


def check_template_recipients(content: PreparedContent) -> None:
    """Raise TemplateRecipientsError listing recipients with missing values or a too-long message."""
    if not content.is_template or content.variables is None or content.indexes is None:
        return
    template = content.template
    problems: list[dict[str, Any]] = []
    count = 0
    literal_length = len(template.literal_text)
    required = frozenset(part.name for part in template.parts if isinstance(part, Placeholder) and part.default is None)
    for position, values in enumerate(content.variables):
        # Most recipients give every required name: one set comparison instead of walking the template.
        missing = template.missing_names(values) if required and not required <= (values or {}).keys() else []
        problem: dict[str, Any] | None = None
        if missing:
            problem = {"missing": missing}
        elif values and literal_length + sum(map(len, values.values())) > MAX_RENDERED_CHARACTERS:
            length = len(template.render(values))
            if length > MAX_RENDERED_CHARACTERS:
                problem = {"reason": f"the message renders to {length:,} characters, over {MAX_RENDERED_CHARACTERS:,}"}
        if problem is not None:
            count += 1
            if len(problems) < MAX_REPORTED_TEMPLATE_PROBLEMS:
                index = content.indexes[position]
                problems.append({"index": index, "to": content.recipients.numbers[position], **problem})
    if count:
        raise TemplateRecipientsError(count, problems)


def _prices(numbers: Sequence[str], countries: Sequence[str], pricing: Pricing) -> list[Decimal] | None:
    """The price per segment of each number, or None when every number has the default price."""
    if not pricing.by_prefix and not pricing.by_country:
        return None
    lengths = pricing._prefix_lengths
    by_prefix = pricing.by_prefix
    by_country = pricing.by_country
    default = pricing.price_per_segment
    prices = []
    for number, country in zip(numbers, countries, strict=True):
        price = by_country.get(country, default)
        for length in lengths:
            found = by_prefix.get(number[:length])
            if found is not None:
                price = found
                break
        prices.append(price)
    return prices


def report_content(
    content: PreparedContent,
    message: str,
    *,
    media_urls: Sequence[str] | None,
    smart_encoded: bool,
    pricing: Pricing,
) -> ContentReport:
    """Encoding, segments per recipient and estimated cost of what intake is about to store."""
    numbers = content.recipients.numbers
    if media_urls:
        # One MMS per recipient: Twilio prices MMS per message, and no MMS price is configured.
        characters = len(content.template.literal_text if content.is_template else message)
        encoding = "UCS-2" if ucs2_characters(message, smart_encoded) else "GSM-7"
        return ContentReport(encoding, characters, 1, None, None, None, None, mms=True)
    prices = _prices(numbers, content.recipients.countries, pricing)
    if not content.is_template:
        body = content.template.literal_text  # `{{` / `}}` unescaped
        count = count_segments(smart_encode(body) if smart_encoded else body)
        segments = count.segments
        if prices is None:
            cost = pricing.price_per_segment * segments * len(numbers)
        else:
            cost = sum(prices, Decimal(0)) * segments
        total = segments * len(numbers)
        return ContentReport(
            count.encoding, len(body), segments, segments, segments, total, cost.quantize(COST_QUANTUM, ROUND_HALF_UP)
        )
    return _report_template(content, smart_encoded, prices, pricing)


def _report_template(
    content: PreparedContent, smart_encoded: bool, prices: list[Decimal] | None, pricing: Pricing
) -> ContentReport:
    assert content.variables is not None
    template = content.template
    encode = smart_encode if smart_encoded else (lambda text: text)
    literal_profiles = [_profile(encode(part)) for part in template.parts if isinstance(part, str)]
    base_septets: int | None = 0
    base_units = 0
    base_exact = False
    base_characters = 0
    for profile in literal_profiles:
        base_characters += profile.characters
        base_units += profile.units
        base_exact = base_exact or profile.needs_exact_count
        base_septets = None if base_septets is None or profile.septets is None else base_septets + profile.septets
    placeholders = [part for part in template.parts if isinstance(part, Placeholder)]
    value_profiles: dict[str, _Profile] = {}
    plain_profiles: dict[int, _Profile] = {}  # GSM-7 basic text: the profile depends on the length alone
    per_body: dict[str, tuple[int, int, bool]] = {}  # exact fallback: rendered body -> (segments, characters, ucs2)
    segments_min = segments_max = total = 0
    max_characters = 0
    any_ucs2 = False
    cost_units = Decimal(0)  # sum of segments x price over the numbers with a PRICE_TABLE price
    default_segments = 0
    for position, values in enumerate(content.variables):
        given = values or {}
        septets, units, exact, characters = base_septets, base_units, base_exact, base_characters
        for placeholder in placeholders:
            value = given.get(placeholder.name)
            if value is None:
                value = placeholder.default or ""
            cached_profile = value_profiles.get(value)
            if cached_profile is None:
                if _NOT_BASIC_GSM7.search(value) is None:  # one septet per character, whatever the encoding
                    cached_profile = plain_profiles.get(len(value))
                    if cached_profile is None:
                        cached_profile = plain_profiles[len(value)] = _profile(value)
                else:
                    cached_profile = _profile(encode(value))
                value_profiles[value] = cached_profile
            profile = cached_profile
            characters += profile.characters
            units += profile.units
            exact = exact or profile.needs_exact_count
            septets = None if septets is None or profile.septets is None else septets + profile.septets
        ucs2 = septets is None
        if exact:
            body = template.render(values)
            cached = per_body.get(body)
            if cached is None:
                count = count_segments(encode(body))
                cached = per_body[body] = (count.segments, len(body), count.encoding == "UCS-2")
            segments, characters, ucs2 = cached
        else:
            segments = _segments_for(septets, units)
        any_ucs2 = any_ucs2 or ucs2
        if position == 0 or segments < segments_min:
            segments_min = segments
        if segments > segments_max:
            segments_max = segments
        if characters > max_characters:
            max_characters = characters
        total += segments
        if prices is None:
            default_segments += segments
        else:
            cost_units += prices[position] * segments
    cost = cost_units + pricing.price_per_segment * default_segments
    return ContentReport(
        "UCS-2" if any_ucs2 else "GSM-7",
        max_characters,
        segments_max,
        segments_min,
        segments_max,
        total,
        cost.quantize(COST_QUANTUM, ROUND_HALF_UP),
    )


def check_limits(report: ContentReport, *, max_segments: int | None, max_cost: Decimal | None) -> None:
    """Raise ContentLimitError when the broadcast is over its `max_segments` (per message) or `max_cost`."""
    if report.mms and (max_segments is not None or max_cost is not None):
        raise ContentLimitError(
            "max_segments and max_cost cannot be checked for an MMS broadcast: MMS are priced per message and no "
            "MMS price is configured.",
            {"mms": True, "max_segments": max_segments, "max_cost": None if max_cost is None else float(max_cost)},
        )
    figures = {
        "segments_per_recipient": {
            "min": report.segments_min,
            "max": report.segments_max,
            "total": report.segments_total,
        },
        "estimated_cost": None if report.estimated_cost is None else float(report.estimated_cost),
    }
    if max_segments is not None and report.segments_max is not None and report.segments_max > max_segments:
        raise ContentLimitError(
            f"The longest message takes {report.segments_max} segments, over max_segments {max_segments}.",
            {"max_segments": max_segments, **figures},
        )
    if max_cost is not None and report.estimated_cost is not None and report.estimated_cost > max_cost:
        raise ContentLimitError(
            f"The estimated cost {report.estimated_cost} is over max_cost {max_cost}.",
            {"max_cost": float(max_cost), **figures},
        )


def message_report(broadcast: Any) -> dict[str, Any]:
    """The `message` object of a broadcast's API representation, from its stored columns."""
    mms = bool(broadcast.media_urls)
    per_recipient = None
    if broadcast.segments_total is not None:
        per_recipient = {
            "min": broadcast.segments_min,
            "max": broadcast.segments_max,
            "total": broadcast.segments_total,
        }
    report: dict[str, Any] = {
        "characters": broadcast.characters,
        "encoding": broadcast.encoding,
        "segments": None if mms else broadcast.segments,
        "segments_per_recipient": per_recipient,
        "ucs2_characters": [
            {"position": position, "character": ch}
            for position, ch in ucs2_characters(broadcast.body or "", bool(broadcast.smart_encoded))
        ],
        "smart_encoded": bool(broadcast.smart_encoded),
        "template": bool(broadcast.is_template),
        "mms": mms,
    }
    if mms:
        report["media_urls"] = list(broadcast.media_urls)
    if broadcast.validity_period is not None:
        report["validity_period"] = broadcast.validity_period
    return report


def cost_report(broadcast: Any, pricing: Pricing) -> dict[str, Any]:
    """The `cost` object: the stored estimate, with today's prices and currency."""
    estimated = broadcast.estimated_cost
    report: dict[str, Any] = {"estimated": None if estimated is None else float(estimated), **pricing.as_dict()}
    if broadcast.max_cost is not None:
        report["max_cost"] = float(broadcast.max_cost)
    if broadcast.max_segments is not None:
        report["max_segments"] = broadcast.max_segments
    if broadcast.media_urls:
        report["note"] = "MMS: priced per message by Twilio, not per segment; no MMS price is configured."
    return report
