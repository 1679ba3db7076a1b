"""The sweeper reconciles a template broadcast's lost claim by its rendered text, so it is never sent twice."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from celery import Celery
from sqlalchemy import func, update
from sqlalchemy.orm import Session

from shared.platform.models import Broadcast, MessageState
from shared.platform.settings import Settings
from shared.platform.task_queue import create_celery_app
from shared.sending.chunks import SendingResources
from shared.sending.sweeper import sweep
from shared.twilio.gateway import Accepted
from tests.factories import create_broadcast, messages_of, set_messages


@pytest.fixture
def resources(settings: Settings, engine: Any, redis_client: redis.Redis) -> Iterator[SendingResources]:
    resources = SendingResources.create(settings)
    yield resources
    resources.close()


def test_an_expired_claim_of_a_template_message_is_found_by_its_rendered_body(
    db_session: Session, resources: SendingResources, settings: Settings, simulator: Any
) -> None:
    broadcast = create_broadcast(db_session, ["+15557770002"], body="Hi {first_name|there}")
    db_session.execute(update(Broadcast).where(Broadcast.id == broadcast.id).values(is_template=True))
    db_session.commit()
    # The worker sent the rendered text, then died before recording it.
    sent = resources.run(resources.gateway.send("+15557770002", "Hi Ann"))
    assert isinstance(sent, Accepted)
    set_messages(
        db_session,
        broadcast.id,
        state=MessageState.SENDING,
        attempts=1,
        variables={"first_name": "Ann"},
        claimed_until=func.now() - timedelta(seconds=30),
    )
    celery_app: Celery = create_celery_app(settings)

    sweep(resources, celery_app)

    (message,) = messages_of(db_session, broadcast.id)
    assert (message.state, message.twilio_sid) == (MessageState.ACCEPTED, sent.sid)
    assert simulator.summary()["accepted"] == 1  # found, not sent again
