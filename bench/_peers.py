"""What a team would build instead of Fiduciary, and the raw floor, for the search and import
benchmarks (issue 16). Not a benchmark itself; imported as ``_peers``.

- :class:`UtilsPeer`: SQLAlchemy-Utils ``StringEncryptedType`` with ``AesGcmEngine`` on one key
  for the 14 personal-or-above person fields, plus an HMAC-SHA256 lookup column (indexed) per
  searchable encrypted field; clear columns for the rest. Inserts through SQLAlchemy Core
  ``executemany`` (the type encrypts each value); a search is one indexed SELECT on the HMAC
  column whose 14 encrypted fields the type decrypts. No per-subject keys, no policy, no audit.
- :func:`raw_floor`: the same rows and index rows as Fiduciary's plaintext layout (subjects,
  records with every value in ``clear``, one blind-index row per searchable field) written with
  the bare ``sqlite3`` module's ``executemany`` and time-ordered (UUIDv7) ids: nothing a vault
  could do is cheaper than this. :func:`pg_floor`: the same on PostgreSQL through bare psycopg,
  by ``executemany`` or by ``COPY``.
- :class:`PgcryptoPeer` (PostgreSQL only): ``pgp_sym_encrypt`` per sensitive field and
  ``hmac()`` per searchable one, computed by the server, tuned (``s2k-mode=1``: one salted
  hash per value instead of 65,536 iterations; no compression), rows sent through psycopg's
  ``executemany``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy_utils import StringEncryptedType  # type: ignore[import-untyped]
from sqlalchemy_utils.types.encrypted.encrypted_type import (  # type: ignore[import-untyped]
    AesGcmEngine,
)

from fiduciary.datamap import CollectionSpec
from fiduciary.datamap.values import index_form
from fiduciary.ids import ordered_id

#: Rows per transaction, as the importer's batches.
BATCH = 1000


def peer_engine(url: sa.URL | str) -> sa.Engine:
    """An engine of the peer's own on the same database; on SQLite with the settings a team
    would pick and Fiduciary uses (WAL, ``synchronous=NORMAL``), so only the work differs."""
    engine = sa.create_engine(url)
    if engine.dialect.name == "sqlite":
        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
    return engine


def _hmac(key: bytes, value: Any) -> bytes:
    return hmac.new(key, str(value).strip().lower().encode(), hashlib.sha256).digest()[:16]


class UtilsPeer:
    """SQLAlchemy-Utils encrypted columns + HMAC lookup columns, on its own table."""

    def __init__(self, engine: sa.Engine, spec: CollectionSpec,
                 keys: tuple[str, str] | None = None) -> None:
        """``keys``: (encryption key, HMAC key hex) of a kept table, else new ones and a new
        table."""
        self.engine = engine
        self.key, hkey = keys or (secrets.token_hex(32), secrets.token_hex(32))
        self.hkey = bytes.fromhex(hkey)
        self.encrypted = [f.name for f in spec.fields.values() if f.encrypted]
        self.clear = [f.name for f in spec.fields.values() if not f.encrypted]
        self.lookup = [f.name for f in spec.fields.values() if f.encrypted and f.searchable]
        md = sa.MetaData()
        cols: list[Any] = [sa.Column("id", sa.String(36), primary_key=True)]
        cols += [sa.Column(n, StringEncryptedType(sa.Unicode, self.key, AesGcmEngine))
                 for n in self.encrypted]
        cols += [sa.Column(n, sa.Text) for n in self.clear]
        cols += [sa.Column(f"{n}_hmac", sa.LargeBinary, index=True) for n in self.lookup]
        self.table = sa.Table("peer_persons", md, *cols)
        if keys is None:
            md.create_all(engine)
        self._insert = self.table.insert()
        self._by = {n: sa.select(*(self.table.c[c] for c in ("id", *self.encrypted,
                                                               *self.clear)))
                    .where(self.table.c[f"{n}_hmac"] == sa.bindparam("h"))
                    for n in self.lookup}

    def load(self, rows: Iterable[dict[str, Any]]) -> int:
        done = 0
        pending: list[dict[str, Any]] = []
        for values in rows:
            row: dict[str, Any] = {"id": ordered_id()}
            for n in self.encrypted:
                v = values.get(n)
                row[n] = None if v is None else str(v)
            for n in self.clear:
                v = values.get(n)
                row[n] = None if v is None else json.dumps(v)
            for n in self.lookup:
                v = values.get(n)
                row[f"{n}_hmac"] = None if v is None else _hmac(self.hkey, v)
            pending.append(row)
            if len(pending) >= BATCH:
                done += self._flush(pending)
                pending = []
        if pending:
            done += self._flush(pending)
        return done

    def _flush(self, rows: list[dict[str, Any]]) -> int:
        with self.engine.begin() as conn:
            conn.execute(self._insert, rows)
        return len(rows)

    def search(self, conn: sa.Connection, field: str, value: Any) -> list[dict[str, Any]]:
        """Every match with its 14 encrypted fields decrypted (by the column type)."""
        return [dict(r._mapping) for r in conn.execute(
            self._by[field], {"h": _hmac(self.hkey, value)})]


def _utc_text(now: datetime) -> str:
    """How SQLAlchemy's DateTime stores a naive UTC datetime on SQLite."""
    return now.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


