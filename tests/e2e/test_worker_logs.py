"""A real worker's log lines for a chunk are JSON carrying the task id and the broadcast id, numbers masked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from shared.broadcasts.intake import BroadcastRequest, create_broadcast, enqueue_broadcast
from shared.platform.api_keys import create_api_key
from shared.platform.settings import Settings
from shared.platform.task_queue import create_celery_app
from tests.conftest import WorkerProcesses, wait_until

pytestmark = pytest.mark.e2e


def test_worker_log_lines_for_a_chunk_carry_task_and_broadcast_ids(
    settings: Settings,
    db_session: Session,
    redis_client: object,
    simulator: object,
    workers: WorkerProcesses,
    artifacts_directory: Path,
) -> None:
    log_path = artifacts_directory / "worker-logs.log"
    log_path.unlink(missing_ok=True)
    api_key, _ = create_api_key(db_session, "logs")
    recipients = [f"+1555{index:07d}" for index in range(5)]
    result = create_broadcast(
        db_session,
        api_key_id=api_key.id,
        request=BroadcastRequest("Log test", recipients, "reject", None),
        chunk_size=settings.send_chunk_size,
    )
    celery_app = create_celery_app(settings, name="test-producer")
    enqueue_broadcast(db_session, celery_app, result.broadcast)
    broadcast_id = str(result.broadcast.id)
    workers.start_worker("worker-logs", concurrency=1)

    def chunk_lines() -> list[dict[str, object]]:
        if not log_path.exists():
            return []
        parsed = []
        for line in log_path.read_text().splitlines():
            if line.startswith("{"):
                parsed.append(json.loads(line))
        return [line for line in parsed if "chunk 0" in str(line.get("message"))]

    lines = wait_until(chunk_lines, 60, message="the worker to log the chunk")
    workers.stop_all()
    line = lines[0]
    assert line["broadcast_id"] == broadcast_id
    assert line["task_id"] and line["task_name"] == "sms.send_chunk"
    assert line["service"] == "worker"
    text = log_path.read_text()
    assert not any(number in text for number in recipients)
    assert settings.twilio_auth_token not in text
