"""What a request handler reaches for: the process's services and this request's database session."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from celery import Celery
from flask import current_app, g
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from shared.platform.settings import Settings

EXTENSION_NAME = "bulksms"


@dataclass(frozen=True)
class ApiServices:
    """Created once per process by `create_app`: one engine, one broker client, one Redis client."""

    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    celery_app: Celery
    redis_client: redis.Redis


def services() -> ApiServices:
    found: ApiServices = current_app.extensions[EXTENSION_NAME]
    return found


def db_session() -> Session:
    """This request's session, opened on first use and closed when the request ends."""
    if "db_session" not in g:
        g.db_session = services().session_factory()
    session: Session = g.db_session
    return session


def close_db_session(_error: BaseException | None = None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()
