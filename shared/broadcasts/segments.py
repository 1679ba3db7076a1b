"""How many SMS segments a body takes, and in which encoding, as Twilio counts them. Pure functions, no I/O.

Twilio's segment calculator (npm `sms-segments-calculator`, which the tests compare with) fills 140-octet
segments with user-perceived characters, grapheme clusters, never splitting one between two segments. GSM-7:
7 bits a character (extension characters 14), so 160 in one segment. UCS-2: 16 bits per UTF-16 code unit (a
character outside the Basic Multilingual Plane takes two), so 70 units. A message that needs a second segment
gives every segment a 6-octet header: 153 septets or 67 units each. No 10-part cap: only the 1,600-character
limit applies. A cluster longer than a whole segment is put in a segment of its own, which it overflows, as the
calculator does.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
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

# No character below U+0300 (where the combining marks start) joins the one before it: most text never needs
# the cluster rules.
_MAY_JOIN = re.compile("[^\x00-\u02ff]")
_ZERO_WIDTH_JOINER = "\u200d"
_ZERO_WIDTH_NON_JOINER = "\u200c"


@dataclass(frozen=True)
class SegmentCount:
    encoding: str  # "GSM-7" or "UCS-2"
    characters: int
    segments: int
    # Characters that force UCS-2, with their positions in the body (empty for GSM-7).
    non_gsm_characters: tuple[tuple[int, str], ...] = ()


def is_gsm7(body: str) -> bool:
    return all(ch in GSM7_BASIC_CHARACTERS or ch in GSM7_EXTENSION_CHARACTERS for ch in body)


def _is_regional_indicator(ch: str) -> bool:
    return "\U0001f1e6" <= ch <= "\U0001f1ff"


def _is_pictographic(ch: str) -> bool:
    """Close to Unicode's Extended_Pictographic: the emoji blocks and the older symbols emoji are drawn from."""
    code = ord(ch)
    return 0x1F000 <= code <= 0x1FAFF or 0x2600 <= code <= 0x27BF or 0x2300 <= code <= 0x23FF or code in (0xA9, 0xAE)


def _is_extend(ch: str) -> bool:
    """Grapheme_Extend, near enough: combining marks, the non-joiner, variation selectors, tags."""
    return (
        unicodedata.category(ch) in ("Mn", "Me")
        or ch == _ZERO_WIDTH_NON_JOINER
        or "\U000e0020" <= ch <= "\U000e007f"
        or ch in "\uff9e\uff9f"
    )


def _is_skin_tone(ch: str) -> bool:
    return "\U0001f3fb" <= ch <= "\U0001f3ff"


def _is_spacing_mark(ch: str) -> bool:
    return unicodedata.category(ch) == "Mc" or ch in "\u0e33\u0eb3"  # Thai and Lao AM are spacing marks too


def _is_control(ch: str) -> bool:
    return ch not in (_ZERO_WIDTH_JOINER, _ZERO_WIDTH_NON_JOINER) and unicodedata.category(ch) in (
        "Cc",
        "Cf",
        "Zl",
        "Zp",
    )


def _hangul_kind(ch: str) -> str:
    code = ord(ch)
    if 0x1100 <= code <= 0x115F or 0xA960 <= code <= 0xA97F:
        return "L"
    if 0x1160 <= code <= 0x11A7 or 0xD7B0 <= code <= 0xD7C6:
        return "V"
    if 0x11A8 <= code <= 0x11FF or 0xD7CB <= code <= 0xD7FB:
        return "T"
    if 0xAC00 <= code <= 0xD7A3:
        return "LV" if (code - 0xAC00) % 28 == 0 else "LVT"
    return ""


def _joins(cluster: str, ch: str) -> bool:
    """Whether `ch` continues `cluster` (Unicode's grapheme cluster rules, UAX #29, without Prepend)."""
    previous = cluster[-1]
    if previous in "\r\n" or ch in "\r\n" or _is_control(previous) or _is_control(ch):
        return False  # GB4, GB5: Twilio also splits CR LF into two characters
    if ch == _ZERO_WIDTH_JOINER or _is_extend(ch) or _is_spacing_mark(ch):
        return True  # GB9, GB9a
    if _is_skin_tone(ch):
        return _is_pictographic(cluster[0])  # an emoji modifier joins an emoji, as the calculator's splitter has it
    if previous == _ZERO_WIDTH_JOINER and _is_pictographic(ch):
        return _is_pictographic(cluster[0])  # GB11: an emoji ZWJ sequence
    if _is_regional_indicator(ch) and _is_regional_indicator(previous):
        return sum(1 for c in cluster if _is_regional_indicator(c)) % 2 == 1  # GB12, GB13: flags are pairs
    before, after = _hangul_kind(previous), _hangul_kind(ch)
    return (
        (before == "L" and after in ("L", "V", "LV", "LVT"))
        or (before in ("LV", "V") and after in ("V", "T"))
        or (before in ("LVT", "T") and after == "T")
    )


def grapheme_clusters(body: str) -> Iterator[str]:
    """The user-perceived characters of `body`, as Twilio's calculator splits them."""
    if _MAY_JOIN.search(body) is None:
        yield from body
        return
    cluster = ""
    for ch in body:
        if cluster and _joins(cluster, ch):
            cluster += ch
        else:
            if cluster:
                yield cluster
            cluster = ch
    if cluster:
        yield cluster


def _may_join_previous(ch: str) -> bool:
    return (
        ch == _ZERO_WIDTH_JOINER
        or _is_extend(ch)
        or _is_spacing_mark(ch)
        or _is_skin_tone(ch)
        or _is_regional_indicator(ch)
        or _hangul_kind(ch) in ("L", "V", "T")
    )


def may_join_previous(text: str) -> bool:
    """True when a character of `text` may form one cluster with the character before it, wherever `text` is put
    (so counting its characters one by one may be off at a segment boundary)."""
    return _MAY_JOIN.search(text) is not None and any(_may_join_previous(ch) for ch in text if ch >= "\u0300")


def _pack(unit_sizes: list[int], single_limit: int, part_limit: int) -> int:
    """Segments for characters of these sizes, filled as Twilio's calculator fills them.

    The first segment takes up to `single_limit`; when a character does not fit, every segment gets a header
    (`part_limit` left), the first gives back what no longer fits, and filling goes on. A character is never
    split, and one larger than a segment goes into a new one all the same. Even an empty message is sent as one
    segment.
    """
    segments = [[0, single_limit]]  # [used, limit] per segment
    moved_back: list[int] = []  # sizes in the first segment, in order, while it has no header
    for size in unit_sizes:
        current = segments[-1]
        if current[1] - current[0] < size:
            if len(segments) == 1:
                # The first segment gets its header: the characters that no longer fit move on, in order.
                first = current
                first[1] = part_limit
                carried: list[int] = []
                while first[0] > part_limit:
                    last = moved_back.pop()
                    first[0] -= last
                    carried.insert(0, last)
                segments.append([sum(carried), part_limit])
            else:
                segments.append([0, part_limit])
            current = segments[-1]
        elif len(segments) == 1:
            moved_back.append(size)
        current[0] += size
    return len(segments)


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
    units = [len(cluster.encode("utf-16-le")) // 2 for cluster in grapheme_clusters(body)]
    segments = _pack(units, UCS2_SINGLE_SEGMENT_UNITS, UCS2_MULTIPART_UNITS)
    return SegmentCount("UCS-2", len(body), segments, non_gsm)
