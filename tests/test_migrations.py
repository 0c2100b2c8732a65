"""The schema comes from the Alembic migrations, and the models map exactly what they make."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from persistence.models import Base


def test_the_migrations_make_exactly_the_schema_the_models_map(db):
    assert db.schema_revision() == db.head_revision()
    with db.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_the_migrations_go_down_and_up_again(db):
    config = db._alembic_config()
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    assert db.schema_revision() is None
    assert db.upgrade() is True
    assert db.upgrade() is False
    assert db.schema_revision() == db.head_revision()
