"""Twilio's Smart Encoding: look-alike Unicode replaced by GSM-7 characters before counting. Pure, no I/O.

With `SmartEncoded=true` Twilio makes these replacements itself before sending, so the body we send is the
original; we apply the same table only to count segments and to report what still forces UCS-2.

The table is Twilio's own map, kept as data in `smart_encoding_map.json` (271 entries, copied from npm
`sms-segments-calculator` 1.3.0, TwilioDevEd/message-segment-calculator; the file names its source). Each
character is replaced on its own, code point by code point, as the calculator does.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import NamedTuple

MAP_FILE = "smart_encoding_map.json"


class Replacement(NamedTuple):
    character: str
    replacement: str  # GSM-7 text, possibly empty or several characters ("..." for an ellipsis)
    name: str  # the character's Unicode name, for people reading the table


def load_smart_encoding_map() -> tuple[Replacement, ...]:
    """Twilio's Smart Encoding map as shipped in the package data, in Twilio's order."""
    document = json.loads(resources.files(__package__).joinpath(MAP_FILE).read_text(encoding="utf-8"))
    return tuple(Replacement(*entry) for entry in document["entries"])


SMART_ENCODING_MAP = load_smart_encoding_map()
SMART_ENCODING_TABLE = str.maketrans({entry.character: entry.replacement for entry in SMART_ENCODING_MAP})


def smart_encode(text: str) -> str:
    """`text` with Twilio's Smart Encoding replacements applied (character by character)."""
    return text.translate(SMART_ENCODING_TABLE)
