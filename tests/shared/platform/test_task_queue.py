"""The intake writes `sms.send_chunk` messages by hand (1,000 per Redis round trip); the API and the worker refuse to
start when those no longer match what Celery's own `send_task` publishes."""

from __future__ import annotations

import pytest

from shared.platform.settings import load_settings
from shared.platform.task_queue import TaskMessageFormatError, check_chunk_message_format, create_celery_app

SETTINGS = load_settings({"REDIS_URL": "redis://127.0.0.1:1/0"}, dotenv_path=None)


def test_the_hand_built_chunk_message_matches_send_task_with_the_installed_celery() -> None:
    check_chunk_message_format(create_celery_app(SETTINGS))  # raises on any difference


def test_a_difference_in_what_send_task_publishes_stops_the_start_naming_the_field() -> None:
    # A Celery setting that changes send_task's message but not the hand-built copy stands in for an upgrade that
    # changes the format.
    app = create_celery_app(SETTINGS)
    app.conf.task_default_delivery_mode = "transient"

    with pytest.raises(TaskMessageFormatError, match=r"properties\.delivery_mode: send_task has 1, hand-built 2"):
        check_chunk_message_format(app)
