"""The Celery application for `celery -A worker.app worker` and `celery -A worker.app beat`.

Settings are read once, here; a missing one stops the process at start-up with its name. Each worker
process opens its resources (one asyncio event loop, Twilio client, Redis client, database engine) once, after
the fork, and every task of that process reuses them.
"""

from __future__ import annotations

from typing import Any

from celery import signals

from shared.platform.logging_config import configure_logging
from shared.platform.settings import Settings, SettingsError, load_settings
from shared.platform.task_queue import check_chunk_message_format, create_celery_app
from shared.sending.chunks import LEASE_SAFETY_MARGIN_SECONDS, SendingResources

WORKER_REQUIRED_SETTINGS = (
    "database_url",
    "redis_url",
    "twilio_account_sid",
    "twilio_messaging_service_sid",
    "public_base_url",
)
# Prefork processes per worker: one records a chunk while another sends; more only adds CPU contention.
DEFAULT_WORKER_CONCURRENCY = 3


def check_worker_settings(settings: Settings) -> None:
    """Fail at start-up, naming the setting, rather than at the first chunk."""
    settings.require(*WORKER_REQUIRED_SETTINGS)
    if settings.twilio_rest_credentials is None:  # an API Key, or else the Auth Token, signs the sends
        settings.require("twilio_auth_token")
    minimum_lease = settings.twilio_request_timeout_seconds + LEASE_SAFETY_MARGIN_SECONDS
    if settings.claim_lease_seconds <= minimum_lease:
        raise SettingsError(
            f"CLAIM_LEASE_SECONDS ({settings.claim_lease_seconds}) must exceed "
            f"TWILIO_REQUEST_TIMEOUT_SECONDS plus {LEASE_SAFETY_MARGIN_SECONDS:g}s, "
            "or no request could finish within its claim"
        )


settings = load_settings()
check_worker_settings(settings)
celery_app = create_celery_app(settings)
# The API writes chunk tasks by hand (shared.platform.task_queue); a worker that could not read them must not start.
check_chunk_message_format(celery_app)
celery_app.conf.worker_concurrency = DEFAULT_WORKER_CONCURRENCY

_resources: SendingResources | None = None


def sending_resources() -> SendingResources:
    """This process's resources, opened on first use (after the fork: never shared between processes)."""
    global _resources
    if _resources is None:
        _resources = SendingResources.create(settings)
    return _resources


@signals.setup_logging.connect
def _configure_logging(**_: Any) -> None:
    # JSON lines carrying the task id and broadcast id of the task in hand (bound in worker.task_base).
    configure_logging(settings, "worker")


@signals.worker_process_init.connect
def _open_process_resources(**_: Any) -> None:
    sending_resources()


@signals.worker_process_shutdown.connect
def _close_process_resources(**_: Any) -> None:
    global _resources
    if _resources is not None:
        _resources.close()
        _resources = None


from worker import status_tasks, tasks  # noqa: E402, F401  (registers the tasks on celery_app)
