"""The Alembic migrations produce exactly the schema the code declares."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from fiduciary.storage import Database
from fiduciary.storage.schema import metadata


def test_migrations_match_the_declared_tables(database_url: str) -> None:
    db = Database(database_url) if "sqlite" not in database_url else None
    if db is None:
        import pathlib

        path = pathlib.Path(database_url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        db = Database(database_url)
    db.migrate()
    db.migrate()  # idempotent
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    db.dispose()
    assert diff == []
