"""Fixtures for flows that need Twilio's callbacks to reach a live webhook server."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bulksms_tools.local_services import ManagedProcess, find_free_port, wait_for_port
from shared.platform.settings import Settings, settings_to_environment
from tests.conftest import REPOSITORY_ROOT


@pytest.fixture
def webhook_port() -> int:
    return find_free_port()


@pytest.fixture
def webhook_service(
    settings: Settings, webhook_port: int, artifacts_directory: Path, request: pytest.FixtureRequest
) -> Iterator[None]:
    """The standalone webhook service (gunicorn `api.webhook_wsgi:app`) with this test's settings; point
    PUBLIC_BASE_URL at `webhook_port` in the test module's `settings` so the simulator's callbacks reach it."""
    environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    environment.update(settings_to_environment(settings))
    process = ManagedProcess(
        "webhook",
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{webhook_port}", "--workers", "1",
         "--worker-class", "gthread", "--threads", "4", "api.webhook_wsgi:app"],
        environment,
        log_path=artifacts_directory / f"webhook-{request.module.__name__.rsplit('.', 1)[-1]}.log",
        working_directory=REPOSITORY_ROOT,
    ).start()  # fmt: skip
    wait_for_port(webhook_port)
    yield
    process.stop()
