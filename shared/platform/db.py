"""One engine per process and one session per unit of work (a request, a task), always closed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from shared.platform.settings import Settings


def sqlalchemy_url(database_url: str) -> str:
    """Accept the `postgres://` and `postgresql://` spellings users paste and pin the psycopg2 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if database_url.startswith(prefix):
            return "postgresql+psycopg2://" + database_url[len(prefix) :]
    return database_url


def create_database_engine(settings: Settings, *, pool_size: int = 5) -> Engine:
    settings.require("database_url")
    assert settings.database_url is not None
    return create_engine(
        sqlalchemy_url(settings.database_url),
        pool_size=pool_size,
        max_overflow=10,
        pool_pre_ping=True,  # a restarted PostgreSQL leaves dead pooled connections behind
        pool_recycle=1800,
        connect_args={"connect_timeout": 5, "application_name": "bulksms"},
    )


def create_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits on success, rolls back on error and is always closed."""
    session = session_factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
