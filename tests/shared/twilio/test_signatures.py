"""X-Twilio-Signature, pure: Twilio's public vectors, the URL forms accepted, token rotation, and what a forged
signature costs to refuse."""

from __future__ import annotations

import hmac
from typing import Any

import pytest
from twilio.request_validator import RequestValidator

from shared.twilio import signatures
from shared.twilio.signatures import SignatureChecker, compute_signature, other_port_form

# twilio-python's public test vectors (/work/shared/twilio/README.md).
VECTOR_TOKEN = "12345"
VECTOR_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
VECTOR_PARAMETERS = {
    "CallSid": "CA1234567890ABCDE",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
    "Caller": "+14158675309",
}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (VECTOR_URL, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
        ("https://mycompany.com:443/myapp.php?foo=1&bar=2", "kvajT1Ptam85bY51eRf/AJRuM3w="),
        ("http://mycompany.com:1234/myapp.php?foo=1&bar=2", "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="),
    ],
)
def test_public_vectors(url: str, expected: str) -> None:
    assert compute_signature(VECTOR_TOKEN, url, VECTOR_PARAMETERS) == expected
    assert SignatureChecker([VECTOR_TOKEN]).matches(url, VECTOR_PARAMETERS, expected)


@pytest.mark.parametrize(
    ("signed_url", "checked_url"),
    [
        (VECTOR_URL, "https://mycompany.com:443/myapp.php?foo=1&bar=2"),  # Twilio left the default port out
        ("https://mycompany.com:443/myapp.php?foo=1&bar=2", VECTOR_URL),  # ... or put it in
    ],
)
def test_the_url_is_accepted_with_or_without_its_default_port(signed_url: str, checked_url: str) -> None:
    signature = compute_signature(VECTOR_TOKEN, signed_url, VECTOR_PARAMETERS)
    assert SignatureChecker([VECTOR_TOKEN]).matches(checked_url, VECTOR_PARAMETERS, signature)


@pytest.mark.parametrize(
    ("url", "other"),
    [
        ("https://a.example/p?q=1", "https://a.example:443/p?q=1"),
        ("https://a.example:443/p", "https://a.example/p"),
        ("http://a.example/p", "http://a.example:80/p"),
        ("http://a.example:80", "http://a.example"),
        ("http://a.example:8001/p", None),  # another port: signed as called, only one form
        ("https://[::1]:443/p", "https://[::1]/p"),
        ("ftp://a.example/p", None),
    ],
)
def test_other_port_form(url: str, other: str | None) -> None:
    assert other_port_form(url) == other


def test_repeated_names_are_signed_like_twilios_validator() -> None:
    parameters: dict[str, Any] = {"MessageSid": "SM1", "MediaUrl": ["https://b.example/2", "https://a.example/1"]}
    signature = compute_signature("token", "https://x.example/cb", parameters)

    class MultiDict(dict[str, Any]):
        def getall(self, name: str) -> list[str]:
            value = self[name]
            return value if isinstance(value, list) else [value]

    assert RequestValidator("token").validate("https://x.example/cb", MultiDict(parameters), signature)


def test_during_a_rotation_either_token_matches_and_no_other() -> None:
    url = "https://sms.example.com/webhooks/twilio/status?message_id=1&attempt=1"
    parameters = {"MessageSid": "SM1", "MessageStatus": "delivered"}
    checker = SignatureChecker(["new", "old"])
    assert checker.matches(url, parameters, compute_signature("new", url, parameters))
    assert checker.matches(url, parameters, compute_signature("old", url, parameters))
    assert not checker.matches(url, parameters, compute_signature("older", url, parameters))
    assert not SignatureChecker(["new"]).matches(url, parameters, compute_signature("old", url, parameters))


@pytest.mark.parametrize(
    ("tokens", "url", "expected_hmacs"),
    [
        (["current"], "https://sms.example.com/cb?a=1", 2),  # as given, then with :443
        (["current"], "http://127.0.0.1:8001/cb", 1),  # a non-default port has one form
        (["current", "previous"], "https://sms.example.com/cb", 4),
    ],
)
def test_a_forged_signature_costs_one_hmac_per_token_and_url_form(
    monkeypatch: pytest.MonkeyPatch, tokens: list[str], url: str, expected_hmacs: int
) -> None:
    computed: list[bytes] = []
    real_new = hmac.new

    def counting_new(key: bytes, *args: Any, **kwargs: Any) -> Any:
        computed.append(key)
        return real_new(key, *args, **kwargs)

    monkeypatch.setattr(signatures.hmac, "new", counting_new)
    parameters = {"MessageSid": "SM1", "MessageStatus": "failed", "Body": "x" * 10_000}
    assert not SignatureChecker(tokens).matches(url, parameters, "Zm9yZ2VkIHNpZ25hdHVyZSEhIQ==")
    assert len(computed) == expected_hmacs
    computed.clear()
    assert SignatureChecker(tokens).matches(url, parameters, compute_signature(tokens[0], url, parameters))
    assert len(computed) == 2  # the genuine one: one HMAC to sign it here, one to check it


def test_a_checker_needs_a_token() -> None:
    with pytest.raises(ValueError, match="token"):
        SignatureChecker([])
