"""Telephone numbers regulators publish for films, books and tests: never assigned, so always safe to use.

libphonenumber calls most of them invalid (they are in no assigned range); bulksms accepts them even with
`strict_numbers`, so examples, demos and tests can use numbers that cannot reach a real person. Pure, no I/O.

Sources:
- North America (NANPA): 555-0100 to 555-0199 in every area code are for fictional use.
- United Kingdom (Ofcom, "Telephone numbers for use in TV and radio drama"): 07700 900000-900999 (mobile), 01632
  960000-960999 (a fictional area), 0113/0114/0115/0116/0117/0118/0121/0131/0141/0151/0161 496 0000-0999,
  0191 498 0000-0999, 020 7946 0000-0999, 028 9018 0000-0999, 029 2018 0000-0999, 0808 157 0000-0999 (freephone),
  0909 879 0000-0999 (premium rate), 0306 999 0000-0999 (UK-wide).
- Australia (ACMA, "Phone numbers for use in TV shows, films and creative works"): 02/03/07/08 5550 xxxx and
  7010 xxxx, thirty mobile numbers in 0491 57x xxx, 1800 160 401, 1800 975 707-711, 1300 975 707-711,
  1900 654 321.
"""

from __future__ import annotations

import re

_UK_GEOGRAPHIC_DRAMA_BLOCKS = (
    *(f"{area}4960" for area in ("113", "114", "115", "116", "117", "118", "121", "131", "141", "151", "161")),
    "1914980",
    "2079460",
    "2890180",
    "2920180",
)
_AUSTRALIAN_FICTIONAL_MOBILES = (
    "491570006",
    "491570156",
    "491570157",
    "491570158",
    "491570159",
    "491570110",
    "491570313",
    "491570737",
    "491571266",
    "491571491",
    "491571804",
    "491572549",
    "491572665",
    "491572983",
    "491573770",
    "491573087",
    "491574118",
    "491574632",
    "491575254",
    "491575789",
    "491576398",
    "491576801",
    "491577426",
    "491577644",
    "491578957",
    "491578148",
    "491578888",
    "491579212",
    "491579760",
    "491579455",
)

FICTIONAL_RANGES: tuple[tuple[str, str, str], ...] = (
    # (calling code, national number pattern, what it is)
    ("1", r"[2-9]\d\d55501\d\d", "NANP NXX-555-0100 to 0199, any area code"),
    ("44", r"7700900\d{3}", "UK drama mobile 07700 900000-900999"),
    ("44", r"1632960\d{3}", "UK drama area 01632 960000-960999"),
    ("44", r"(?:" + "|".join(_UK_GEOGRAPHIC_DRAMA_BLOCKS) + r")\d{3}", "UK drama geographic blocks"),
    ("44", r"(?:8081570|9098790|3069990)\d{3}", "UK drama freephone, premium rate and UK-wide blocks"),
    ("61", r"[2378](?:5550|7010)\d{4}", "Australian fictional geographic (0x) 5550 xxxx and 7010 xxxx"),
    ("61", "(?:" + "|".join(_AUSTRALIAN_FICTIONAL_MOBILES) + ")", "Australian fictional mobiles"),
    ("61", r"1800160401|1[38]0097570[7-9]|1[38]0097571[01]|1900654321", "Australian fictional 1800/1300/1900"),
)

_BY_CALLING_CODE = {
    code: re.compile("|".join(f"(?:{pattern})" for range_code, pattern, _ in FICTIONAL_RANGES if range_code == code))
    for code in {code for code, _, _ in FICTIONAL_RANGES}
}


def is_fictional(e164: str) -> bool:
    """True for a number in a published fictional range (`+447700900123`, `+12025550142`)."""
    code = "1" if e164[1:2] == "1" else e164[1:3]
    pattern = _BY_CALLING_CODE.get(code)
    return pattern is not None and pattern.fullmatch(e164, len(code) + 1) is not None
