"""Storage: SQLAlchemy models, Alembic migrations, the database and its repositories."""
