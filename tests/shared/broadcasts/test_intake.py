"""Intake as a service: chunk layout, race-safe idempotency, enqueueing after commit, progress counts."""

from __future__ import annotations

import base64
import json
import threading
from decimal import Decimal
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from bulksms_tools.local_services import find_free_port
from shared.broadcasts.content import ContentLimitError, TemplateRecipientsError
from shared.broadcasts.intake import (
    BroadcastRequest,
    IntakeResult,
    InvalidRecipientsError,
    create_broadcast,
    enqueue_broadcast,
    message_state_counts,
)
from shared.platform.api_keys import create_api_key
from shared.platform.db import create_session_factory
from shared.platform.models import Broadcast, Message
from shared.platform.settings import Settings
from shared.platform.task_queue import SEND_CHUNK_TASK, SEND_QUEUE, create_celery_app, enqueue_chunks
from tests.api import conftest as api_fixtures

# Intake needs PostgreSQL and Redis, not the Twilio simulator: the API tests' fixtures of the same names.
api_settings = api_fixtures.api_settings
settings = api_fixtures.settings
engine = api_fixtures.engine
redis_client = api_fixtures.redis_client

NUMBERS = [f"+4477009001{index:02d}" for index in range(10)]
MANY = [f"+1555{index:07d}" for index in range(25_000)]


def test_chunks_hold_consecutive_recipients_in_request_order(db_session: Session) -> None:
    api_key, _ = create_api_key(db_session, "tests")

    result = create_broadcast(db_session, api_key_id=api_key.id, request=BroadcastRequest("hi", NUMBERS), chunk_size=3)

    assert result.created and result.broadcast.chunk_count == 4
    rows = db_session.execute(select(Message.to_number, Message.chunk_number).order_by(Message.id)).all()
    assert [row.to_number for row in rows] == NUMBERS
    assert [row.chunk_number for row in rows] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]
    assert result.broadcast.enqueued_at is None  # intake stores; enqueueing is a separate step


def test_template_values_are_stored_exactly_whatever_characters_they_hold(db_session: Session) -> None:
    api_key, _ = create_api_key(db_session, "tests")
    values = [
        {"name": 'Ann "the\\boss"', "ward": "North\tEast\nline"},
        {"name": "Zo\u00eb \U0001f600 \u2028", "ward": "\\N"},
        {"name": "\x01\x1f", "ward": "O'Brien / {x}"},
    ]
    recipients = [{"to": number, "vars": given} for number, given in zip(NUMBERS, values, strict=False)]

    create_broadcast(
        db_session, api_key_id=api_key.id, request=BroadcastRequest("Hi {name} {ward}", recipients), chunk_size=2
    )

    stored = db_session.scalars(select(Message.variables).order_by(Message.id)).all()
    assert stored == values


@pytest.mark.parametrize(
    ("request_", "refusal"),
    [
        (BroadcastRequest("hi", [*MANY, "07700 900123"]), InvalidRecipientsError),
        (BroadcastRequest("hi", [*MANY, "+12025550142"], max_cost=Decimal("1")), ContentLimitError),
        (
            BroadcastRequest("Hi {name}", [*({"to": n, "vars": {"name": "A"}} for n in MANY), "+12025550142"]),
            TemplateRecipientsError,
        ),
    ],
    ids=["invalid number", "over max_cost", "template value missing"],
)
def test_a_refusal_found_after_the_first_messages_were_copied_stores_nothing(
    db_session: Session, request_: BroadcastRequest, refusal: type[Exception]
) -> None:
    # Messages are copied while the list is read; the last recipient decides, after 25,000 were copied.
    api_key, _ = create_api_key(db_session, "tests")

    with pytest.raises(refusal):
        create_broadcast(db_session, api_key_id=api_key.id, request=request_, chunk_size=100)

    assert db_session.scalar(select(func.count()).select_from(Message)) == 0
    assert db_session.scalar(select(func.count()).select_from(Broadcast)) == 0


