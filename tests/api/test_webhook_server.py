"""The webhooks under real gunicorn (gthread, as docker-compose and `bulksms up` run them), on both processes that
serve them: bodies that are refused before they arrive, cut at the limit, or trickle in; and the access log."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from bulksms_tools.local_services import ManagedProcess, find_free_port
from shared.platform.logging_config import mask_phone_numbers
from shared.platform.settings import Settings
from shared.receipts.status_queue import STREAM_KEY
from tests.gunicorn_servers import closed_by_server, open_request, read_status, start_gunicorn
from tests.status_callbacks import CALLBACK_PATH, callback_parameters, new_sid, twilio_signature

TOKEN = "test-auth-token-0123456789abcdef"
METRICS_TOKEN = "metrics-token-for-the-log-test"
PUBLIC_URL = "https://sms.example.com"
INBOUND_PATH = "/webhooks/twilio/inbound"
READ_TIMEOUT_SECONDS = 2.0
ONE_MIB = 1024 * 1024
FORM = "application/x-www-form-urlencoded"


@pytest.fixture(scope="module")
def server_settings(api_settings: Settings) -> Settings:
    return api_settings.replace(
        twilio_auth_token=TOKEN,
        public_base_url=PUBLIC_URL,
        webhook_read_timeout_seconds=READ_TIMEOUT_SECONDS,
        metrics_token=METRICS_TOKEN,
    )


@pytest.fixture(scope="module")
def servers(server_settings: Settings, artifacts_directory: Path) -> Iterator[dict[str, tuple[int, Path]]]:
    """{name: (port, log file)} for the webhook service and the API, each with 1 worker x 2 threads."""
    started: list[ManagedProcess] = []
    found: dict[str, tuple[int, Path]] = {}
    try:
        for name, target, settings in (
            ("webhook service", "api.webhook_wsgi:app", server_settings.replace(database_url=None)),
            ("api", "api.wsgi:app", server_settings),
        ):
            port = find_free_port()
            log_path = artifacts_directory / f"webhook-server-{name.replace(' ', '-')}.log"
            log_path.unlink(missing_ok=True)
            started.append(
                start_gunicorn(name, target, settings, port, log_path, workers=1, threads=2, access_log=True)
            )
            found[name] = (port, log_path)
        yield found
    finally:
        for process in started:
            process.stop()


@pytest.fixture(params=["webhook service", "api"])
def port(request: pytest.FixtureRequest, servers: dict[str, tuple[int, Path]]) -> int:
    return servers[request.param][0]


def post_signed_callback(port: int, session: requests.Session | None = None) -> requests.Response:
    query = "message_id=7&attempt=1"
    parameters = callback_parameters(new_sid(), "sent")
    signature = twilio_signature(TOKEN, f"{PUBLIC_URL}{CALLBACK_PATH}?{query}", parameters)
    return (session or requests).post(
        f"http://127.0.0.1:{port}{CALLBACK_PATH}?{query}",
        data=parameters,
        headers={"X-Twilio-Signature": signature},
        timeout=10,
    )


@pytest.mark.parametrize("path", [CALLBACK_PATH, INBOUND_PATH])
def test_an_unsigned_post_is_answered_403_before_its_body_is_sent(port: int, path: str) -> None:
    connection = open_request(port, path, {"Content-Type": FORM, "Content-Length": str(ONE_MIB)}, timeout=10)
    with connection:
        started = time.monotonic()
        assert read_status(connection) == 403  # the 1 MiB body was never sent: nothing waited for it
        assert time.monotonic() - started < READ_TIMEOUT_SECONDS
        assert closed_by_server(connection)


@pytest.mark.parametrize("path", [CALLBACK_PATH, INBOUND_PATH])
def test_a_declared_body_over_the_limit_is_answered_413_before_it_is_sent(port: int, path: str) -> None:
    headers = {"Content-Type": FORM, "Content-Length": str(ONE_MIB), "X-Twilio-Signature": "forged"}
    with open_request(port, path, headers, timeout=10) as connection:
        assert read_status(connection) == 413
        assert closed_by_server(connection)


def test_a_chunked_body_is_cut_at_the_limit(port: int) -> None:
    headers = {"Content-Type": FORM, "Transfer-Encoding": "chunked", "X-Twilio-Signature": "forged"}
    with open_request(port, CALLBACK_PATH, headers, timeout=10) as connection:
        chunk = b"x" * 8192
        connection.sendall((b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 4)  # 32 KiB, and never the last chunk
        assert read_status(connection) == 413
        assert closed_by_server(connection)


def test_a_trickling_body_is_cut_off_after_the_read_timeout(port: int, redis_client: redis.Redis) -> None:
    query = "message_id=7&attempt=1"
    body = "&".join(f"{name}={value}" for name, value in callback_parameters(new_sid(), "sent").items()).encode()
    headers = {"Content-Type": FORM, "Content-Length": str(len(body)), "X-Twilio-Signature": "anything"}
    connection = open_request(port, f"{CALLBACK_PATH}?{query}", headers, timeout=30)
    stop = threading.Event()

    def trickle() -> None:  # one byte every 0.2 s: each read gets data, the whole body would take minutes
        for byte in body:
            if stop.wait(0.2):
                return
            try:
                connection.sendall(bytes([byte]))
            except OSError:
                return

    sender = threading.Thread(target=trickle, daemon=True)
    started = time.monotonic()
    sender.start()
    try:
        status = read_status(connection)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        sender.join(5)
        connection.close()
    assert status == 408
    assert READ_TIMEOUT_SECONDS - 0.5 < elapsed < READ_TIMEOUT_SECONDS + 5, elapsed
    assert redis_client.exists(STREAM_KEY) == 0
    # The threads it held are free again: a genuine callback is answered at once, on a kept-alive connection.
    with requests.Session() as session:
        assert post_signed_callback(port, session).status_code == 204
        assert post_signed_callback(port, session).status_code == 204
    assert redis_client.xlen(STREAM_KEY) == 2


def test_the_access_log_masks_phone_numbers_and_secrets(servers: dict[str, tuple[int, Path]], db_session: Any) -> None:
    port, log_path = servers["api"]
    user_agent = f"probe token={METRICS_TOKEN}"
    for method, path in (
        ("GET", "/v1/opt-outs?search=%2B447700900123"),
        ("DELETE", "/v1/opt-outs/+447700900124"),
        ("GET", "/metrics?probe=%2B447700900125"),
    ):
        requests.request(method, f"http://127.0.0.1:{port}{path}", headers={"User-Agent": user_agent}, timeout=10)
    deadline = time.monotonic() + 10
    while "0125" not in log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    log = log_path.read_text()
    for number in ("%2B447700900123", "+447700900124", "%2B447700900125"):
        assert mask_phone_numbers(number) in log  # as the application's own lines mask them
    for secret in ("447700900123", "447700900124", "447700900125", METRICS_TOKEN):
        assert secret not in log
