"""The only SQL on subjects, records and their blind-index entries (the bulk importer's
batched inserts aside). Crypto-shredding depends on every copy of a record going: a new
per-record table is added to :func:`delete_records`, and nowhere else."""

from __future__ import annotations

import functools
import json
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from fiduciary.errors import Gone, NotFound
from fiduciary.ids import is_id, shown
from fiduciary.storage.driver import DriverQuery, bind_processor
from fiduciary.storage.schema import blind_index, records, subjects

#: A result row of any width (SQLAlchemy types rows by their columns).
AnyRow = Row[*tuple[Any, ...]]

#: Rows per statement when deleting by id: well under every driver's parameter limit.
_CHUNK = 500


class SubjectStatus(StrEnum):
    ACTIVE = "active"
    #: GDPR Art. 18: the data serves legal obligations only.
    RESTRICTED = "restricted"
    #: Erased but for records a legal hold or a statutory duty keeps.
    ERASURE_PENDING = "erasure_pending"
    #: Crypto-shredded: rows and key gone; the id answers 410.
    ERASED = "erased"


@dataclass(frozen=True)
class Subject:
    id: str
    status: str  # a SubjectStatus
    created_at: datetime


@dataclass(frozen=True)
class StoredRecord:
    """A record as housekeeping (retention, erasure, holds) sees it: never its sealed fields."""

    id: str
    subject_id: str
    collection: str
    clear: dict[str, Any]
    created_at: datetime
    updated_at: datetime


_RECORD_COLUMNS = (
    records.c.id, records.c.subject_id, records.c.collection, records.c.clear, records.c.sealed,
    records.c.created_at, records.c.updated_at, records.c.version,
    subjects.c.attributes.label("subject_attributes"), subjects.c.status.label("subject_status"),
)
_RECORD_FROM = records.join(subjects, subjects.c.id == records.c.subject_id)


@functools.lru_cache(maxsize=16)
def search_statement(fields: int) -> DriverQuery:
    """The search query for ``fields`` equality conditions, built once: building a statement
    costs several times what SQLite takes to run it (parameters: c, lim, f0/d0, f1/d1 …)."""
    query = sa.select(*_RECORD_COLUMNS).select_from(_RECORD_FROM)
    for i in range(fields):
        query = query.where(records.c.id.in_(
            sa.select(blind_index.c.record_id).where(
                blind_index.c.digest == sa.bindparam(f"d{i}"),
                blind_index.c.collection == sa.bindparam("c"),
                blind_index.c.field == sa.bindparam(f"f{i}"))))
    return DriverQuery(query.order_by(records.c.id).limit(sa.bindparam("lim")))


_BY_ID = (sa.select(*_RECORD_COLUMNS).select_from(_RECORD_FROM)
          .where(records.c.id == sa.bindparam("rid"),
                 records.c.collection == sa.bindparam("col")))
_ROW_BY_ID = DriverQuery(_BY_ID)
# The subject row, shared: an erasure waits for the write that reads it (PostgreSQL).
_ROW_BY_ID_LOCKED = DriverQuery(_BY_ID.with_for_update(read=True, of=subjects))


def record_row(conn: Connection, collection: str, record_id: str, *,
               lock: bool = False) -> AnyRow | None:
    """A record with its subject's status and attributes; ``lock`` shares the subject row
    until the transaction ends (an erasure waits for the write that read it)."""
    if not is_id(record_id):
        return None
    return (_ROW_BY_ID_LOCKED if lock else _ROW_BY_ID).first(
        conn, {"rid": record_id, "col": collection})


_CLEAR_OF = DriverQuery(sa.select(records.c.clear).where(
    records.c.subject_id == sa.bindparam("s"), records.c.collection == sa.bindparam("c")))


def clear_records_of(conn: Connection, subject_id: str, collection: str) -> list[dict[str, Any]]:
    """The clear (public and internal) fields of a subject's records in a collection: what
    relationship conditions read. Never a sealed field."""
    return [json.loads(r.clear) for r in _CLEAR_OF.all(conn, {"s": subject_id, "c": collection})]


def record_rows_of(conn: Connection, subject_id: str) -> Sequence[AnyRow]:
    """Every record of a subject (as :func:`record_row`), by collection, age and id."""
    return conn.execute(
        sa.select(*_RECORD_COLUMNS).select_from(_RECORD_FROM)
        .where(records.c.subject_id == subject_id)
        .order_by(records.c.collection, records.c.created_at, records.c.id)).all()


