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


MAX_CALLBACK_URL_LENGTH = 2_000
# Plain http is accepted only to these hosts, for development; anything else must be https.
LOCAL_DEVELOPMENT_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def callback_url_problem(url: str) -> str | None:
    """Why `url` cannot be a callback_url, or None when it can (pure: no DNS lookup, no request)."""
    parts = split_url(url, MAX_CALLBACK_URL_LENGTH)
    if isinstance(parts, str):
        return parts
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and parts.hostname in LOCAL_DEVELOPMENT_HOSTS:
        return None
    return "Must be an https:// URL (http:// only to localhost or 127.0.0.1, for development)."
