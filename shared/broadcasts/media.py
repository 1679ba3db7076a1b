"""MMS media URLs and Twilio's ValidityPeriod: what a broadcast may ask for. Pure, no I/O."""

from __future__ import annotations

from shared.platform.urls import split_url

MAX_MEDIA_URLS = 10  # Twilio's limit on MediaUrl per message
MAX_MEDIA_URL_CHARACTERS = 2_000
MAX_VALIDITY_PERIOD_SECONDS = 36_000  # Twilio: 1 to 36,000 s (its default)


def media_url_problem(url: object) -> str | None:
    """Why `url` cannot be a MediaUrl (Twilio fetches it from the internet: https with a host), or None."""
    if not isinstance(url, str) or not url:
        return "Must be a non-empty string."
    parts = split_url(url, MAX_MEDIA_URL_CHARACTERS)
    if isinstance(parts, str):
        return parts
    if parts.scheme.lower() != "https":
        return "Must be an https:// URL."
    if not parts.hostname or "." not in parts.hostname.strip("."):
        return "Must be an https:// URL with a public host name."
    return None
