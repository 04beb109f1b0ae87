"""Per-subject data keys, kept apart from the database.

Each subject's data key (DEK) is stored here wrapped by the keyring's KEK, never in the main
database. Erasing a subject destroys its row here, so a copy of the database taken before the
erasure (a backup, a replica, a stolen file) holds only ciphertext that nothing can open any
more: crypto-shredding reaches every copy of the data. The store is key material: the embedded
default is its own SQLite file beside the keyring (``keys.db``, ``secure_delete`` on, WAL
truncated after each destruction so no page keeps a destroyed key); production points
``FIDUCIARY_KEYSTORE_URL`` at a database kept with the keys, with a backup retention no longer
than the promise made about erasure.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from fiduciary.storage.driver import DriverQuery
from fiduciary.storage.schema import UTCDateTime

log = logging.getLogger("fiduciary.keystore")

_metadata = sa.MetaData()

subject_deks = sa.Table(
    "subject_deks",
    _metadata,
    sa.Column("subject_id", sa.String(36), primary_key=True),
    sa.Column("dek_version", sa.Integer, nullable=False),
    sa.Column("kek_version", sa.Integer, nullable=False, index=True),
    sa.Column("wrapped_dek", sa.LargeBinary, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

#: Subjects whose key was destroyed: when and why, so a missing key is told apart from a fault.
destroyed_keys = sa.Table(
    "destroyed_keys",
    _metadata,
    sa.Column("subject_id", sa.String(36), primary_key=True),
    sa.Column("destroyed_at", UTCDateTime(), nullable=False),
    sa.Column("reason", sa.String(64), nullable=False),
)


_ONE = DriverQuery(sa.select(
    subject_deks.c.subject_id, subject_deks.c.dek_version, subject_deks.c.kek_version,
    subject_deks.c.wrapped_dek).where(subject_deks.c.subject_id == sa.bindparam("sid")))


@dataclass(frozen=True)
class StoredKey:
    subject_id: str
    dek_version: int
    kek_version: int
    wrapped_dek: bytes


def _stored(r: Any) -> StoredKey:
    return StoredKey(r.subject_id, r.dek_version, r.kek_version, r.wrapped_dek)


class SubjectKeyStore:
    """Wrapped subject keys: put, get in batches, re-wrap on rotation, destroy on erasure."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._sqlite = url.startswith("sqlite")
        args: dict[str, Any] = ({"connect_args": {"check_same_thread": False, "timeout": 30}}
                                if self._sqlite else {"pool_pre_ping": True})
        self.engine: Engine = sa.create_engine(url, **args)
        if self._sqlite:
            _configure_sqlite(self.engine)
        _metadata.create_all(self.engine)

    def put(self, rows: list[dict[str, Any]]) -> None:
        """Store new keys (rows as made by ``SubjectKeys.new_key_row``). Called before the
        subject's rows are written, so a stored subject always has its key."""
        if rows:
            with self.engine.begin() as conn:
                conn.execute(subject_deks.insert(), rows)

    def get(self, subject_ids: Iterable[str]) -> dict[str, StoredKey]:
        ids = list(set(subject_ids))
        out: dict[str, StoredKey] = {}
        if len(ids) == 1:
            # The hot path (one subject per read): an equality lookup costs a sixth of an IN,
            # and on the driver's cursor a quarter of SQLAlchemy's execution.
            r = _ONE.first_pooled(self.engine, {"sid": ids[0]})
            if r is not None:
                out[r.subject_id] = _stored(r)
            return out
        with self.engine.connect() as conn:
            for i in range(0, len(ids), 500):
                for r in conn.execute(sa.select(subject_deks).where(
                        subject_deks.c.subject_id.in_(ids[i:i + 500]))):
                    out[r.subject_id] = _stored(r)
        return out

    def destroyed_at(self, subject_id: str) -> datetime | None:
        with self.engine.connect() as conn:
            at: datetime | None = conn.execute(sa.select(destroyed_keys.c.destroyed_at).where(
                destroyed_keys.c.subject_id == subject_id)).scalar()
        return at

    def destroy(self, subject_ids: Iterable[str], at: datetime, reason: str) -> int:
        """Destroy keys for good. Returns how many existed."""
        ids = sorted(set(subject_ids))
        if not ids:
            return 0
        with self.engine.begin() as conn:
            gone = conn.execute(subject_deks.delete().where(
                subject_deks.c.subject_id.in_(ids))).rowcount
            known = set(conn.execute(sa.select(destroyed_keys.c.subject_id).where(
                destroyed_keys.c.subject_id.in_(ids))).scalars())
            fresh = [{"subject_id": s, "destroyed_at": at, "reason": reason[:64]}
                     for s in ids if s not in known]
            if fresh:
                conn.execute(destroyed_keys.insert(), fresh)
        if self._sqlite:
            # secure_delete zeroed the freed cells; the WAL still holds older page images
            # until it is checkpointed and truncated.
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                busy = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").first()
            if busy and busy[0]:
                log.warning("key store WAL checkpoint blocked by a reader; destroyed keys "
                            "leave the WAL at the next checkpoint")
        return int(gone)

    def below(self, kek_version: int, limit: int) -> list[StoredKey]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(subject_deks)
                                .where(subject_deks.c.kek_version < kek_version)
                                .order_by(subject_deks.c.subject_id).limit(limit))
            return [_stored(r) for r in rows]

    def rewrap(self, updates: list[tuple[StoredKey, int, bytes]]) -> None:
        """Replace wraps; a key destroyed meanwhile stays destroyed (the update finds nothing)."""
        with self.engine.begin() as conn:
            for old, version, wrapped in updates:
                conn.execute(subject_deks.update().where(
                    subject_deks.c.subject_id == old.subject_id,
                    subject_deks.c.kek_version == old.kek_version,
                ).values(kek_version=version, wrapped_dek=wrapped))

    def counts_by_version(self) -> dict[int, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(subject_deks.c.kek_version, sa.func.count())
                                .group_by(subject_deks.c.kek_version)).all()
        return {int(v): int(n) for v, n in rows}

    def dispose(self) -> None:
        self.engine.dispose()


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA secure_delete=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()
