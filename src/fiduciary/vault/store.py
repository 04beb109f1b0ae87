"""The only SQL on subjects, records and their blind-index entries that deletes, looks a
subject up or reads records for housekeeping. Crypto-shredding depends on every copy of a
record going: a new per-record table is added to :func:`delete_records`, and nowhere else."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from fiduciary.errors import Gone, NotFound
from fiduciary.ids import is_id
from fiduciary.storage.schema import blind_index, records, subjects

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


def subject(conn: Connection, subject_id: str, *, lock: bool = False) -> Subject:
    """The subject, in the caller's transaction: NotFound (404) if unknown, Gone (410) if
    erased. ``lock`` holds its row until the transaction ends (serialises writers)."""
    row = None
    if is_id(subject_id):
        q = sa.select(subjects.c.id, subjects.c.status, subjects.c.created_at).where(
            subjects.c.id == subject_id)
        row = conn.execute(q.with_for_update() if lock else q).first()
    if row is None:
        raise NotFound(f"subject {subject_id} not found", code="subject_not_found")
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
