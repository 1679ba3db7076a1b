"""SMS segment counting at every boundary: GSM-7 160/153, UCS-2 70/67, extension characters,
surrogate pairs."""

from __future__ import annotations

import pytest

from shared.broadcasts.segments import count_segments, grapheme_clusters, may_join_previous

EURO = "€"  # GSM-7 extension character: two septets
EMOJI = "😀"  # outside the BMP: two UCS-2 code units (one Python character)


@pytest.mark.parametrize(
    ("body", "encoding", "segments"),
    [
        ("", "GSM-7", 1),  # an empty message still goes as one segment, as Twilio counts it
        ("a", "GSM-7", 1),
        ("a" * 160, "GSM-7", 1),
        ("a" * 161, "GSM-7", 2),
        ("a" * 306, "GSM-7", 2),  # 2 x 153
        ("a" * 307, "GSM-7", 3),
        ("a" * 1600, "GSM-7", 11),  # the longest message the API accepts
        ("@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ!#¤%&'()*+,-./:;<=>?¡ÄÖÑÜ§¿äöñüà", "GSM-7", 1),
        (EURO * 80, "GSM-7", 1),  # 160 septets
        ("a" * 159 + EURO, "GSM-7", 2),  # 161 septets
        (EURO * 81, "GSM-7", 2),
        # Split at 153 septets per part: an extension character never straddles two parts.
        ("a" * 152 + EURO + "a" * 152, "GSM-7", 3),  # 306 septets, but the € cannot end part 1 (154)
        ("a" * 151 + EURO + "a" * 153, "GSM-7", 2),  # 153 exactly, then 153
        ("[]{}|^~\\", "GSM-7", 1),
        ("é" * 160, "GSM-7", 1),  # é is in the GSM-7 basic set
        ("ê", "UCS-2", 1),  # ê is not
        ("я" * 70, "UCS-2", 1),
        ("я" * 71, "UCS-2", 2),
        ("я" * 134, "UCS-2", 2),  # 2 x 67
        ("я" * 135, "UCS-2", 3),
        ("a" * 159 + "ê", "UCS-2", 3),  # one non-GSM character turns 160 characters into UCS-2
        (EMOJI * 35, "UCS-2", 1),  # 70 code units
        ("я" + EMOJI * 35, "UCS-2", 2),  # 71 code units
        # Split at 67 units per part: a surrogate pair never straddles two parts.
        ("я" * 66 + EMOJI + "я" * 66, "UCS-2", 3),  # 134 units, but the emoji cannot end part 1 (68)
        ("я" * 65 + EMOJI + "я" * 67, "UCS-2", 2),  # 67 exactly, then 67
        ("я" * 65 + EMOJI + "я" * 68, "UCS-2", 3),
    ],
)
def test_count_segments(body: str, encoding: str, segments: int) -> None:
    result = count_segments(body)

    assert (result.encoding, result.segments) == (encoding, segments)
    assert result.characters == len(body)


def test_ucs2_reports_which_characters_forced_it() -> None:
    assert count_segments("Hi ê and 😀").non_gsm_characters == ((3, "ê"), (9, "😀"))
    assert count_segments("plain").non_gsm_characters == ()


