"""The schema the migrations build is the schema the code expects."""

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine

from shared.platform.migrate import is_at_head
from shared.platform.models import Base


def test_migrated_database_matches_the_models(engine: Engine) -> None:
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_database_is_at_the_latest_migration(engine: Engine) -> None:
    assert is_at_head(engine)
