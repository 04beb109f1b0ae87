"""Storage: tables, engine, transactions and migrations."""

from fiduciary.storage.database import Database

__all__ = ["Database"]