# A larger table: every boundary, in both encodings, with the characters that take two units at each edge.
BOUNDARY_CASES = [
    # GSM-7 single segment and the first split.
    ("a" * 159, "GSM-7", 1),
    ("a" * 160, "GSM-7", 1),
    ("a" * 161, "GSM-7", 2),
    ("a" * 158 + EURO, "GSM-7", 1),  # 160 septets
    ("a" * 159 + EURO, "GSM-7", 2),  # 161 septets
    # Parts of 153 septets.
    ("a" * 459, "GSM-7", 3),
    ("a" * 460, "GSM-7", 4),
    ("a" * 1530, "GSM-7", 10),
    ("a" * 1531, "GSM-7", 11),  # no 10-part cap
    ("a" * 1600, "GSM-7", 11),
    # Extension characters at the 153 boundary.
    ("a" * 151 + EURO + "a", "GSM-7", 1),  # 154 septets: still one 160-septet segment
    ("a" * 151 + EURO + "a" * 8, "GSM-7", 2),  # 161 septets: part 1 ends with the € (153)
    ("a" * 152 + EURO + "a" * 7, "GSM-7", 2),  # 161: the € moves whole to part 2
    ("a" * 152 + EURO * 76, "GSM-7", 2),  # 152 | 152 septets
    ("a" * 152 + EURO * 77, "GSM-7", 3),  # 152 | 152 | 2
    ("a" * 151 + "[" + "a" * 153, "GSM-7", 2),
    ("a" * 152 + "[" + "a" * 152, "GSM-7", 3),
    ("\f" * 80, "GSM-7", 1),  # form feed is an extension character
    (EURO * 800, "GSM-7", 11),  # 1,600 septets: 76 whole € per 153-septet part
    # UCS-2 single segment and the first split.
    ("я" * 69, "UCS-2", 1),
    ("я" * 70, "UCS-2", 1),
    ("я" * 71, "UCS-2", 2),
    ("я" * 201, "UCS-2", 3),
    ("я" * 202, "UCS-2", 4),
    ("я" * 1600, "UCS-2", 24),  # no 10-part cap
    ("a" * 69 + "ê", "UCS-2", 1),
    ("a" * 70 + "ê", "UCS-2", 2),
    # Surrogate pairs at the 67 boundary.
    ("я" * 68 + EMOJI, "UCS-2", 1),  # 70 units
    ("я" * 69 + EMOJI, "UCS-2", 2),  # 71 units
    ("я" * 66 + EMOJI + "я", "UCS-2", 1),  # 69 units: one segment
    ("я" * 66 + EMOJI + "я" * 4, "UCS-2", 2),  # 72 units: the emoji moves whole to part 2
    ("я" * 65 + EMOJI + "я" * 4, "UCS-2", 2),  # part 1 ends with the emoji (67)
    (EMOJI * 67, "UCS-2", 3),  # 134 units, but 33 pairs per part: 33 + 33 + 1
    ("a" * 160 + "😀", "UCS-2", 3),  # 162 units
]


@pytest.mark.parametrize(("body", "encoding", "segments"), BOUNDARY_CASES)
def test_count_segments_at_every_boundary(body: str, encoding: str, segments: int) -> None:
    result = count_segments(body)

    assert (result.encoding, result.segments) == (encoding, segments)


FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # three emoji joined by ZWJ: 8 UTF-16 units, one character
FLAG = "\U0001f1ec\U0001f1e7"  # two regional indicators: one flag


@pytest.mark.parametrize(
    ("text", "clusters"),
    [
        ("abc", ["a", "b", "c"]),
        ("e\u0301te\u0301", ["e\u0301", "t", "e\u0301"]),  # combining accents stay with their letter
        (FLAG + FLAG, [FLAG, FLAG]),  # regional indicators pair up
        (FAMILY + "!", [FAMILY, "!"]),
        ("\U0001f44d\U0001f3fd", ["\U0001f44d\U0001f3fd"]),  # a skin tone
        ("a\U0001f3fd", ["a", "\U0001f3fd"]),  # ... joins an emoji only
        ("\u0e01\u0e33", ["\u0e01\u0e33"]),  # Thai SARA AM is a spacing mark
        ("\u2764\ufe0f", ["\u2764\ufe0f"]),  # a variation selector
        ("a\r\nb", ["a", "\r", "\n", "b"]),  # Twilio counts CR LF as two characters
        ("\n\u0301", ["\n", "\u0301"]),  # nothing joins a control character
        ("\u1100\u1161\u11a8", ["\u1100\u1161\u11a8"]),  # conjoining Hangul jamo make one syllable
        ("\ud55c\uae00", ["\ud55c", "\uae00"]),  # precomposed syllables stand alone
    ],
)
def test_grapheme_clusters(text: str, clusters: list[str]) -> None:
    assert list(grapheme_clusters(text)) == clusters


@pytest.mark.parametrize(
    ("body", "segments"),
    [
        ("я" * 62 + FAMILY, 1),  # 70 units
        ("я" * 63 + FAMILY, 2),  # 71 units
        ("я" * 60 + FAMILY + "я" * 10, 2),  # part 1 ends with the family (67 units)
        ("я" * 61 + FAMILY + "я" * 10, 2),  # the family moves whole to part 2: 61 | 18
        ("я" * 61 + FAMILY + "я" * 60, 3),  # 61 | 68 does not fit: 61 | 67 | 1
        ("я" * 66 + "e\u0301" + "я" * 10, 2),  # the accent does not leave its e behind: 66 | 12
        ("я" * 65 + FLAG + "я" * 10, 2),  # 65 | 14
    ],
)
def test_a_cluster_is_never_split_between_segments(body: str, segments: int) -> None:
    assert count_segments(body).segments == segments


@pytest.mark.parametrize(
    ("text", "may_join"),
    [("plain", False), ("ж and €", False), ("\u0301", True), ("\u200d", True), (FLAG, True), ("\ud55c", False)],
)
def test_texts_that_may_join_their_neighbour_are_flagged_for_exact_counting(text: str, may_join: bool) -> None:
    assert may_join_previous(text) is may_join
