"""Engine set-up, transactions and migrations for SQLite (embedded) and PostgreSQL."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from fiduciary.storage.driver import dbapi_error

MIGRATIONS = Path(__file__).parent / "migrations"
# Alembic keeps its context in module globals: one migration at a time per process.
_MIGRATION_LOCK = threading.Lock()


class Database:
    """One engine; ``read()`` and ``write()`` hand out a connection inside a transaction."""

    def __init__(self, url: str, **engine_args: Any) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            engine_args.setdefault("connect_args", {"check_same_thread": False, "timeout": 30})
        else:
            engine_args.setdefault("pool_size", 10)
            engine_args.setdefault("max_overflow", 20)
            engine_args.setdefault("pool_pre_ping", True)
        self.engine: Engine = sa.create_engine(url, **engine_args)
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        if self.is_sqlite:
            _configure_sqlite(self.engine)
            # Fold the WAL into the database from a background thread, not inside whichever
            # request's commit crosses SQLite's threshold: that commit used to take ms.
            self._checkpointer = threading.Thread(target=self._checkpoint_forever,
                                                  name="sqlite-checkpoint", daemon=True)
            self._checkpointer.start()

    def _checkpoint_forever(self, interval: float = 1.0) -> None:
        while not self._stop.wait(interval):
            try:
                self.checkpoint()
            except Exception:  # keep folding the WAL whatever one round met
                logging.getLogger("fiduciary.storage").exception("WAL checkpoint failed")

    def checkpoint(self) -> None:
        """Copy committed WAL pages into the database file (SQLite; readers are not blocked)."""
        if not self.is_sqlite:
            return
        try:
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
        except sa.exc.DBAPIError:
            pass  # busy or closing: the next round catches up

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        # SQLite: take the write lock up front, so concurrent writers queue instead of failing.
        with self.engine.connect().execution_options(fiduciary_write=True) as conn, conn.begin():
            yield conn

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision."""
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with _MIGRATION_LOCK, self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def ping(self) -> None:
        with self.read() as conn:
            conn.execute(sa.text("SELECT 1"))

    def dispose(self) -> None:
        if self._checkpointer is not None:
            self._stop.set()
            self._checkpointer.join()
            self._checkpointer = None
            self.checkpoint()
        self.engine.dispose()


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (SQLAlchemy recipe).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA wal_autocheckpoint=0")  # the checkpoint thread does it
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        sql = ("BEGIN IMMEDIATE" if conn.get_execution_options().get("fiduciary_write")
               else "BEGIN")
        # On the driver: through SQLAlchemy's execution this cost more than a read after it.
        try:
            conn.connection.driver_connection.execute(sql)  # type: ignore[union-attr]
        except sqlite3.Error as exc:  # raised as SQLAlchemy would (a locked database)
            raise dbapi_error(sql, exc, conn.dialect) from exc