#: Fiduciary's plaintext layout as the floors write it: (table, columns).
_FLOOR_TABLES = (
    ("subjects", ("id", "status", "created_at", "attributes")),
    ("records", ("id", "subject_id", "collection", "clear", "sealed", "created_at",
                 "updated_at", "version")),
    ("blind_index", ("record_id", "field", "collection", "subject_id", "digest")),
)


def _floor_batches(spec: CollectionSpec, rows: Sequence[dict[str, Any]], collection: str,
                   now: Callable[[], Any]) -> Iterator[list[list[tuple[Any, ...]]]]:
    """Per ``BATCH`` rows: the subjects, records and index rows of ``_FLOOR_TABLES`` (UUIDv7
    ids, every value in ``clear``, the normalised plaintext as the index digest), each batch
    stamped with ``now()``."""
    searchable = [f.name for f in spec.searchable_fields]
    attributes = spec.subject_attributes
    fields = spec.fields
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    for start in range(0, len(rows), BATCH):
        at = now()
        subs: list[tuple[Any, ...]] = []
        recs: list[tuple[Any, ...]] = []
        idx: list[tuple[Any, ...]] = []
        for values in rows[start:start + BATCH]:
            sid, rid = ordered_id(), ordered_id()
            subs.append((sid, "active", at,
                         dumps({n: values[n] for n in attributes if n in values})))
            recs.append((rid, sid, collection, dumps(values), "{}", at, at, 1))
            idx += [(rid, f, collection, sid,
                     index_form(fields[f], values[f])) for f in searchable
                    if f in values]
        yield [subs, recs, idx]


def _floor_insert(table: str, columns: Sequence[str], mark: str) -> str:
    return (f"INSERT INTO {table} ({', '.join(columns)}) "
            f"VALUES ({', '.join(mark for _ in columns)})")


