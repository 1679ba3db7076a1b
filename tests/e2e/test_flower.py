"""`bulksms up --flower`: Flower on the stack's broker, behind basic auth, watched while a slow broadcast runs.

What Flower shows must be true: the workers that run, the chunk tasks they received, started and finished so far
(checked against PostgreSQL: a chunk Flower calls succeeded has nothing left to send), and the `sms.send` queue's
length (checked against Redis). The intake writes chunk tasks straight into Redis without task-sent events, so
Flower knows a chunk task from the moment a worker receives it; until then it is only a count on the Broker page.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from sqlalchemy import create_engine, text

from bulksms_tools.local_services import find_free_port
from bulksms_tools.stack import LocalStack, StackOptions
from shared.platform.api_keys import create_api_key
from shared.platform.db import create_session_factory, sqlalchemy_url
from shared.platform.settings import load_settings
from tests.conftest import wait_until

pytestmark = pytest.mark.e2e

RECIPIENTS = 1000  # 10 chunks; at 10 requests in flight and 400 ms per answer, about 40 s of sending
CHUNK_ARGUMENTS = re.compile(r"'([0-9a-f-]{36})', (\d+)")


@pytest.fixture
def stack_with_flower(database_url: str, redis_url: str, tmp_path: Path) -> Iterator[tuple[LocalStack, list[str]]]:
    settings = load_settings(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "PORT": str(find_free_port()),
            "BULKSMS_DATA_DIR": str(tmp_path / "data"),
            "TWILIO_MAX_CONCURRENCY": "10",
            "LOG_FORMAT": "json",
        },
        dotenv_path=None,
    )
    redis.Redis.from_url(redis_url).flushdb()
    printed: list[str] = []
    options = StackOptions(
        api_workers=1, worker_concurrency=2, simulator_latency_ms=400, flower=True, flower_port=find_free_port()
    )
    stack = LocalStack(settings, options, say=printed.append)
    try:
        stack.start()
        yield stack, printed
    finally:
        stack.stop()


def flower_get(stack: LocalStack, path: str, authenticated: bool = True) -> requests.Response:
    assert stack.flower_url and stack.flower_credentials
    credentials = stack.flower_credentials
    auth = (credentials.user, credentials.password) if authenticated else None
    return requests.get(f"{stack.flower_url}{path}", auth=auth, timeout=30)


def chunk_tasks(stack: LocalStack) -> dict[str, dict[str, Any]]:
    response = flower_get(stack, "/api/tasks?taskname=sms.send_chunk")
    response.raise_for_status()
    return dict(response.json())


def unsent_by_chunk(database_url: str, broadcast_id: str) -> dict[int, int]:
    engine = create_engine(sqlalchemy_url(database_url))
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT chunk_number, count(*) FILTER (WHERE state IN ('pending', 'sending')) AS unsent "
                    "FROM messages WHERE broadcast_id = :id GROUP BY chunk_number"
                ),
                {"id": broadcast_id},
            )
            return {row.chunk_number: row.unsent for row in rows}
    finally:
        engine.dispose()


def test_flower_shows_the_workers_tasks_and_queue_of_a_running_broadcast_truthfully(
    stack_with_flower: tuple[LocalStack, list[str]], database_url: str, redis_url: str
) -> None:
    stack, printed = stack_with_flower
    assert any(line.startswith(f"Flower: {stack.flower_url}") for line in printed), printed
    assert ("Flower", f"{stack.flower_url}  (user bulksms, password in {stack.data_dir}/flower-credentials.json)") in (
        stack.describe()
    )
    assert flower_get(stack, "/api/workers", authenticated=False).status_code == 401
    assert flower_get(stack, "/", authenticated=False).status_code == 401

    engine = create_engine(sqlalchemy_url(database_url))
    with create_session_factory(engine)() as session:
        _, key = create_api_key(session, "flower")
        session.commit()
    engine.dispose()
    numbers = [f"+1555{index:07d}" for index in range(RECIPIENTS)]
    response = requests.post(
        f"{stack.api_url}/v1/broadcasts",
        json={"message": "watched by Flower", "recipients": numbers},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert response.status_code == 202, response.text
    broadcast_id = response.json()["id"]
    chunks = response.json()["chunks"]
    broker = redis.Redis.from_url(redis_url)

    # While it runs: some chunks finished, some not, as Flower tells it.
    def mid_broadcast() -> dict[str, dict[str, Any]] | None:
        tasks = chunk_tasks(stack)
        states = [task["state"] for task in tasks.values()]
        return tasks if "SUCCESS" in states and len([s for s in states if s == "SUCCESS"]) < chunks else None

    tasks = wait_until(mid_broadcast, 120, interval=0.5, message="Flower to report finished and unfinished chunks")
    unsent = unsent_by_chunk(database_url, broadcast_id)
    for task in tasks.values():
        found = CHUNK_ARGUMENTS.search(str(task["args"]))
        assert found and found.group(1) == broadcast_id, task
        # No task-sent events: every task Flower lists was reported by a worker, none is merely queued.
        assert task["state"] in ("RECEIVED", "STARTED", "SUCCESS", "RETRY"), task
        if task["state"] == "SUCCESS":
            assert unsent[int(found.group(2))] == 0, f"Flower says chunk {found.group(2)} finished: {task}"
    assert len(tasks) <= chunks

    workers = flower_get(stack, "/api/workers?refresh=1").json()
    assert any(name.startswith("bulksms-") for name in workers), workers
    assert any(name.startswith("bulksms-status-") for name in workers), workers

    waiting_before = broker.llen("sms.send")
    lengths = flower_get(stack, "/api/queues/length").json()["active_queues"]
    waiting_after = broker.llen("sms.send")
    send_queue = next(queue for queue in lengths if queue["name"] == "sms.send")
    assert waiting_after <= send_queue["messages"] <= waiting_before
    broker_page = flower_get(stack, "/broker")
    assert broker_page.status_code == 200 and "sms.send" in broker_page.text

    # At the end every chunk shows as succeeded, once, and the queue is empty.
    def every_chunk_succeeded() -> bool:
        done = {
            int(match.group(2))
            for task in chunk_tasks(stack).values()
            if task["state"] == "SUCCESS" and (match := CHUNK_ARGUMENTS.search(str(task["args"])))
        }
        return done == set(range(chunks))

    wait_until(every_chunk_succeeded, 240, interval=1.0, message="Flower to show every chunk succeeded")
    assert sum(unsent_by_chunk(database_url, broadcast_id).values()) == 0
    final_lengths = flower_get(stack, "/api/queues/length").json()["active_queues"]
    assert next(queue["messages"] for queue in final_lengths if queue["name"] == "sms.send") == 0
    assert uuid.UUID(broadcast_id)
