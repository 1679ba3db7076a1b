"""Intake's content report: segments per rendered message, UCS-2 characters, cost by country prefix, limits."""

from __future__ import annotations

from decimal import Decimal

import pytest

from shared.broadcasts.content import (
    ContentLimitError,
    ContentReport,
    Pricing,
    TemplateRecipientsError,
    check_limits,
    check_template_recipients,
    prepare_recipients,
    report_content,
    ucs2_characters,
)
from shared.broadcasts.segments import count_segments
from shared.broadcasts.smart_encoding import smart_encode

PRICING = Pricing(Decimal("0.01"), {"+44": Decimal("0.04"), "+447700": Decimal("0.05")}, "USD")


def report(
    message: str, recipients: list[object], *, smart: bool = False, media: list[str] | None = None
) -> ContentReport:
    content = prepare_recipients(message, recipients)
    check_template_recipients(content)
    return report_content(content, message, media_urls=media, smart_encoded=smart, pricing=PRICING)


def test_plain_message_costs_segments_times_each_numbers_price_longest_prefix_first() -> None:
    result = report("a" * 161, ["+15550000001", "+441234567890", "+447700900123"])

    assert (result.encoding, result.segments) == ("GSM-7", 2)
    assert (result.segments_min, result.segments_max, result.segments_total) == (2, 2, 6)
    assert result.estimated_cost == Decimal("0.2000")  # 2 x (0.01 + 0.04 + 0.05)


def test_without_price_table_the_default_price_applies() -> None:
    content = prepare_recipients("hello", ["+15550000001", "+15550000002"])
    result = report_content(content, "hello", media_urls=None, smart_encoded=False, pricing=Pricing(Decimal("0.0083")))

    assert result.estimated_cost == Decimal("0.0166")


# Values chosen to land rendered messages on every boundary, with extension characters and emoji at the edges.
VALUES = ["", "Ann", "a" * 8, "€", "€€", "[" * 5, "é", "ê", "😀", "я" * 3, "x" * 140, "\u2019", "\u2026", "😀" * 3]


@pytest.mark.parametrize("smart", [False, True])
@pytest.mark.parametrize("prefix", ["a" * 145, "a" * 150, "я" * 60, "Hi ", "a" * 151 + "€", "я" * 64 + "😀"])
def test_template_segments_match_an_exact_count_of_every_rendered_message(prefix: str, smart: bool) -> None:
    template = prefix.replace("{", "{{") + "{name}!"
    recipients = [{"to": f"+1555000{index:04d}", "vars": {"name": value}} for index, value in enumerate(VALUES)]

    result = report(template, recipients, smart=smart)

    exact = [count_segments(smart_encode(prefix + v + "!") if smart else prefix + v + "!") for v in VALUES]
    assert result.segments_total == sum(count.segments for count in exact)
    assert result.segments_min == min(count.segments for count in exact)
    assert result.segments_max == max(count.segments for count in exact)
    assert result.encoding == ("UCS-2" if any(count.encoding == "UCS-2" for count in exact) else "GSM-7")
    assert result.estimated_cost == Decimal("0.01") * result.segments_total


def test_recipient_objects_and_strings_mix_and_defaults_fill_gaps() -> None:
    content = prepare_recipients(
        "Hi {first_name|there}",
        ["+15550000001", {"to": "+15550000002", "vars": {"first_name": "Ann", "unused": "x"}}, {"to": "bad"}],
    )

    assert content.recipients.numbers == ["+15550000001", "+15550000002"]
    assert content.variables == [None, {"first_name": "Ann"}]  # only the names the template uses are kept
    assert content.recipients.invalid_sample[0].index == 2
    check_template_recipients(content)  # the default covers the first recipient


def test_missing_values_are_listed_with_index_number_and_names() -> None:
    content = prepare_recipients(
        "Dear {title} {surname}, {amount|nothing} due",
        [
            {"to": "+15550000001", "vars": {"title": "Ms", "surname": "Lee"}},
            {"to": "+15550000002", "vars": {"title": "Mr"}},
            "+15550000003",
        ],
    )

    with pytest.raises(TemplateRecipientsError) as raised:
        check_template_recipients(content)

    assert raised.value.problem_count == 2
    assert raised.value.problems == [
        {"index": 1, "to": "+15550000002", "missing": ["surname"]},
        {"index": 2, "to": "+15550000003", "missing": ["title", "surname"]},
    ]


def test_a_rendered_message_over_1600_characters_is_refused() -> None:
    content = prepare_recipients("{text}", [{"to": "+15550000001", "vars": {"text": "a" * 1601}}])

    with pytest.raises(TemplateRecipientsError) as raised:
        check_template_recipients(content)

    assert "1,601 characters" in raised.value.problems[0]["reason"]


def test_ucs2_characters_are_reported_with_positions_after_smart_encoding() -> None:
    message = "Don\u2019t \u4f60 \U0001f600"

    assert ucs2_characters(message, smart_encoded=False) == [(3, "\u2019"), (6, "\u4f60"), (8, "\U0001f600")]
    assert ucs2_characters(message, smart_encoded=True) == [(6, "\u4f60"), (8, "\U0001f600")]


def test_mms_has_no_segment_count_or_cost() -> None:
    result = report("", ["+15550000001"], media=["https://example.com/a.png"])

    assert result.mms
    assert (result.segments_total, result.estimated_cost) == (None, None)


def test_limits() -> None:
    result = report("a" * 161, ["+15550000001", "+15550000002"])

    check_limits(result, max_segments=2, max_cost=Decimal("0.04"))
    with pytest.raises(ContentLimitError) as over_segments:
        check_limits(result, max_segments=1, max_cost=None)
    assert over_segments.value.figures["segments_per_recipient"] == {"min": 2, "max": 2, "total": 4}
    with pytest.raises(ContentLimitError) as over_cost:
        check_limits(result, max_segments=None, max_cost=Decimal("0.039"))
    assert over_cost.value.figures["estimated_cost"] == 0.04
