"""SMS segment counting at every boundary: GSM-7 160/153, UCS-2 70/67, extension characters,
surrogate pairs."""

from __future__ import annotations

import pytest

from shared.segments import count_segments

EURO = "€"  # GSM-7 extension character: two septets
EMOJI = "😀"  # outside the BMP: two UCS-2 code units (one Python character)


@pytest.mark.parametrize(
    ("body", "encoding", "segments"),
    [
        ("", "GSM-7", 0),
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
