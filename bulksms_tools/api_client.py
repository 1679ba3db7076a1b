"""A small HTTP client for the bulksms API, used by the operator commands (`bulksms send`, `status`, ...).

Every failure becomes one of two exceptions the CLI maps to exit codes: `ApiRefused` (the API answered 4xx: the
request is wrong) and `ApiUnavailable` (no answer, or 5xx: try again later). Problem documents (RFC 9457) are
kept whole so their `detail`, `errors` and `invalid` can be shown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import quote, urlencode

import requests

DEFAULT_TIMEOUT_SECONDS = 30.0
UPLOAD_TIMEOUT_SECONDS = 600.0  # a million-row CSV takes a while to parse and copy in, server side
UPLOAD_BLOCK_BYTES = 256 * 1024


class ApiError(Exception):
    """The request did not succeed; `str()` is one readable line."""


@dataclass
class ApiRefused(ApiError):
    """The API answered 4xx: the problem document says what to change."""

    status: int
    problem: dict[str, Any] = field(default_factory=dict)
    text: str = ""

    def __str__(self) -> str:
        detail = self.problem.get("detail") or self.problem.get("title") or self.text.strip()[:300]
        return f"HTTP {self.status}: {detail}" if detail else f"HTTP {self.status}"


@dataclass
class ApiUnavailable(ApiError):
    """No answer, or a 5xx: nothing the caller can fix in the request."""

    message: str
    status: int | None = None

    def __str__(self) -> str:
        return self.message


def _problem_of(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return dict(body) if isinstance(body, dict) else {}


class UploadReader:
    """A file wrapper `requests` streams from (chunked transfer), calling `on_bytes(n)` after each block read."""

    def __init__(self, file: IO[bytes], on_bytes: Callable[[int], None] | None = None) -> None:
        self.file = file
        self.on_bytes = on_bytes

    def __iter__(self) -> Iterator[bytes]:
        while block := self.file.read(UPLOAD_BLOCK_BYTES):
            if self.on_bytes is not None:
                self.on_bytes(len(block))
            yield block


class ApiClient:
    """`base_url` like http://127.0.0.1:8000; `api_key` the bearer key (`bsk_...`)."""

    def __init__(self, base_url: str, api_key: str | None, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout_seconds = timeout_seconds
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "bulksms-cli"
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"

    def close(self) -> None:
        self.session.close()

    # --- transport ------------------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        expected: Iterable[int] = (200, 201, 202, 204),
        stream: bool = False,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        url = path if path.startswith("http") else f"{self.base_url}{path}"
        try:
            response = self.session.request(
                method, url, stream=stream, timeout=timeout or self.timeout_seconds, **kwargs
            )
        except requests.ConnectionError as error:
            raise ApiUnavailable(
                f"cannot reach the API at {self.base_url} ({_connection_reason(error)}): is the API running? "
                "(bulksms up)"
            ) from None
        except requests.Timeout:
            raise ApiUnavailable(f"the API at {self.base_url} did not answer in time") from None
        except requests.RequestException as error:
            raise ApiUnavailable(f"request to {url} failed: {error}") from None
        if response.status_code in expected:
            return response
        problem = _problem_of(response)
        if response.status_code >= 500:
            detail = problem.get("detail") or response.reason
            raise ApiUnavailable(f"the API failed: HTTP {response.status_code}: {detail}", response.status_code)
        raise ApiRefused(response.status_code, problem, "" if problem else response.text)

    def get_json(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return dict(self.request("GET", path, **kwargs).json())

    def post_json(self, path: str, body: Any = None, **kwargs: Any) -> dict[str, Any]:
        response = self.request("POST", path, json=body, **kwargs)
        return dict(response.json()) if response.content else {}

    # --- broadcasts -----------------------------------------------------------------------------------------

    def upload_broadcast_csv(
        self,
        file: IO[bytes],
        options: dict[str, str],
        on_bytes: Callable[[int], None] | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """Stream a CSV to `POST /v1/broadcasts` (`text/csv`, options in the query string): (status, body)."""
        response = self.request(
            "POST",
            "/v1/broadcasts",
            params=options,
            data=UploadReader(file, on_bytes),
            headers={"Content-Type": "text/csv", **_idempotency_header(idempotency_key)},
            timeout=UPLOAD_TIMEOUT_SECONDS,
        )
        return response.status_code, dict(response.json())

    def create_broadcast(self, body: dict[str, Any], idempotency_key: str | None = None) -> tuple[int, dict[str, Any]]:
        response = self.request(
            "POST",
            "/v1/broadcasts",
            json=body,
            headers=_idempotency_header(idempotency_key),
            timeout=UPLOAD_TIMEOUT_SECONDS,
        )
        return response.status_code, dict(response.json())

    def broadcast(self, broadcast_id: str) -> dict[str, Any]:
        return self.get_json(f"/v1/broadcasts/{quote(broadcast_id, safe='')}")

    def broadcasts(self, limit: int = 50, filters: Mapping[str, str] | None = None) -> Iterator[dict[str, Any]]:
        """The caller's broadcasts, newest first, following `links.next`; `filters` such as `client_reference`."""
        yield from self._pages(f"/v1/broadcasts?{urlencode({'limit': limit, **(filters or {})})}")

    def messages(self, broadcast_id: str, state: str | None = None) -> Iterator[dict[str, Any]]:
        path = f"/v1/broadcasts/{quote(broadcast_id, safe='')}/messages?limit=1000"
        if state:
            path += f"&state={quote(state)}"
        yield from self._pages(path)

    def control(self, broadcast_id: str, action: str) -> dict[str, Any]:
        return self.post_json(f"/v1/broadcasts/{quote(broadcast_id, safe='')}/{action}")

    def messages_csv(self, broadcast_id: str, state: str | None = None) -> requests.Response:
        """`GET /v1/broadcasts/{id}/messages.csv` as a streamed response (iterate `iter_content`)."""
        params = {"state": state} if state else None
        return self.request(
            "GET",
            f"/v1/broadcasts/{quote(broadcast_id, safe='')}/messages.csv",
            params=params,
            stream=True,
            expected=(200,),
        )

    def _pages(self, path: str) -> Iterator[dict[str, Any]]:
        next_path: str | None = path
        while next_path:
            page = self.get_json(next_path)
            yield from page.get("items") or []
            next_path = (page.get("links") or {}).get("next")

    # --- opt-outs -------------------------------------------------------------------------------------------

    def add_opt_outs(self, numbers: list[str], reason: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"numbers": numbers}
        if reason:
            body["reason"] = reason
        return self.post_json("/v1/opt-outs", body)

    def import_opt_outs(
        self, file: IO[bytes], reason: str | None, on_bytes: Callable[[int], None] | None = None
    ) -> dict[str, Any]:
        response = self.request(
            "POST",
            "/v1/opt-outs",
            params={"reason": reason} if reason else None,
            data=UploadReader(file, on_bytes),
            headers={"Content-Type": "text/csv"},
            timeout=UPLOAD_TIMEOUT_SECONDS,
        )
        return dict(response.json())

    def remove_opt_out(self, number: str) -> None:
        self.request("DELETE", f"/v1/opt-outs/{quote(number.strip(), safe='')}", expected=(204,))

    def opt_outs_csv(self) -> requests.Response:
        return self.request("GET", "/v1/opt-outs.csv", stream=True, expected=(200,))


def _connection_reason(error: requests.ConnectionError) -> str:
    text = str(error)
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "unknown host"
    return "connection failed"


def _idempotency_header(key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": key} if key else {}
