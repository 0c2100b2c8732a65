"""Alembic environment: mpoxflow passes its own connection (``config.attributes["connection"]``); the
``alembic`` command line works too, with ``-x url=...`` or ``$MPOXFLOW_DATABASE_URL``."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from persistence.database import DEFAULT_URL, normalise_url
from persistence.models import Base

config = context.config
target_metadata = Base.metadata


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get(
        "MPOXFLOW_DATABASE_URL", DEFAULT_URL
    )
    engine = create_engine(normalise_url(url))
    with engine.begin() as own:
        context.configure(connection=own, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run()
