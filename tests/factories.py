"""Plain functions that insert rows directly, for tests of the worker side (no API involved).

A broadcast's computed columns (encoding, segments, recipient counts, chunk count, cost) come from the same pure
functions intake uses (shared.broadcasts.content), so a factory broadcast is the one intake would store.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from shared.broadcasts.content import Pricing, check_template_recipients, prepare_recipients, report_content
from shared.platform.models import ApiKey, Broadcast, BroadcastStatus, Message, MessageState
from shared.platform.settings import Settings

DEFAULT_BODY = "Hello from the worker tests"
# What intake prices a broadcast at when no price table is configured.
DEFAULT_PRICING = Pricing(Decimal(str(Settings.price_per_segment)))


def create_api_key(session: Session, name: str = "tests") -> ApiKey:
    api_key = ApiKey(
        name=name,
        prefix=secrets.token_hex(6),
        secret_hash=hashlib.sha256(secrets.token_bytes(16)).hexdigest(),
        signing_secret=secrets.token_hex(32),
    )
    session.add(api_key)
    session.commit()
    return api_key


def numbers(count: int, prefix: str = "+1555") -> list[str]:
    """`count` distinct North American numbers (ten digits after +1) starting with `prefix`."""
    width = len("+12025550100") - len(prefix)
    assert count <= 10**width, f"{prefix} leaves room for {10**width} numbers"
    return [f"{prefix}{index:0{width}d}" for index in range(count)]


def create_broadcast(
    session: Session,
    recipients: Sequence[str],
    *,
    body: str = DEFAULT_BODY,
    chunk_size: int = 100,
    api_key: ApiKey | None = None,
    enqueued: bool = True,
    created_ago: timedelta = timedelta(0),
    priority: str = "normal",
    deadline: datetime | None = None,
    chunks_released: int | None = None,
) -> Broadcast:
    """A `queued` broadcast of `body` to `recipients` as intake would store it, every message `pending`, chunk k
    holding recipients k*chunk_size onwards. Intake's rules that read the database (opt-outs, quiet hours) are not
    applied. A list intake would refuse raises: ValueError for an invalid number, TemplateRecipientsError for a
    template value missing."""
    api_key = api_key or create_api_key(session)
    content = prepare_recipients(body, recipients)
    accepted = content.recipients
    if accepted.invalid_count or not accepted.numbers:
        raise ValueError(f"intake would refuse these recipients: {[i.as_dict() for i in accepted.invalid_sample]}")
    check_template_recipients(content)
    report = report_content(content, body, media_urls=None, smart_encoded=False, pricing=DEFAULT_PRICING)
    broadcast = Broadcast(
        id=uuid.uuid4(),
        api_key_id=api_key.id,
        # A template is stored as given; a plain body with `{{` / `}}` unescaped, as it is sent.
        body=body if content.is_template else content.template.literal_text,
        is_template=content.is_template,
        status=BroadcastStatus.QUEUED,
        encoding=report.encoding,
        characters=report.characters,
        segments=report.segments,
        segments_min=report.segments_min,
        segments_max=report.segments_max,
        segments_total=report.segments_total,
        estimated_cost=report.estimated_cost,
        recipients_received=len(recipients),
        recipients_accepted=len(accepted.numbers),
        recipients_duplicates=accepted.duplicates,
        recipients_invalid=0,
        invalid_sample=[],
        recipients_by_country=accepted.per_country(),
        recipients_not_valid=accepted.not_valid,
        chunk_size=chunk_size,
        chunk_count=math.ceil(len(accepted.numbers) / chunk_size),
        priority=priority,
        deadline=deadline,
    )
    # An enqueued broadcast has every chunk published, as before windows, unless told otherwise (0: none yet,
    # for shared.sending.windows to release).
    if chunks_released is None:
        chunks_released = broadcast.chunk_count if enqueued else 0
    broadcast.chunks_released = chunks_released
    variables = content.variables or [None] * len(accepted.numbers)
    session.add(broadcast)
    session.flush()
    session.add_all(
        Message(
            broadcast_id=broadcast.id,
            chunk_number=index // chunk_size,
            to_number=number,
            state=MessageState.PENDING,
            attempts=0,
            variables=values,
        )
        for index, (number, values) in enumerate(zip(accepted.numbers, variables, strict=True))
    )
    session.flush()
    timestamps: dict[str, Any] = {}
    if created_ago:
        timestamps["created_at"] = func.now() - created_ago
    if enqueued:
        timestamps["enqueued_at"] = func.now()
    if timestamps:
        session.execute(update(Broadcast).where(Broadcast.id == broadcast.id).values(**timestamps))
    if created_ago:
        session.execute(
            update(Message)
            .where(Message.broadcast_id == broadcast.id)
            .values(created_at=func.now() - created_ago, updated_at=func.now() - created_ago)
        )
    session.commit()
    session.refresh(broadcast)
    return broadcast


def set_messages(session: Session, broadcast_id: uuid.UUID, **values: Any) -> None:
    """Force every message of a broadcast into a given situation (a claim that expired, say)."""
    session.execute(update(Message).where(Message.broadcast_id == broadcast_id).values(**values))
    session.commit()


def messages_of(session: Session, broadcast_id: uuid.UUID) -> list[Message]:
    session.expire_all()
    return list(session.scalars(select(Message).where(Message.broadcast_id == broadcast_id).order_by(Message.id)))


def broadcast_of(session: Session, broadcast_id: uuid.UUID) -> Broadcast:
    session.expire_all()
    broadcast = session.get(Broadcast, broadcast_id)
    assert broadcast is not None
    return broadcast


def states_of(session: Session, broadcast_id: uuid.UUID) -> dict[str, int]:
    counts: dict[str, int] = {}
    for message in messages_of(session, broadcast_id):
        counts[message.state] = counts.get(message.state, 0) + 1
    return counts


def database_now(session: Session) -> datetime:
    return session.execute(select(func.now())).scalar_one()
