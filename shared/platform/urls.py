"""The URL checks shared by every URL a client hands us (completion callbacks, MMS media). Pure, no I/O."""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit


def split_url(url: str, max_characters: int) -> SplitResult | str:
    """The URL's parts, or why it is not a usable URL at all (too long, spaces or control characters, malformed)."""
    if len(url) > max_characters:
        return f"Must be at most {max_characters:,} characters."
    if any(character.isspace() or ord(character) < 0x20 for character in url):
        return "Must not contain spaces or control characters."
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        return "Must be a valid URL."
    return parts