def collection_rows(conn: Connection, collection: str, after: str,
                    limit: int) -> Sequence[AnyRow]:
    """A page of a collection's records in id order after ``after`` (an export)."""
    return conn.execute(
        sa.select(*_RECORD_COLUMNS).select_from(_RECORD_FROM)
        .where(records.c.collection == collection, records.c.id > after)
        .order_by(records.c.id).limit(limit)).all()


def search_rows(conn: Connection, collection: str, digests: Sequence[tuple[str, bytes]],
                limit: int) -> Sequence[AnyRow]:
    """Records of ``collection`` whose blind-index digests match every (field, digest)."""
    params: dict[str, Any] = {"c": collection, "lim": limit}
    for i, (name, digest) in enumerate(digests):
        params[f"f{i}"], params[f"d{i}"] = name, digest
    return search_statement(len(digests)).all(conn, params)


@functools.lru_cache(maxsize=8)
def _many_statement(table: sa.Table, dialect: sa.Dialect) -> tuple[str, tuple[str, ...],
                                                                  tuple[Any, ...], bool]:
    """(driver SQL, column keys, bind processor per key or None, positional) of an INSERT of
    every column of ``table``, compiled once per dialect."""
    compiled = table.insert().compile(dialect=dialect)
    keys = tuple(compiled.positiontup or ()) if dialect.positional else tuple(table.c.keys())
    procs = tuple(bind_processor(table.c[k].type, dialect) for k in keys)
    return str(compiled), keys, procs, bool(dialect.positional)


