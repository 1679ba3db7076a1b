"""How many SMS segments a body takes, and in which encoding. Pure functions, no I/O.

GSM-7: 160 septets in one segment, 153 per part when split; extension characters take two septets and are
never split across parts. UCS-2: 70 code units in one segment, 67 per part; a character outside the Basic
Multilingual Plane takes two units and is never split. No 10-part cap: only the 1,600-character limit applies.
"""

from __future__ import annotations

from dataclasses import dataclass

GSM7_BASIC_CHARACTERS = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION_CHARACTERS = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE_SEGMENT_SEPTETS = 160
GSM7_MULTIPART_SEPTETS = 153
UCS2_SINGLE_SEGMENT_UNITS = 70
UCS2_MULTIPART_UNITS = 67


@dataclass(frozen=True)
class SegmentCount:
    encoding: str  # "GSM-7" or "UCS-2"
    characters: int
    segments: int
    # Characters that force UCS-2, with their positions in the body (empty for GSM-7).
    non_gsm_characters: tuple[tuple[int, str], ...] = ()


def is_gsm7(body: str) -> bool:
    return all(ch in GSM7_BASIC_CHARACTERS or ch in GSM7_EXTENSION_CHARACTERS for ch in body)


def _pack(unit_sizes: list[int], single_limit: int, part_limit: int) -> int:
    """Segments needed for characters of the given unit sizes, never splitting one character across parts."""
    total = sum(unit_sizes)
    if total == 0:
        return 0
    if total <= single_limit:
        return 1
    segments, used = 1, 0
    for size in unit_sizes:
        if used + size > part_limit:
            segments += 1
            used = 0
        used += size
    return segments


def count_segments(body: str) -> SegmentCount:
    non_gsm = tuple(
        (position, ch)
        for position, ch in enumerate(body)
        if ch not in GSM7_BASIC_CHARACTERS and ch not in GSM7_EXTENSION_CHARACTERS
    )
    if not non_gsm:
        septets = [2 if ch in GSM7_EXTENSION_CHARACTERS else 1 for ch in body]
        segments = _pack(septets, GSM7_SINGLE_SEGMENT_SEPTETS, GSM7_MULTIPART_SEPTETS)
        return SegmentCount("GSM-7", len(body), segments)
    units = [2 if ord(ch) > 0xFFFF else 1 for ch in body]
    segments = _pack(units, UCS2_SINGLE_SEGMENT_UNITS, UCS2_MULTIPART_UNITS)
    return SegmentCount("UCS-2", len(body), segments, non_gsm)
