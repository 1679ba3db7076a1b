"""X-Twilio-Signature: base64(HMAC-SHA1(auth token, URL + each parameter name and value, sorted)).

Pure code, no I/O. `SignatureChecker` holds the tokens a signature may be made with (the Auth Token, and during
a rotation the one being replaced) and answers with the fewest HMACs: the parameters are put in order once, the
URL exactly as given is tried with each token first (the usual case: one HMAC), and only then the URL with or
without its default port, which Twilio's own validator also accepts. A forged signature therefore costs one
HMAC per token and URL form (two with one token), over a body the webhook has already bounded in size.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

DEFAULT_PORTS = {"https": 443, "http": 80}


def signed_data(parameters: Mapping[str, Any]) -> str:
    """What Twilio appends to the URL before signing: each name in order, then each of its distinct values in
    order (a repeated name is a list of values), exactly as twilio-python's RequestValidator builds it."""
    pieces: list[str] = []
    for name in sorted(parameters):
        value = parameters[name]
        values = value if isinstance(value, list) else [value]
        pieces.extend(name + str(item) for item in sorted(set(values)))
    return "".join(pieces)


def compute_signature(token: str, url: str, parameters: Mapping[str, Any]) -> str:
    """The X-Twilio-Signature Twilio sends for a form POST of `parameters` to `url`."""
    return _signature(token.encode("utf-8"), url + signed_data(parameters))


def _signature(key: bytes, message: str) -> str:
    return base64.b64encode(hmac.new(key, message.encode("utf-8"), hashlib.sha1).digest()).decode("ascii")


def other_port_form(url: str) -> str | None:
    """`url` with its default port added, or removed when present; None when it names another port."""
    parts = urlsplit(url)
    default = DEFAULT_PORTS.get(parts.scheme)
    if default is None or parts.hostname is None:
        return None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    prefix = f"{userinfo}@" if userinfo else ""
    try:
        port = parts.port
    except ValueError:
        return None
    if port is None:
        netloc = f"{prefix}{hostport}:{default}"
    elif port == default:
        netloc = prefix + hostport.rsplit(":", 1)[0]
    else:
        return None
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class SignatureChecker:
    """Checks X-Twilio-Signature against every configured token (current first)."""

    def __init__(self, tokens: Sequence[str]) -> None:
        if not tokens:
            raise ValueError("a signature checker needs at least one token")
        self._keys = tuple(token.encode("utf-8") for token in tokens)

    @property
    def token_count(self) -> int:
        return len(self._keys)

    def matches(self, url: str, parameters: Mapping[str, Any], signature: str) -> bool:
        """Whether `signature` was made by one of the tokens over `url` (or its other default-port form)."""
        data = signed_data(parameters)
        expected = signature.encode("ascii", "replace")
        urls = [url]
        alternative = other_port_form(url)
        if alternative is not None:
            urls.append(alternative)
        for candidate in urls:
            message = candidate + data
            for key in self._keys:
                if hmac.compare_digest(_signature(key, message).encode("ascii"), expected):
                    return True
        return False
