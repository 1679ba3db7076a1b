"""Fixtures for worker tests that take PostgreSQL away from a running worker."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bulksms_tools.local_services import EmbeddedPostgres
from shared.platform.db import sqlalchemy_url
from shared.platform.migrate import upgrade_to_head
from shared.platform.settings import Settings


@pytest.fixture
def outage_settings(embedded_postgres: EmbeddedPostgres, settings: Settings) -> Iterator[Settings]:
    """Settings on a database of the suite's own PostgreSQL server, which this test may stop and start."""
    server_url = embedded_postgres.start()
    name = f"bulksms_outage_{os.getpid()}"
    admin = create_engine(sqlalchemy_url(server_url), isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(sqlalchemy_url(server_url)).set(database=name).render_as_string(hide_password=False)
    upgrade_to_head(url)
    yield settings.replace(database_url=url)
    embedded_postgres.start()  # running again whatever happened in the test
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