def raw_floor(db_path: str, spec: CollectionSpec, rows: Sequence[dict[str, Any]],
              collection: str) -> int:
    """The plaintext rows and index rows through bare ``sqlite3.executemany``, UUIDv7 ids,
    ``BATCH`` rows per transaction, into Fiduciary's own (empty) schema."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    sql = [_floor_insert(t, c, "?") for t, c in _FLOOR_TABLES]
    try:
        for batch in _floor_batches(spec, rows, collection, lambda: _utc_text(datetime.now(UTC))):
            conn.execute("BEGIN")
            for statement, table_rows in zip(sql, batch, strict=True):
                conn.executemany(statement, table_rows)
            conn.execute("COMMIT")
    finally:
        conn.close()
    return len(rows)


def pg_floor(engine: sa.Engine, spec: CollectionSpec, rows: Sequence[dict[str, Any]],
             collection: str, copy: bool) -> int:
    """PostgreSQL: the floor's rows through bare psycopg, ``BATCH`` rows per transaction, into
    Fiduciary's own (empty) schema: ``executemany`` (which psycopg 3 sends in pipeline mode,
    as the importer's ``store.insert_many`` does), or ``COPY ... FROM STDIN`` (``copy``)."""
    raw = engine.raw_connection()
    try:
        conn = raw.driver_connection
        assert conn is not None
        sql = [_floor_insert(t, c, "%s") for t, c in _FLOOR_TABLES]
        for batch in _floor_batches(spec, rows, collection, lambda: datetime.now(UTC)):
            with conn.transaction(), conn.cursor() as cur:
                for (table, columns), statement, table_rows in zip(
                        _FLOOR_TABLES, sql, batch, strict=True):
                    if copy:
                        with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as out:
                            for row in table_rows:
                                out.write_row(row)
                    else:
                        cur.executemany(statement, table_rows)
    finally:
        raw.close()
    return len(rows)


class PgcryptoPeer:
    """pgcrypto in the server: ``pgp_sym_encrypt`` (tuned) per sensitive field, ``hmac()``
    per searchable one, through psycopg's ``executemany``."""

    OPTIONS = "cipher-algo=aes256, compress-algo=0, s2k-mode=1"

    def __init__(self, engine: sa.Engine, spec: CollectionSpec) -> None:
        self.engine = engine
        self.key = secrets.token_hex(32)
        self.encrypted = [f.name for f in spec.fields.values() if f.encrypted]
        self.clear = [f.name for f in spec.fields.values() if not f.encrypted]
        self.lookup = [f.name for f in spec.fields.values() if f.encrypted and f.searchable]
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pgcrypto")
            cols = ["id text PRIMARY KEY"] + [f"{n} bytea" for n in self.encrypted]
            cols += [f"{n} text" for n in self.clear]
            cols += [f"{n}_hmac bytea" for n in self.lookup]
            conn.exec_driver_sql(f"CREATE TABLE pg_peer_persons ({', '.join(cols)})")
            for n in self.lookup:
                conn.exec_driver_sql(f"CREATE INDEX ON pg_peer_persons ({n}_hmac)")
        names = ["id", *self.encrypted, *self.clear, *(f"{n}_hmac" for n in self.lookup)]
        exprs = ["%s"] + [f"pgp_sym_encrypt(%s, %s, '{self.OPTIONS}')" for _ in self.encrypted]
        exprs += ["%s" for _ in self.clear]
        exprs += ["hmac(lower(trim(%s)), %s, 'sha256')" for _ in self.lookup]
        self.sql = (f"INSERT INTO pg_peer_persons ({', '.join(names)}) "
                    f"VALUES ({', '.join(exprs)})")

    def load(self, rows: Iterable[dict[str, Any]]) -> int:
        done = 0
        pending: list[tuple[Any, ...]] = []

        def flush() -> None:
            raw = self.engine.raw_connection()
            try:
                with raw.cursor() as cur:
                    cur.executemany(self.sql, pending)
                raw.commit()
            finally:
                raw.close()

        for values in rows:
            params: list[Any] = [ordered_id()]
            for n in self.encrypted:
                v = values.get(n)
                params += [None if v is None else str(v), self.key]
            params += [None if values.get(n) is None else json.dumps(values[n])
                       for n in self.clear]
            for n in self.lookup:
                v = values.get(n)
                params += [None if v is None else str(v), self.key]
            pending.append(tuple(params))
            if len(pending) >= BATCH:
                flush()
                done += len(pending)
                pending = []
        if pending:
            flush()
            done += len(pending)
        return done
