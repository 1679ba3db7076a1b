"""Idempotency keys are honoured for 24 hours, and two requests racing with one key store one broadcast."""

from __future__ import annotations

import threading
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from shared.platform.models import Broadcast, Message
from tests.api.conftest import phone_numbers, post_broadcast


def test_a_key_older_than_24_hours_starts_a_new_broadcast(
    client: FlaskClient, auth: dict[str, str], db_session: Session
) -> None:
    request_body = {"message": "weekly news", "recipients": phone_numbers(3)}
    first = post_broadcast(client, auth, request_body, **{"Idempotency-Key": "news-list.csv"})
    assert first.status_code == 202
    # A retry within the day: the same broadcast.
    assert post_broadcast(client, auth, request_body, **{"Idempotency-Key": "news-list.csv"}).status_code == 200
    db_session.execute(
        text("UPDATE broadcasts SET created_at = now() - interval '24 hours 1 minute' WHERE id = :id"),
        {"id": first.get_json()["id"]},
    )
    db_session.commit()
    next_week = post_broadcast(client, auth, request_body, **{"Idempotency-Key": "news-list.csv"})
    assert next_week.status_code == 202
    assert next_week.get_json()["id"] != first.get_json()["id"]
    # ... and that new broadcast is the one the key now names.
    again = post_broadcast(client, auth, request_body, **{"Idempotency-Key": "news-list.csv"})
    assert (again.status_code, again.get_json()["id"]) == (200, next_week.get_json()["id"])
    assert db_session.scalar(select(func.count()).select_from(Broadcast)) == 2


def test_simultaneous_requests_with_one_key_store_one_broadcast(
    app: Flask, auth: dict[str, str], db_session: Session
) -> None:
    """Five requests at once (each its own client, session and connection): one broadcast, one set of messages;
    every answer names it."""
    request_body = {"message": "hi", "recipients": phone_numbers(20_000)}
    start = threading.Barrier(5)
    answers: list[Any] = []

    def post() -> None:
        client = app.test_client()
        start.wait()
        answers.append(post_broadcast(client, auth, request_body, **{"Idempotency-Key": "race"}))

    threads = [threading.Thread(target=post) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answer.status_code for answer in answers) == [200, 200, 200, 200, 202]
    assert len({answer.get_json()["id"] for answer in answers}) == 1
    assert db_session.scalar(select(func.count()).select_from(Broadcast)) == 1
    assert db_session.scalar(select(func.count()).select_from(Message)) == 20_000