def insert_many(conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    """``conn.execute(table.insert(), rows)`` handed straight to the driver's ``executemany``:
    the statement is compiled once, and each column's bind processing (timestamps) runs once
    per distinct value instead of once per row, so a bulk import spends its time on the data,
    not on building parameters. Every row must carry every column of ``table``."""
    if not rows:
        return
    sql, keys, procs, positional = _many_statement(table, conn.dialect)
    columns: list[list[Any]] = []
    for key, proc in zip(keys, procs, strict=True):
        values = list(map(operator.itemgetter(key), rows))
        if proc is not None:
            # Most processed values (a batch's one timestamp) repeat: each distinct one once.
            done = {v: proc(v) for v in set(values)}
            values = list(map(done.__getitem__, values))
        columns.append(values)
    params: list[Any] = (list(zip(*columns, strict=True)) if positional
                         else [dict(zip(keys, values, strict=True))
                               for values in zip(*columns, strict=True)])
    conn.exec_driver_sql(sql, params)


def insert_record(conn: Connection, row: dict[str, Any],
                  index: Sequence[dict[str, Any]]) -> None:
    conn.execute(records.insert(), [row])
    if index:
        conn.execute(blind_index.insert(), list(index))


def update_record(conn: Connection, record_id: str, clear: str, sealed: str,
                  updated_at: datetime, reindexed: Sequence[str],
                  index: Sequence[dict[str, Any]], version: int) -> None:
    """Store a record's new fields as its write ``version``; the index entries of
    ``reindexed`` fields are replaced by ``index``."""
    conn.execute(records.update().where(records.c.id == record_id).values(
        clear=clear, sealed=sealed, updated_at=updated_at, version=version))
    if reindexed:
        conn.execute(blind_index.delete().where(blind_index.c.record_id == record_id,
                                                blind_index.c.field.in_(list(reindexed))))
    if index:
        conn.execute(blind_index.insert(), list(index))


def insert_subject(conn: Connection, new: Subject) -> None:
    conn.execute(subjects.insert(), [{"id": new.id, "status": new.status,
                                      "created_at": new.created_at}])


def subject_for_write(conn: Connection, subject_id: str) -> AnyRow | None:
    """(status, attributes) of the subject a record is written for, its row shared until the
    transaction ends (an erasure of the subject waits for the write, or the write sees it)."""
    if not is_id(subject_id):
        return None
    return conn.execute(sa.select(subjects.c.status, subjects.c.attributes)
                        .where(subjects.c.id == subject_id).with_for_update(read=True)).first()


def subject_attributes(conn: Connection, subject_id: str) -> str:
    return str(conn.execute(sa.select(subjects.c.attributes).where(
        subjects.c.id == subject_id)).scalar_one())


def set_subject_attributes(conn: Connection, subject_id: str, attributes: str) -> None:
    conn.execute(subjects.update().where(subjects.c.id == subject_id)
                 .values(attributes=attributes))


def subject(conn: Connection, subject_id: str, *, lock: bool = False) -> Subject:
    """The subject, in the caller's transaction: NotFound (404) if unknown, Gone (410) if
    erased. ``lock`` holds its row until the transaction ends (serialises writers)."""
    row = None
    if is_id(subject_id):
        q = sa.select(subjects.c.id, subjects.c.status, subjects.c.created_at).where(
            subjects.c.id == subject_id)
        row = conn.execute(q.with_for_update() if lock else q).first()
    if row is None:
        raise NotFound(f"subject {shown(subject_id)} not found", code="subject_not_found")
    if row.status == SubjectStatus.ERASED:
        raise Gone(f"subject {subject_id} has been erased")
    return Subject(id=row.id, status=row.status, created_at=row.created_at)


def status_of(conn: Connection, subject_id: str) -> str | None:
    """The subject's status, erased included; None if unknown."""
    if not is_id(subject_id):
        return None
    return conn.execute(sa.select(subjects.c.status).where(
        subjects.c.id == subject_id)).scalar()


def set_status(conn: Connection, subject_id: str, status: SubjectStatus) -> None:
    """Change a subject's status; an erased subject keeps no attributes (vip, region …)."""
    values: dict[str, Any] = {"status": status}
    if status == SubjectStatus.ERASED:
        values["attributes"] = "{}"
    conn.execute(subjects.update().where(subjects.c.id == subject_id).values(**values))


def stored_records(conn: Connection, *subject_ids: str) -> list[StoredRecord]:
    """The records of these subjects (never their sealed fields), by collection and id."""
    return [StoredRecord(r.id, r.subject_id, r.collection, json.loads(r.clear), r.created_at,
                         r.updated_at)
            for r in conn.execute(
                sa.select(records.c.id, records.c.subject_id, records.c.collection,
                          records.c.clear, records.c.created_at, records.c.updated_at)
                .where(records.c.subject_id.in_(subject_ids))
                .order_by(records.c.collection, records.c.id))]


def record_subject(conn: Connection, record_id: str) -> str | None:
    """The owner of a record; None if there is no such record."""
    if not is_id(record_id):
        return None
    return conn.execute(sa.select(records.c.subject_id).where(
        records.c.id == record_id)).scalar()


def live_subjects(conn: Connection, after: str, limit: int) -> list[tuple[str, str]]:
    """(id, status) of subjects not erased, in id order after ``after``: one page."""
    return [(r.id, r.status) for r in conn.execute(
        sa.select(subjects.c.id, subjects.c.status)
        .where(subjects.c.id > after, subjects.c.status != SubjectStatus.ERASED)
        .order_by(subjects.c.id).limit(limit))]


def record_count(conn: Connection, subject_id: str) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(records).where(
        records.c.subject_id == subject_id)).scalar_one())


def delete_records(conn: Connection, record_ids: Sequence[str]) -> int:
    """Delete records with everything stored per record (their blind-index entries), in the
    caller's transaction. Returns how many index entries went."""
    index_entries = 0
    for i in range(0, len(record_ids), _CHUNK):
        chunk = list(record_ids[i:i + _CHUNK])
        index_entries += conn.execute(
            blind_index.delete().where(blind_index.c.record_id.in_(chunk))).rowcount
        conn.execute(records.delete().where(records.c.id.in_(chunk)))
    return index_entries


def erased_subject_ids(conn: Connection) -> list[str]:
    """Every erased subject; with :func:`delete_leftovers`, the crash sweep's view."""
    return list(conn.execute(sa.select(subjects.c.id).where(
        subjects.c.status == SubjectStatus.ERASED)).scalars())


def delete_leftovers(conn: Connection) -> None:
    """Anything still stored for erased subjects (a crash between an erasure's commit and the
    key destruction, or a write that raced it): the same deletion as :func:`delete_records`."""
    erased = sa.select(subjects.c.id).where(subjects.c.status == SubjectStatus.ERASED)
    conn.execute(blind_index.delete().where(blind_index.c.subject_id.in_(erased)))
    ids = list(conn.execute(sa.select(records.c.id).where(
        records.c.subject_id.in_(erased))).scalars())
    delete_records(conn, ids)