def test_concurrent_requests_with_one_idempotency_key_create_one_broadcast(engine: Engine, db_session: Session) -> None:
    api_key, _ = create_api_key(db_session, "tests")
    session_factory = create_session_factory(engine)
    results: list[IntakeResult] = []
    barrier = threading.Barrier(4)

    def submit() -> None:
        with session_factory() as session:
            barrier.wait()
            results.append(
                create_broadcast(
                    session,
                    api_key_id=api_key.id,
                    request=BroadcastRequest("hi", NUMBERS * 200),
                    chunk_size=100,
                    idempotency_key="retry-me",
                )
            )

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 4
    assert sorted(result.created for result in results) == [False, False, False, True]
    assert len({result.broadcast.id for result in results}) == 1
    db_session.rollback()
    assert len(db_session.scalars(select(Broadcast)).all()) == 1
    assert len(db_session.scalars(select(Message.id)).all()) == 10


def test_a_broadcast_stays_stored_and_unenqueued_when_the_broker_is_down(
    settings: Settings, db_session: Session
) -> None:
    api_key, _ = create_api_key(db_session, "tests")
    result = create_broadcast(
        db_session, api_key_id=api_key.id, request=BroadcastRequest("hi", NUMBERS), chunk_size=100
    )
    unreachable = create_celery_app(settings.replace(redis_url=f"redis://127.0.0.1:{find_free_port()}/0"))

    assert enqueue_broadcast(db_session, unreachable, result.broadcast) is False

    db_session.expire_all()
    stored = db_session.get(Broadcast, result.broadcast.id)
    assert stored is not None and stored.enqueued_at is None  # what the sweeper looks for
    assert len(db_session.scalars(select(Message.id)).all()) == 10


def test_enqueue_sets_enqueued_at_and_queues_every_chunk(
    settings: Settings, db_session: Session, redis_client: redis.Redis
) -> None:
    api_key, _ = create_api_key(db_session, "tests")
    result = create_broadcast(db_session, api_key_id=api_key.id, request=BroadcastRequest("hi", NUMBERS), chunk_size=4)

    assert enqueue_broadcast(db_session, create_celery_app(settings), result.broadcast) is True

    assert result.broadcast.enqueued_at is not None
    assert redis_client.llen(SEND_QUEUE) == 3


def _comparable(raw: bytes) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(raw)
    message["body"] = json.loads(base64.b64decode(message["body"]))
    for name in ("id", "root_id"):
        message["headers"][name] = "<task id>"
    for name in ("correlation_id", "delivery_tag"):
        message["properties"][name] = "<id>"
    return message


def test_fast_enqueue_writes_exactly_what_celery_send_task_writes(
    settings: Settings, redis_client: redis.Redis
) -> None:
    celery_app = create_celery_app(settings)
    celery_app.send_task(SEND_CHUNK_TASK, args=["a-broadcast", 7], queue=SEND_QUEUE)
    enqueue_chunks(celery_app, "a-broadcast", [7, 8])

    ours_8, ours_7, celerys = redis_client.lrange(SEND_QUEUE, 0, -1)

    assert _comparable(ours_7) == _comparable(celerys)
    assert _comparable(ours_8)["body"][0] == ["a-broadcast", 8]
    task_ids = {json.loads(raw)["headers"]["id"] for raw in (ours_7, ours_8, celerys)}
    assert len(task_ids) == 3


def test_progress_counts_every_state_including_empty_ones(db_session: Session) -> None:
    api_key, _ = create_api_key(db_session, "tests")
    result = create_broadcast(
        db_session, api_key_id=api_key.id, request=BroadcastRequest("hi", NUMBERS), chunk_size=100
    )

    assert message_state_counts(db_session, result.broadcast.id) == {
        "pending": 10,
        "sending": 0,
        "accepted": 0,
        "failed": 0,
        "unknown": 0,
        "sent": 0,
        "delivered": 0,
        "undelivered": 0,
        "retry_scheduled": 0,
        "skipped": 0,
        "canceled": 0,
        "expired": 0,
    }
