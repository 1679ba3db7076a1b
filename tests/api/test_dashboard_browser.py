"""The dashboard in headless Chromium against a running server, driven over the DevTools protocol.

The API runs in a werkzeug server thread on a free loopback port; Chromium submits the real sign-in form (so the
cookie and the CSRF field travel as they would for a person), reads what the page shows (`innerText`), and keeps a
screenshot of each page under `.bulksms/test-artifacts/dashboard-*.png`.

Without Chromium the tests are skipped, unless `CI` is set: then they fail, since CI installs it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy.orm import Session
from werkzeug.serving import make_server

from bulksms_tools.local_services import find_free_port
from shared.platform.models import BroadcastStatus
from shared.platform.settings import Settings
from tests.api.conftest import build_app
from tests.api.dashboard_data import SignedKey, new_key, seed_broadcast

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1280,900",
)
STEP_TIMEOUT_SECONDS = 30.0


def running_in_ci() -> bool:
    return bool(os.environ.get("CI"))


def chromium_executable() -> str:
    """Chromium's path; skip (or fail in CI) when it is not installed."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    reason = "Chromium is not installed: the dashboard's browser tests need it (apt-get install chromium)"
    if running_in_ci():
        pytest.fail(f"{reason}; CI is set, so this is an error, not a skip")
    pytest.skip(reason)


