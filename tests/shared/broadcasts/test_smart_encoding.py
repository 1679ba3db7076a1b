"""Smart Encoding is Twilio's own map, and segments are counted as Twilio's calculator counts them.

`tests/fixtures/twilio_segment_counts.json` holds the encoding and segment count Twilio's calculator (npm
`sms-segments-calculator` 1.3.0) gives for 6,306 texts: every character of the Smart Encoding map and of the GSM-7
extension table alone, in a sentence, repeated over several segments and on each segment boundary, plus
grapheme clusters; each with and without Smart Encoding. `tests/fixtures/make_twilio_segment_counts.js` made it.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from shared.broadcasts.segments import GSM7_EXTENSION_CHARACTERS, count_segments, is_gsm7
from shared.broadcasts.smart_encoding import SMART_ENCODING_MAP, Replacement, smart_encode

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "twilio_segment_counts.json"
TWILIO_COUNTS = json.loads(FIXTURE.read_text(encoding="utf-8"))


def expand(runs: list[list[object]]) -> str:
    return "".join(str(text) * int(str(times)) for text, times in runs)


def test_the_map_is_twilios_with_its_271_entries() -> None:
    assert len(SMART_ENCODING_MAP) == 271
    assert len({entry.character for entry in SMART_ENCODING_MAP}) == 271


@pytest.mark.parametrize("entry", SMART_ENCODING_MAP, ids=lambda entry: f"U+{ord(entry.character):04X}")
def test_every_entry_is_replaced_by_gsm7_text(entry: Replacement) -> None:
    assert smart_encode(entry.character) == entry.replacement
    assert smart_encode(f"a{entry.character}b") == f"a{entry.replacement}b"
    assert is_gsm7(entry.replacement)
    assert not is_gsm7(entry.character)  # only characters that would force UCS-2 are in the map
    assert entry.name == unicodedata.name(entry.character, entry.name)
    assert count_segments(smart_encode(f"Hi {entry.character}")).encoding == "GSM-7"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain text", "plain text"),
        ("\u2018single\u2019 \u201cdouble\u201d \u201elow\u201c", '\'single\' "double" "low"'),
        ("en\u2013dash em\u2014dash", "en-dash em-dash"),
        ("wait\u2026", "wait..."),
        ("\u00bd \u00bc \u00be \u00f7", "1/2 1/4 3/4 /"),
        ("\uff28ELLO\uff01", "HELLO!"),  # fullwidth capitals; Twilio has no fullwidth small letters
        ("\u1d00\u0299\u1d04", "ABC"),  # small capitals
        ("`quoted\u00b4 \u2039a\u203a \u203c", "'quoted' <a> !!"),
        ("no\u00a0break", "no  break"),  # Twilio: two spaces for a no-break space
        ("tab\there", "tab       here"),  # and seven for a tab
        ("zero\u200bwidth\u200c\ufeff", "zerowidth"),
        ("caf\u00e9 \u20ac", "caf\u00e9 \u20ac"),  # GSM-7 characters are left alone
        ("\u4f60\u597d", "\u4f60\u597d"),  # no look-alike: unchanged
    ],
)
def test_smart_encode(text: str, expected: str) -> None:
    assert smart_encode(text) == expected


@pytest.mark.parametrize(
    "character",
    ["\u2212", "\u2032", "\u2153", "\u215e", "\u00ad", "\u200d", "\u2011", "\u1680", "\uff45"],
    ids=lambda character: f"U+{ord(character):04X}",
)
def test_characters_twilio_does_not_replace_are_left_to_count_as_ucs2(character: str) -> None:
    # Counting them as GSM-7 would under-count the segments, and let more through max_cost than was allowed.
    assert smart_encode(character) == character
    assert count_segments(smart_encode(character)).encoding == "UCS-2"


def test_the_fixture_covers_every_map_character_and_the_extension_table() -> None:
    alone = {expand(runs) for runs, *_ in TWILIO_COUNTS["cases"] if len(runs) == 1 and runs[0][1] == 1}
    assert {entry.character for entry in SMART_ENCODING_MAP} <= alone
    assert set(GSM7_EXTENSION_CHARACTERS) <= alone


def test_segment_counts_agree_with_twilios_calculator_with_and_without_smart_encoding() -> None:
    disagreements = []
    for runs, smart_encoding, encoding, segments in TWILIO_COUNTS["cases"]:
        text = expand(runs)
        counted = count_segments(smart_encode(text) if smart_encoding else text)
        if (counted.encoding, counted.segments) != (encoding, segments):
            disagreements.append((runs, smart_encoding, (encoding, segments), (counted.encoding, counted.segments)))

    assert len(TWILIO_COUNTS["cases"]) > 6000
    assert disagreements[:10] == []


def test_replacements_can_add_segments() -> None:
    # 158 characters + an ellipsis: 159 UCS-2 characters become 161 GSM-7 septets.
    message = "a" * 158 + "\u2026"

    assert count_segments(message).segments == 3  # UCS-2: 159 units
    assert count_segments(smart_encode(message)).segments == 2  # GSM-7: 161 septets
