"""Smart Encoding: the look-alike characters Twilio replaces before sending, and what that does to segments."""

from __future__ import annotations

import pytest

from shared.broadcasts.segments import count_segments
from shared.broadcasts.smart_encoding import smart_encode


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain text", "plain text"),
        ("\u2018single\u2019 \u201cdouble\u201d \u201elow\u201c", '\'single\' "double" "low"'),
        ("en\u2013dash em\u2014dash", "en-dash em-dash"),
        ("wait\u2026", "wait..."),
        ("\u00bd \u00bc \u00be \u2153", "1/2 1/4 3/4 1/3"),
        ("\uff28\uff45\uff4c\uff4c\uff4f\uff01", "Hello!"),  # fullwidth letters
        ("a\u2009b\u2002c\u3000d", "a b c d"),  # thin, en, ideographic spaces
        ("no\u00a0break", "no break"),
        ("zero\u200bwidth\u200c\u200d\ufeff", "zerowidth"),
        ("tab\there", "tab here"),
        ("caf\u00e9 \u20ac", "caf\u00e9 \u20ac"),  # GSM-7 characters are left alone
        ("\u4f60\u597d", "\u4f60\u597d"),  # no look-alike: unchanged
    ],
)
def test_smart_encode(text: str, expected: str) -> None:
    assert smart_encode(text) == expected


def test_a_curly_quote_is_ucs2_without_smart_encoding_and_gsm7_with_it() -> None:
    message = "Don\u2019t miss the vote \u2014 polls close at 10pm\u2026"

    assert count_segments(message).encoding == "UCS-2"
    assert count_segments(smart_encode(message)).encoding == "GSM-7"


def test_replacements_can_add_segments() -> None:
    # 158 characters + an ellipsis: 159 UCS-2 characters become 161 GSM-7 septets.
    message = "a" * 158 + "\u2026"

    assert count_segments(message).segments == 3  # UCS-2: 159 units
    assert count_segments(smart_encode(message)).segments == 2  # GSM-7: 161 septets