@pytest.fixture
def server_url(settings: Settings, engine: Any, redis_client: Any) -> Iterator[str]:
    """The whole API (dashboard included) served on a free loopback port from a thread."""
    for app in build_app(settings):
        port = find_free_port()
        server = make_server("127.0.0.1", port, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, name="dashboard-server", daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{port}"
        server.shutdown()
        thread.join(10)


class Browser:
    """One headless Chromium page, spoken to over the DevTools websocket."""

    def __init__(self, websocket: aiohttp.ClientWebSocketResponse, artifacts: Path) -> None:
        self.websocket = websocket
        self.artifacts = artifacts
        self.last_id = 0
        self.events: list[dict[str, Any]] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.last_id += 1
        call_id = self.last_id
        await self.websocket.send_json({"id": call_id, "method": method, "params": params})
        while True:
            message = await self.websocket.receive_json(timeout=STEP_TIMEOUT_SECONDS)
            if message.get("id") == call_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self.events.append(message)

    async def wait_for_load(self) -> None:
        deadline = time.monotonic() + STEP_TIMEOUT_SECONDS
        while not any(event.get("method") == "Page.loadEventFired" for event in self.events):
            assert time.monotonic() < deadline, "the page did not finish loading"
            self.events.append(await self.websocket.receive_json(timeout=STEP_TIMEOUT_SECONDS))
        self.events.clear()

    async def open(self, url: str) -> None:
        self.events.clear()
        await self.call("Page.navigate", url=url)
        await self.wait_for_load()

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    async def submit(self, expression: str) -> None:
        """Run `expression` (which submits a form) and wait for the page it leads to."""
        self.events.clear()
        await self.evaluate(expression)
        await self.wait_for_load()

    async def text(self) -> str:
        return str(await self.evaluate("document.body.innerText"))

    async def url(self) -> str:
        return str(await self.evaluate("location.href"))

    async def screenshot(self, name: str) -> Path:
        metrics = await self.call("Page.getLayoutMetrics")
        size = metrics["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": 1280, "height": min(max(size["height"], 900), 4000), "scale": 1}
        shot = await self.call("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)
        path = self.artifacts / f"dashboard-{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


async def _with_browser(artifacts: Path, user_data: Path, scenario: Any) -> None:
    log = (artifacts / "dashboard-chromium.log").open("wb")
    process = subprocess.Popen(
        [
            chromium_executable(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={user_data}",
            "--remote-debugging-port=0",
            "about:blank",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        port_file = user_data / "DevToolsActivePort"
        deadline = time.monotonic() + STEP_TIMEOUT_SECONDS
        while not (port_file.exists() and port_file.read_text().strip()):
            assert process.poll() is None, "Chromium exited at start-up: see dashboard-chromium.log"
            assert time.monotonic() < deadline, "Chromium did not open its DevTools port"
            await asyncio.sleep(0.1)
        devtools_port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{devtools_port}/json/list") as response:
                targets = json.loads(await response.text())
            page = next(target for target in targets if target["type"] == "page")
            async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=64 * 1024 * 1024) as websocket:
                browser = Browser(websocket, artifacts)
                await browser.call("Page.enable")
                await browser.call(
                    "Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False
                )
                await scenario(browser)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def run_in_browser(artifacts: Path, tmp_path: Path, scenario: Any) -> None:
    chromium_executable()  # skip before anything starts
    asyncio.run(_with_browser(artifacts, tmp_path / "chromium-profile", scenario))


async def sign_in(browser: Browser, server_url: str, key: str) -> None:
    await browser.open(f"{server_url}/dashboard/sign-in")
    await browser.submit(
        f"document.getElementById('api_key').value = {json.dumps(key)};"
        "document.querySelector('main form button[type=submit]').click(); true"
    )


@pytest.fixture
def key(db_session: Session) -> SignedKey:
    return new_key(db_session, "newsroom")


def test_a_person_signs_in_follows_a_broadcast_and_signs_out(
    server_url: str, key: SignedKey, db_session: Session, artifacts_directory: Path, tmp_path: Path
) -> None:
    running = seed_broadcast(db_session, key.api_key, body="Polling stations are open until 10pm today.")
    done = seed_broadcast(db_session, key.api_key, status=BroadcastStatus.COMPLETED, body="Thank you for voting!")

    async def scenario(browser: Browser) -> None:
        await browser.open(f"{server_url}/dashboard/")
        assert (await browser.url()).startswith(f"{server_url}/dashboard/sign-in"), "signed out: sent to sign-in"
        await browser.screenshot("sign-in")

        await sign_in(browser, server_url, key.plaintext)
        assert await browser.url() == f"{server_url}/dashboard/"
        listing = await browser.text()
        assert "Polling stations are open" in listing and "Thank you for voting!" in listing
        assert listing.index("Thank you for voting!") < listing.index("Polling stations")  # newest first
        assert "Delivered 40" in listing and "Failed or undelivered 24" in listing and "Not sent yet 16" in listing
        bars = await browser.evaluate(
            "[...document.querySelectorAll('.bar span')].filter(s => s.getBoundingClientRect().width > 20).length"
        )
        assert bars >= 6, "each broadcast's progress bar shows its coloured parts"
        await browser.screenshot("list")

        await browser.open(f"{server_url}/dashboard/broadcasts/{running.id}")
        page = await browser.text()
        assert "sending" in page and "62.5 %" in page  # delivery rate
        assert "21610" in page and "Recipient unsubscribed" in page and "Do not send to this number again" in page
        assert "30007" in page and "Carrier violation" in page
        assert await browser.evaluate("!!document.querySelector('meta[http-equiv=refresh]')"), "refreshes while sending"
        drawn = await browser.evaluate(
            "[...document.querySelectorAll('#activity-chart rect')].filter(r => r.getBBox().height > 0).length"
        )
        assert drawn >= 10, "the chart draws bars for sends and receipts"
        await browser.screenshot("broadcast-sending")

        await browser.open(f"{server_url}/dashboard/broadcasts/{done.id}")
        assert "completed" in await browser.text()
        assert not await browser.evaluate("!!document.querySelector('meta[http-equiv=refresh]')")
        await browser.screenshot("broadcast-completed")

        await browser.submit("document.querySelector('header form button').click(); true")
        assert (await browser.url()).startswith(f"{server_url}/dashboard/sign-in")
        assert "You are signed out." in await browser.text()
        await browser.open(f"{server_url}/dashboard/broadcasts/{done.id}")
        assert (await browser.url()).startswith(f"{server_url}/dashboard/sign-in")

    run_in_browser(artifacts_directory, tmp_path, scenario)


def test_wrong_keys_forged_posts_and_other_keys_broadcasts_are_refused(
    server_url: str, key: SignedKey, db_session: Session, artifacts_directory: Path, tmp_path: Path
) -> None:
    theirs = seed_broadcast(db_session, new_key(db_session, "other team").api_key, body="Not yours")

    async def scenario(browser: Browser) -> None:
        await sign_in(browser, server_url, key.plaintext + "-wrong")
        assert "That key is not valid" in await browser.text()
        await browser.screenshot("sign-in-error")

        await sign_in(browser, server_url, key.plaintext)
        # A form posted with the session cookie but without the token (what a forged form would do).
        await browser.submit(
            "const form = document.createElement('form'); form.method = 'post'; form.action = '/dashboard/sign-out';"
            "document.body.append(form); form.submit(); true"
        )
        refused = await browser.text()
        assert "400" in refused and "did not come from this site" in refused
        await browser.open(f"{server_url}/dashboard/")
        assert "Broadcasts" in await browser.text(), "still signed in after the refused POST"

        await browser.open(f"{server_url}/dashboard/broadcasts/{theirs.id}")
        page = await browser.text()
        assert "404" in page and "No broadcast of yours has that id" in page and "Not yours" not in page
        await browser.screenshot("not-found")

    run_in_browser(artifacts_directory, tmp_path, scenario)
