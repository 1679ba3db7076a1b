"""Twilio-style Smart Encoding: look-alike Unicode replaced by GSM-7 characters before counting. Pure, no I/O.

With `SmartEncoded=true` Twilio makes these replacements itself before sending, so the body we send is the
original; we apply the same table only to count segments and to report what still forces UCS-2.
"""

from __future__ import annotations

_REPLACEMENTS: dict[str, str] = {
    # Curly and low quotes, primes used as quotes.
    "\u2018": "'",
    "\u2019": "'",
    "\u201a": "'",
    "\u201b": "'",
    "\u2032": "'",
    "\u02bc": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u201e": '"',
    "\u201f": '"',
    "\u2033": '"',
    "\u00ab": '"',
    "\u00bb": '"',
    # Hyphens and dashes.
    "\u2010": "-",
    "\u2011": "-",
    "\u2012": "-",
    "\u2013": "-",
    "\u2014": "-",
    "\u2015": "-",
    "\u2212": "-",
    # Ellipsis, bullets.
    "\u2026": "...",
    "\u2022": "-",
    # Vulgar fractions.
    "\u00bc": "1/4",
    "\u00bd": "1/2",
    "\u00be": "3/4",
    "\u2153": "1/3",
    "\u2154": "2/3",
    "\u215b": "1/8",
    "\u215c": "3/8",
    "\u215d": "5/8",
    "\u215e": "7/8",
    # No-break and other odd spaces, tab.
    "\u00a0": " ",
    "\u1680": " ",
    "\u202f": " ",
    "\u205f": " ",
    "\u3000": " ",
    "\t": " ",
    # Zero-width characters and the byte order mark: removed.
    "\u200b": "",
    "\u200c": "",
    "\u200d": "",
    "\u2060": "",
    "\ufeff": "",
    "\u00ad": "",  # soft hyphen
}
_REPLACEMENTS.update({chr(code): " " for code in range(0x2000, 0x200B)})  # en quad ... hair space
# Fullwidth ASCII (U+FF01 to U+FF5E) → ASCII.
_REPLACEMENTS.update({chr(code): chr(code - 0xFEE0) for code in range(0xFF01, 0xFF5F)})

SMART_ENCODING_TABLE = str.maketrans(_REPLACEMENTS)


def smart_encode(text: str) -> str:
    """`text` with Twilio's Smart Encoding replacements applied (character by character)."""
    return text.translate(SMART_ENCODING_TABLE)
